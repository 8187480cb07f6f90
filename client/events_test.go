package client

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestEventsRequest(t *testing.T) {
	f := newFakeAPI(t, answerJSON(200, `{"events": [
		{"seq": 7, "time": "2030-01-02T03:04:05.5Z", "kind": "connect", "tenant": "t", "session_id": "s",
		 "decision": "deny", "reason": "host is not allowed", "host": "a.test", "port": 443, "future_field": 1}]}`))
	c := mustNew(t, f.URL, "k")
	since := time.Date(2030, 1, 2, 4, 4, 5, 0, time.FixedZone("", 3600))
	list, err := c.Events(context.Background(), EventsFilter{
		VMID: "v 1", SessionID: "s", Decision: "deny", Kind: EventConnect, Since: since, Limit: 5,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Seq != 7 || list[0].Host != "a.test" || list[0].Port != 443 || !list[0].Time.Equal(time.Date(2030, 1, 2, 3, 4, 5, 5e8, time.UTC)) {
		t.Errorf("events %+v", list)
	}
	r := f.last(t)
	q, _ := url.ParseQuery(r.query)
	want := url.Values{"vm_id": {"v 1"}, "session_id": {"s"}, "decision": {"deny"}, "kind": {"connect"},
		"since": {"2030-01-02T03:04:05Z"}, "limit": {"5"}}
	if r.method != "GET" || r.path != "/v1/egress/events" || q.Encode() != want.Encode() {
		t.Errorf("sent %s %s?%s, want ?%s", r.method, r.path, r.query, want.Encode())
	}

	for _, tc := range []struct {
		f    EventsFilter
		want string
	}{
		{EventsFilter{}, ""},
		{EventsFilter{AfterSeq: 42}, "since=42"},
		{EventsFilter{Limit: -1}, "limit=0"},
	} {
		if _, err := c.Events(context.Background(), tc.f); err != nil {
			t.Fatal(err)
		}
		if got := f.last(t).query; got != tc.want {
			t.Errorf("%+v sent %q, want %q", tc.f, got, tc.want)
		}
	}

	n := f.count()
	if _, err := c.Events(context.Background(), EventsFilter{Since: since, AfterSeq: 1}); err == nil {
		t.Error("Since and AfterSeq together were accepted")
	}
	if f.count() != n {
		t.Error("a bad filter was sent")
	}
}

// sseServer answers each connection of a stream with the next script; a script is the text
// of the stream, and the connection ends after it. Requests past the scripts get a 503.
type sseServer struct {
	*fakeAPI
	scriptMu sync.Mutex
	scripts  []string
}

func newSSEServer(t *testing.T, scripts ...string) *sseServer {
	s := &sseServer{scripts: scripts}
	s.fakeAPI = newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		s.scriptMu.Lock()
		if len(s.scripts) == 0 {
			s.scriptMu.Unlock()
			answerJSON(503, `{"error": {"code": "unavailable", "message": "shutting down"}}`)(w, r)
			return
		}
		script := s.scripts[0]
		s.scripts = s.scripts[1:]
		s.scriptMu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		if hang, ok := strings.CutSuffix(script, "HANG"); ok {
			fmt.Fprint(w, hang)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		fmt.Fprint(w, script)
	})
	return s
}

func event(seq int, host string) string {
	return fmt.Sprintf("id: %d\nevent: decision\ndata: {\"seq\": %d, \"host\": %q}\n\n", seq, seq, host)
}

// fastReconnects makes FollowEvents retry at once, for the length of a test.
func fastReconnects(t *testing.T) {
	savedMin, savedMax := followBackoffMin, followBackoffMax
	followBackoffMin, followBackoffMax = time.Millisecond, time.Millisecond
	t.Cleanup(func() { followBackoffMin, followBackoffMax = savedMin, savedMax })
}

// reconnects records what OnReconnect reports.
type reconnects struct {
	mu   sync.Mutex
	seen []Reconnect
}

func (r *reconnects) option() FollowOption {
	return OnReconnect(func(rc Reconnect) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.seen = append(r.seen, rc)
	})
}

