package api

// Tests of GET /v1/egress/events against the real server in-process, over real HTTP on
// loopback, with the embedded store and a real events.Hub fed by hub.Record. They are in
// package api (not api_test) only to shorten the stream's heartbeat.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
	"github.com/egressd/egressd/internal/dataplane/events"
)

type eventsEnv struct {
	t          *testing.T
	url        string
	api        *Server
	hub        *events.Hub
	keyA, keyB string // keys of tenants a and b
}

func startEventsEnv(t *testing.T, withHub bool) *eventsEnv {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	env := &eventsEnv{t: t}
	for _, k := range []struct {
		tenant string
		secret *string
	}{{"a", &env.keyA}, {"b", &env.keyB}} {
		*k.secret = keyPrefix + randomToken(32)
		if err := st.CreateAPIKey(ctx, store.APIKey{ID: randomID("key_"), Tenant: k.tenant, Hash: HashSecret(*k.secret), CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := Config{Store: st, Logger: quiet}
	if withHub {
		env.hub, err = events.NewHub(events.HubConfig{Buffer: 1000, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { env.hub.Close() })
		cfg.Events = env.hub
	}
	env.api = New(cfg)
	env.api.events.heartbeat = 100 * time.Millisecond
	srv := httptest.NewUnstartedServer(env.api)
	// cmd/egressd sets a ReadTimeout, which a stream must outlive. The WriteTimeout is for a
	// later change: each write of a stream sets its own deadline, which must override it.
	srv.Config.ReadTimeout = 300 * time.Millisecond
	srv.Config.WriteTimeout = 300 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(env.api.CloseStreams) // before srv.Close, which waits for handlers
	env.url = srv.URL
	return env
}

// record feeds one record of tenant and session to the hub.
func (env *eventsEnv) record(tenant, session, decision, host string) {
	env.hub.Record(events.Record{
		Kind: events.KindConnect, Tenant: tenant, VMID: "vm-" + session, SessionID: session,
		Decision: decision, Reason: "test", Layer: "session", Host: host, Port: 443,
	})
}

func (env *eventsEnv) get(key, query string, header ...string) *http.Response {
	env.t.Helper()
	req, err := http.NewRequest("GET", env.url+"/v1/egress/events"+query, nil)
	if err != nil {
		env.t.Fatal(err)
	}
	req.Header.Set("X-API-Key", key)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		env.t.Fatal(err)
	}
	return resp
}

// list GETs a list and returns the hosts of its records, in order.
func (env *eventsEnv) list(key, query string) []string {
	env.t.Helper()
	resp := env.get(key, query)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		env.t.Fatalf("GET %s: %d %s", query, resp.StatusCode, body)
	}
	var out struct {
		Events []client.Event `json:"events"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil || out.Events == nil {
		env.t.Fatalf("GET %s: %v (events must be a list, never null)\n%s", query, err, body)
	}
	hosts := []string{}
	for _, e := range out.Events {
		hosts = append(hosts, e.Host)
	}
	return hosts
}

func TestEventsList(t *testing.T) {
	env := startEventsEnv(t, true)
	env.record("a", "s1", "deny", "a1.test")
	env.record("a", "s1", "allow", "a2.test")
	env.record("b", "sb", "deny", "b1.test")
	env.record("a", "s2", "deny", "a3.test")
	env.hub.Record(events.Record{Kind: events.KindDNS, Tenant: "a", SessionID: "s2", Decision: "deny", Host: "a4.test", QType: "A"})
	all := env.hub.Query(events.Filter{Tenant: "a"})

	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", []string{"a1.test", "a2.test", "a3.test", "a4.test"}},
		{"?session_id=s1", []string{"a1.test", "a2.test"}},
		{"?vm_id=vm-s2", []string{"a3.test"}},
		{"?decision=deny", []string{"a1.test", "a3.test", "a4.test"}},
		{"?decision=allow", []string{"a2.test"}},
		{"?kind=dns", []string{"a4.test"}},
		{"?kind=connect&decision=deny&session_id=s2", []string{"a3.test"}},
		{"?limit=2", []string{"a3.test", "a4.test"}},
		{"?limit=0", []string{}},
		{fmt.Sprintf("?since=%d", all[1].Seq), []string{"a3.test", "a4.test"}},
		{fmt.Sprintf("?since=%d&limit=1", all[0].Seq), []string{"a2.test"}},
		{"?since=" + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), []string{"a1.test", "a2.test", "a3.test", "a4.test"}},
		{"?since=" + time.Now().Add(time.Hour).Format(time.RFC3339Nano), []string{}},
		{"?session_id=nope", []string{}},
	} {
		if got := env.list(env.keyA, tc.query); !slices.Equal(got, tc.want) {
			t.Errorf("GET %s = %v, want %v", tc.query, got, tc.want)
		}
	}
	// A time with an offset whose '+' the client forgot to escape still parses.
	if got := env.list(env.keyA, "?since=2000-01-01T00:00:00+02:00"); len(got) != 4 {
		t.Errorf("since with an unescaped offset: %v", got)
	}
}

func TestEventsTenantIsolation(t *testing.T) {
	env := startEventsEnv(t, true)
	env.record("a", "sa", "deny", "a.test")
	env.record("b", "sb", "deny", "b.test")
	if got := env.list(env.keyA, "?session_id=sb"); len(got) != 0 {
		t.Errorf("tenant a filtering on b's session sees %v", got)
	}
	if got := env.list(env.keyA, "?vm_id=vm-sb"); len(got) != 0 {
		t.Errorf("tenant a filtering on b's VM sees %v", got)
	}
	if got := env.list(env.keyB, ""); !slices.Equal(got, []string{"b.test"}) {
		t.Errorf("tenant b sees %v", got)
	}
	// A tenant parameter is not a thing: it is refused, not obeyed.
	mustAPIError(t, env.get(env.keyA, "?tenant=b"), http.StatusBadRequest, "tenant")

	st := env.follow(env.keyA, "?session_id=sb")
	env.record("b", "sb", "deny", "b2.test")
	env.record("a", "sa", "deny", "a2.test")
	env.record("a", "sb", "deny", "a-sb.test") // tenant a's own session that happens to be named sb
	if ev := st.next(t); ev.record(t).Host != "a-sb.test" {
		t.Errorf("tenant a's stream got %+v", ev)
	}
}

func TestEventsBadRequests(t *testing.T) {
	env := startEventsEnv(t, true)
	for _, tc := range []struct {
		query, field string
		header       []string
	}{
		{"?decision=maybe", "decision", nil},
		{"?kind=udp", "kind", nil},
		{"?since=yesterday", "since", nil},
		{"?since=-5", "since", nil},
		{"?limit=-1", "limit", nil},
		{"?limit=10001", "limit", nil},
		{"?limit=ten", "limit", nil},
		{"?follow=perhaps", "follow", nil},
		{"?sesion_id=s1", "sesion_id", nil},
		{"?decision=allow&decision=deny", "decision", nil},
		{"?follow=true", "Last-Event-ID", []string{"Last-Event-ID", "abc"}},
	} {
		msg := mustAPIError(t, env.get(env.keyA, tc.query, tc.header...), http.StatusBadRequest, tc.field)
		if msg == "" {
			t.Errorf("%s: no message", tc.query)
		}
	}
	resp := env.get("", "")
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no key: %d, want 401", resp.StatusCode)
	}
}

func TestEventsNotEnabled(t *testing.T) {
	env := startEventsEnv(t, false)
	msg := mustAPIError(t, env.get(env.keyA, ""), http.StatusServiceUnavailable, "")
	if msg != "events are not enabled" {
		t.Errorf("message %q", msg)
	}
	mustAPIError(t, env.get(env.keyA, "?follow=true"), http.StatusServiceUnavailable, "")
}

func mustAPIError(t *testing.T, resp *http.Response, status int, field string) string {
	t.Helper()
	defer resp.Body.Close()
	var body client.ErrorBody
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &body); err != nil || resp.StatusCode != status || body.Error.Field != field {
		t.Errorf("%s: %d %s, want %d with field %q", resp.Request.URL, resp.StatusCode, raw, status, field)
	}
	return body.Error.Message
}

// sseEvent is one event or comment of a stream.
type sseEvent struct {
	id, event, data, comment string
}

func (ev sseEvent) record(t *testing.T) events.Record {
	t.Helper()
	var r events.Record
	if ev.event != "decision" || ev.id == "" {
		t.Fatalf("not a decision event: %+v", ev)
	}
	if err := json.Unmarshal([]byte(ev.data), &r); err != nil {
		t.Fatalf("event data: %v: %q", err, ev.data)
	}
	if fmt.Sprint(r.Seq) != ev.id {
		t.Errorf("id %s for record of seq %d", ev.id, r.Seq)
	}
	return r
}

type sseStream struct {
	resp   *http.Response
	events chan sseEvent
}

// follow opens a stream and reads it in the background.
func (env *eventsEnv) follow(key, query string, header ...string) *sseStream {
	env.t.Helper()
	if query == "" {
		query = "?follow=true"
	} else {
		query += "&follow=true"
	}
	resp := env.get(key, query, header...)
	env.t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		env.t.Fatalf("follow %s: %d %s", query, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		env.t.Fatalf("Content-Type %q", ct)
	}
	st := &sseStream{resp: resp, events: make(chan sseEvent, 100)}
	go func() {
		defer close(st.events)
		br := bufio.NewReader(resp.Body)
		var ev sseEvent
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				st.events <- ev
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ev.comment = strings.TrimSpace(line[1:])
			default:
				name, value, _ := strings.Cut(line, ": ")
				switch name {
				case "id":
					ev.id = value
				case "event":
					ev.event = value
				case "data":
					ev.data = value
				}
			}
		}
	}()
	return st
}

// next returns the next decision event, skipping comments.
func (st *sseStream) next(t *testing.T) sseEvent {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-st.events:
			if !ok {
				t.Fatal("the stream ended")
			}
			if ev.comment == "" {
				return ev
			}
		case <-timeout:
			t.Fatal("no event within 5s")
		}
	}
}

// ended reports whether the stream ends within a few seconds.
func (st *sseStream) ended() bool {
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-st.events:
			if !ok {
				return true
			}
		case <-timeout:
			return false
		}
	}
}

func TestEventsFollow(t *testing.T) {
	env := startEventsEnv(t, true)
	for i := 0; i < 5; i++ {
		env.record("a", "s", "deny", fmt.Sprintf("old%d.test", i))
	}
	st := env.follow(env.keyA, "?limit=2&decision=deny")
	// First the newest buffered records that match, then live ones.
	for _, want := range []string{"old3.test", "old4.test"} {
		if got := st.next(t).record(t).Host; got != want {
			t.Fatalf("backlog: %s, want %s", got, want)
		}
	}
	env.record("a", "s", "allow", "skipped.test")
	env.record("a", "s", "deny", "live1.test")
	last := st.next(t).record(t)
	if last.Host != "live1.test" {
		t.Fatalf("live: %s, want live1.test", last.Host)
	}

	// It outlives the server's ReadTimeout and WriteTimeout (300 ms here), with heartbeats
	// meanwhile.
	sawHeartbeat := false
	for deadline := time.Now().Add(700 * time.Millisecond); time.Now().Before(deadline); {
		select {
		case ev, ok := <-st.events:
			if !ok {
				t.Fatal("the stream ended while idle")
			}
			sawHeartbeat = sawHeartbeat || ev.comment == "keepalive"
		case <-time.After(50 * time.Millisecond):
		}
	}
	if !sawHeartbeat {
		t.Error("no heartbeat comment on an idle stream")
	}
	env.record("a", "s", "deny", "live2.test")
	if got := st.next(t).record(t).Host; got != "live2.test" {
		t.Fatalf("after the idle time: %s", got)
	}

	// The client goes away; records come meanwhile; it resumes with Last-Event-ID.
	st.resp.Body.Close()
	env.record("a", "s", "deny", "missed1.test")
	env.record("a", "s", "deny", "missed2.test")
	resumed := env.follow(env.keyA, "?limit=2&decision=deny", "Last-Event-ID", fmt.Sprint(last.Seq))
	for _, want := range []string{"live2.test", "missed1.test", "missed2.test"} {
		if got := resumed.next(t).record(t).Host; got != want {
			t.Fatalf("resumed: %s, want %s", got, want)
		}
	}
	// ...and gets every missed record, not only the default 100, without a limit.
	for i := 0; i < 150; i++ {
		env.record("a", "s", "deny", fmt.Sprintf("burst%d.test", i))
	}
	again := env.follow(env.keyA, "", "Last-Event-ID", fmt.Sprint(last.Seq))
	var got []string
	for i := 0; i < 3+150; i++ {
		got = append(got, again.next(t).record(t).Host)
	}
	if !slices.Equal(got[:3], []string{"live2.test", "missed1.test", "missed2.test"}) || got[152] != "burst149.test" {
		t.Errorf("resumed without a limit: %v ... %s", got[:3], got[152])
	}
	env.record("a", "s", "deny", "end.test")
	if got := again.next(t).record(t).Host; got != "end.test" {
		t.Errorf("after the resumed records: %s, want end.test", got)
	}
}

func TestEventsStreamsEnd(t *testing.T) {
	env := startEventsEnv(t, true)
	st := env.follow(env.keyA, "")
	env.api.CloseStreams()
	if !st.ended() {
		t.Fatal("CloseStreams did not end the stream")
	}
	mustAPIError(t, env.get(env.keyA, "?follow=true"), http.StatusServiceUnavailable, "")
	// Lists still work while shutting down.
	env.list(env.keyA, "")

	env2 := startEventsEnv(t, true)
	st2 := env2.follow(env2.keyA, "")
	env2.hub.Close()
	if !st2.ended() {
		t.Fatal("closing the hub did not end the stream")
	}
}

func TestEventsStreamsPerTenantAreBounded(t *testing.T) {
	env := startEventsEnv(t, true)
	for i := 0; i < maxStreamsPerTenant; i++ {
		env.follow(env.keyA, "")
	}
	mustAPIError(t, env.get(env.keyA, "?follow=true"), http.StatusTooManyRequests, "")
	env.follow(env.keyB, "") // another tenant is not held back
}

// TestEventWireTypesMatch keeps the SDK's Event in step with the record the server sends:
// the same fields, in the same order, with the same kinds of type (a code is a string on the
// wire) and JSON names.
func TestEventWireTypesMatch(t *testing.T) {
	rt, ct := reflect.TypeFor[events.Record](), reflect.TypeFor[client.Event]()
	if rt.NumField() != ct.NumField() {
		t.Fatalf("events.Record has %d fields, client.Event %d", rt.NumField(), ct.NumField())
	}
	for i := 0; i < rt.NumField(); i++ {
		rf, cf := rt.Field(i), ct.Field(i)
		if rf.Name != cf.Name || rf.Type.Kind() != cf.Type.Kind() || rf.Tag.Get("json") != cf.Tag.Get("json") {
			t.Errorf("field %d: events.Record has %s %s %q, client.Event %s %s %q",
				i, rf.Name, rf.Type, rf.Tag.Get("json"), cf.Name, cf.Type, cf.Tag.Get("json"))
		}
	}
}

// TestSDKAgainstTheServer runs the Go SDK's Events and FollowEvents against the real endpoint.
func TestSDKAgainstTheServer(t *testing.T) {
	env := startEventsEnv(t, true)
	env.record("a", "s1", "deny", "a1.test")
	env.record("b", "sb", "deny", "b1.test")
	env.record("a", "s2", "allow", "a2.test")
	c, err := client.New(env.url, env.keyA)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := c.Events(ctx, client.EventsFilter{Decision: "deny"})
	if err != nil || len(list) != 1 || list[0].Host != "a1.test" || list[0].Tenant != "a" || list[0].Seq == 0 {
		t.Fatalf("Events = %+v, %v", list, err)
	}
	if _, err := c.Events(ctx, client.EventsFilter{Kind: "nope"}); client.ErrorCode(err) != client.CodeBadRequest {
		t.Errorf("bad kind: %v", err)
	}

	got := make(chan client.Event, 10)
	fctx, fcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.FollowEvents(fctx, client.EventsFilter{AfterSeq: list[0].Seq}, func(e client.Event) error {
			got <- e
			return nil
		})
	}()
	env.record("b", "sb", "deny", "b2.test")
	env.record("a", "s1", "deny", "a3.test")
	for _, want := range []string{"a2.test", "a3.test"} {
		select {
		case e := <-got:
			if e.Host != want {
				t.Fatalf("followed %s, want %s", e.Host, want)
			}
		case <-ctx.Done():
			t.Fatalf("no event %s", want)
		}
	}
	fcancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("FollowEvents after cancel: %v, want context.Canceled", err)
	}
}