func (r *reconnects) all() []Reconnect {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Reconnect(nil), r.seen...)
}

func TestFollowEventsResumesAfterTheLastEvent(t *testing.T) {
	fastReconnects(t)
	s := newSSEServer(t,
		": hello\n\n"+event(1, "a.test")+
			"event: other\ndata: {}\n\n"+ // a kind of event this SDK does not know: skipped
			"id: 2\nevent: decision\ndata: {\"seq\": 2,\ndata:  \"host\": \"b.test\"}\n\n", // data over two lines
		event(3, "c.test")+event(4, "d.test"),
	)
	c := mustNew(t, s.URL, "k")
	var got []string
	stop := errors.New("enough")
	var rec reconnects
	err := c.FollowEvents(context.Background(), EventsFilter{SessionID: "s", AfterSeq: 0, Limit: 10}, func(e Event) error {
		got = append(got, fmt.Sprintf("%d %s", e.Seq, e.Host))
		if e.Seq == 4 {
			return stop
		}
		return nil
	}, rec.option())
	if err != stop {
		t.Fatalf("FollowEvents = %v, want fn's error", err)
	}
	if want := []string{"1 a.test", "2 b.test", "3 c.test", "4 d.test"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("got %v, want %v", got, want)
	}
	s.fakeAPI.mu.Lock()
	first, second := s.reqs[0], s.reqs[1]
	s.fakeAPI.mu.Unlock()
	if first.query != "follow=true&limit=10&session_id=s" || first.header.Get("Accept") != "text/event-stream" || first.header.Get("Last-Event-ID") != "" {
		t.Errorf("first request: %q %v", first.query, first.header)
	}
	// The reconnect resumes after the last event, without the first request's limit.
	if second.query != "follow=true&session_id=s" || second.header.Get("Last-Event-ID") != "2" || second.header.Get("Authorization") != "Bearer k" {
		t.Errorf("reconnect: %q %v", second.query, second.header)
	}
	// It was announced, and so was its success: egressd ended the first stream (no error).
	want := []Reconnect{{Attempt: 1, Wait: time.Millisecond, LastEventID: "2"}, {Resumed: true, Attempt: 1, LastEventID: "2"}}
	if got := rec.all(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("OnReconnect saw %+v, want %+v", got, want)
	}
}

func TestFollowEventsGivesUp(t *testing.T) {
	fastReconnects(t)
	s := newSSEServer(t, event(1, "a.test")) // then 503s
	c := mustNew(t, s.URL, "k")
	var rec reconnects
	err := c.FollowEvents(context.Background(), EventsFilter{}, func(Event) error { return nil }, GiveUpAfter(50*time.Millisecond), rec.option())
	if !strings.Contains(fmt.Sprint(err), "reconnecting failed") || ErrorCode(err) != CodeUnavailable {
		t.Errorf("FollowEvents = %v, want a reconnect failure that wraps the 503", err)
	}
	seen := rec.all()
	if s.count() < 2 || len(seen) != s.count()-1 {
		t.Fatalf("%d requests, %d attempts announced", s.count(), len(seen))
	}
	for i, r := range seen {
		if r.Resumed || r.Attempt != i+1 || (i > 0) != (r.Err != nil) {
			t.Errorf("attempt %d: %+v (the first follows a clean end, the others a 503)", i+1, r)
		}
	}
}

func TestFollowEventsDoesNotLoopForever(t *testing.T) {
	fastReconnects(t)
	// Streams that end at once without an event do not count as healthy: the follow gives up
	// although every connection succeeds.
	empty := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, ": nothing to say\n\n")
	})
	done := make(chan error, 1)
	go func() {
		done <- mustNew(t, empty.URL, "k").FollowEvents(context.Background(), EventsFilter{}, func(Event) error { return nil }, GiveUpAfter(50*time.Millisecond))
	}()
	select {
	case err := <-done:
		if !strings.Contains(fmt.Sprint(err), "reconnecting failed") {
			t.Errorf("FollowEvents = %v after %d requests", err, empty.count())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("FollowEvents kept reconnecting to streams that end at once")
	}
	// An event that cannot be decoded ends the follow: a reconnect would get it again.
	bad := newSSEServer(t, "id: 1\nevent: decision\ndata: {not json\n\n", event(2, "b.test"))
	err := mustNew(t, bad.URL, "k").FollowEvents(context.Background(), EventsFilter{}, func(Event) error { return nil })
	if !strings.Contains(fmt.Sprint(err), "decoding event 1") || bad.count() != 1 {
		t.Errorf("FollowEvents = %v after %d requests", err, bad.count())
	}
}

func TestFollowEventsAPIErrorIsReturnedAtOnce(t *testing.T) {
	f := newFakeAPI(t, answerJSON(400, `{"error": {"code": "bad_request", "message": "kind must be...", "field": "kind"}}`))
	c := mustNew(t, f.URL, "k")
	err := c.FollowEvents(context.Background(), EventsFilter{Kind: "x"}, func(Event) error { return nil })
	if e, ok := asError(err); !ok || e.Field != "kind" || f.count() != 1 {
		t.Errorf("FollowEvents = %v after %d requests", err, f.count())
	}
	// Not an event stream at all (a proxy's page, say).
	g := newFakeAPI(t, answerJSON(200, `{"events": []}`))
	err = mustNew(t, g.URL, "k").FollowEvents(context.Background(), EventsFilter{}, func(Event) error { return nil })
	if !strings.Contains(fmt.Sprint(err), "not an event stream") {
		t.Errorf("JSON answer: %v", err)
	}
}

func TestFollowEventsStopsWithTheContext(t *testing.T) {
	s := newSSEServer(t, event(1, "a.test")+"HANG")
	c := mustNew(t, s.URL, "k")
	ctx, cancel := context.WithCancel(context.Background())
	err := c.FollowEvents(ctx, EventsFilter{}, func(Event) error { cancel(); return nil })
	if err != context.Canceled {
		t.Errorf("FollowEvents = %v, want context.Canceled", err)
	}
}

func TestFollowEventsReconnectsASilentStream(t *testing.T) {
	fastReconnects(t)
	saved := followIdle
	followIdle = 100 * time.Millisecond
	t.Cleanup(func() { followIdle = saved })
	s := newSSEServer(t, event(1, "a.test")+"HANG", event(2, "b.test"))
	c := mustNew(t, s.URL, "k")
	var got []uint64
	err := c.FollowEvents(context.Background(), EventsFilter{}, func(e Event) error {
		got = append(got, e.Seq)
		if e.Seq == 2 {
			return errors.New("done")
		}
		return nil
	})
	if fmt.Sprint(err) != "done" || len(got) != 2 {
		t.Errorf("FollowEvents = %v, events %v", err, got)
	}
	if id := s.last(t).header.Get("Last-Event-ID"); id != "1" {
		t.Errorf("reconnected with Last-Event-ID %q", id)
	}
}

// Following a session's denials as they happen, say to show them to the person who runs the
// sandbox.
func ExampleClient_FollowEvents() {
	c, err := New("http://127.0.0.1:8470", os.Getenv("EGRESSD_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	err = c.FollowEvents(ctx, EventsFilter{SessionID: "ses_0123", Decision: "deny", Limit: -1}, func(e Event) error {
		fmt.Printf("%s blocked %s:%d: %s\n", e.Time.Format(time.TimeOnly), e.Host, e.Port, e.Reason)
		return nil
	})
	if err != nil && ctx.Err() == nil {
		log.Fatal(err)
	}
}
