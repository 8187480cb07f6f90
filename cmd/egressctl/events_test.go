package main

// Tests of "egressctl events" against a canned API: the real egressd records decisions only
// once its proxy is wired to the events hub, so these serve the JSON and the event stream the
// API is specified to send, and check what egressctl asks and prints.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

var (
	evTime  = time.Date(2030, 1, 2, 3, 4, 5, 678e6, time.UTC)
	evDeny  = client.Event{Seq: 11, Time: evTime, Kind: "connect", Tenant: "t", VMID: "v1", SessionID: "ses_1", Decision: "deny", Reason: "host_not_allowed", Rule: "not in allowed_domains", Layer: "session", Host: "evil.test", Port: 443}
	evAllow = client.Event{Seq: 12, Time: evTime, Kind: "request", Tenant: "t", VMID: "v1", SessionID: "ses_1", Decision: "allow", Reason: "allow_http", Rule: "allow_http (any host)", Layer: "vm", Host: "pypi.org", Port: 80}
	evClose = client.Event{Seq: 13, Time: evTime, Kind: "close", Tenant: "t", VMID: "v1", SessionID: "ses_1", Decision: "allow", Host: "pypi.org", Port: 443, BytesUp: 512, BytesDown: 3 << 20, DurationMS: 1234.4, CloseReason: "eof"}
)

func TestFormatEvent(t *testing.T) {
	for _, tc := range []struct {
		e    client.Event
		want string
	}{
		{evDeny, "2030-01-02T03:04:05.678Z  deny   connect  ses_1  evil.test:443  host_not_allowed; rule: not in allowed_domains; layer: session"},
		{evAllow, "2030-01-02T03:04:05.678Z  allow  request  ses_1  pypi.org:80  allow_http; rule: allow_http (any host); layer: vm"},
		{evClose, "2030-01-02T03:04:05.678Z  allow  close    ses_1  pypi.org:443  up 512 B, down 3.0 MiB in 1.234s (eof)"},
		{client.Event{Time: evTime, Kind: "dns", VMID: "v2", Decision: "allow", WouldDeny: true, Reason: "name_not_allowed", Host: "x.test", QType: "AAAA"},
			"2030-01-02T03:04:05.678Z  allow (would deny)  dns      vm:v2  x.test AAAA  name_not_allowed"},
		{client.Event{Time: evTime, Kind: "connect", Decision: "deny", Reason: "port_not_allowed", IP: "2001:db8::1", Port: 22},
			"2030-01-02T03:04:05.678Z  deny   connect  -  [2001:db8::1]:22  port_not_allowed"},
		{client.Event{Time: evTime, Kind: "close", Decision: "allow", IP: "192.0.2.1", Port: 5432, DurationMS: 0.25},
			"2030-01-02T03:04:05.678Z  allow  close    -  192.0.2.1:5432  up 0 B, down 0 B in 250µs"},
	} {
		if got := formatEvent(tc.e); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

func TestParseEventsSince(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		seq  uint64
		when time.Time
		bad  bool
	}{
		{"5m", 0, now.Add(-5 * time.Minute), false},
		{"1h30m", 0, now.Add(-90 * time.Minute), false},
		{"1700000000000123", 1700000000000123, time.Time{}, false},
		{"2029-12-31T23:00:00+01:00", 0, time.Date(2029, 12, 31, 22, 0, 0, 0, time.UTC), false},
		{"-5m", 0, time.Time{}, true},
		{"yesterday", 0, time.Time{}, true},
	} {
		when, seq, err := parseSince(tc.in, now)
		if (err != nil) != tc.bad || seq != tc.seq || !when.Equal(tc.when) {
			t.Errorf("parseSince(%q) = %v, %d, %v", tc.in, when, seq, err)
		}
	}
}

// cannedAPI serves GET /v1/egress/events: JSON for a list, and for follow=true the stream
// text of script, after which it holds the stream open until the client goes.
type cannedAPI struct {
	*httptest.Server
	mu      sync.Mutex
	queries []url.Values
}

func newCannedAPI(t *testing.T, list []client.Event, script func(w io.Writer, flush func())) *cannedAPI {
	t.Helper()
	c := &cannedAPI{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.queries = append(c.queries, r.URL.Query())
		c.mu.Unlock()
		if r.URL.Path != "/v1/egress/events" || r.Header.Get("Authorization") != "Bearer k" {
			http.Error(w, `{"error": {"code": "not_found", "message": "wrong request"}}`, http.StatusNotFound)
			return
		}
		if r.URL.Query().Get("follow") != "true" {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(client.EventList{Events: list})
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		flush := func() { w.(http.Flusher).Flush() }
		flush()
		script(w, flush)
		<-r.Context().Done()
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *cannedAPI) lastQuery() url.Values {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queries[len(c.queries)-1]
}

func writeSSE(w io.Writer, e client.Event) {
	data, _ := json.Marshal(e)
	fmt.Fprintf(w, "id: %d\nevent: decision\ndata: %s\n\n", e.Seq, data)
}

func TestEventsList(t *testing.T) {
	api := newCannedAPI(t, []client.Event{evDeny, evAllow, evClose}, nil)
	env := map[string]string{"EGRESSD_URL": api.URL, "EGRESSD_API_KEY": "k"}

	stdout, stderr, code := runHere(env, "events", "--session", "ses_1", "--decision", "deny", "--kind", "connect", "--limit", "3", "--since", "42")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := []string{formatEvent(evDeny), formatEvent(evAllow), formatEvent(evClose)}
	if got := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout, strings.Join(want, "\n"))
	}
	q := api.lastQuery()
	if q.Encode() != "decision=deny&kind=connect&limit=3&session_id=ses_1&since=42" {
		t.Errorf("query %s", q.Encode())
	}

	// --since 5m is sent as the time it means.
	runHere(env, "events", "--since", "5m", "--vm", "v1")
	q = api.lastQuery()
	since, err := time.Parse(time.RFC3339Nano, q.Get("since"))
	if err != nil || time.Since(since) < 5*time.Minute || time.Since(since) > 6*time.Minute || q.Get("vm_id") != "v1" {
		t.Errorf("--since 5m sent %s", q.Encode())
	}

	// -o json is the API's object, which decodes strictly into the SDK's types.
	stdout, _, code = runHere(env, "events", "-o", "json")
	var list client.EventList
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&list); err != nil || code != 0 || len(list.Events) != 3 || list.Events[2].BytesDown != evClose.BytesDown {
		t.Errorf("-o json: %v %+v\n%s", err, list, stdout)
	}

	for _, tc := range []struct{ args, stderr string }{
		{"events --limit -1", "--limit must be 0 or more"},
		{"events --limit x", "invalid value"},
		{"events --since yesterday", "give a duration"},
		{"events extra", `unexpected argument "extra"`},
	} {
		if _, stderr, code := runHere(env, strings.Fields(tc.args)...); code != exitError || !strings.Contains(stderr, tc.stderr) {
			t.Errorf("%s: exit %d, stderr %q", tc.args, code, stderr)
		}
	}

	empty := newCannedAPI(t, nil, nil)
	stdout, stderr, code = runHere(map[string]string{"EGRESSD_URL": empty.URL, "EGRESSD_API_KEY": "k"}, "events")
	if code != 0 || stdout != "" || !strings.Contains(stderr, "No decisions match") {
		t.Errorf("no events: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// lockedBuffer is a bytes.Buffer that a test reads while a command writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitLines waits until out has n lines.
func waitLines(t *testing.T, out fmt.Stringer, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if s := out.String(); strings.Count(s, "\n") >= n {
			return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
		}
	}
	t.Fatalf("no %d lines within 10s: %q", n, out.String())
	return nil
}

func TestEventsFollow(t *testing.T) {
	api := newCannedAPI(t, nil, func(w io.Writer, flush func()) {
		fmt.Fprint(w, ": keepalive\n\n")
		writeSSE(w, evDeny)
		flush()
		time.Sleep(50 * time.Millisecond)
		writeSSE(w, evClose)
		flush()
	})
	env := map[string]string{"EGRESSD_URL": api.URL, "EGRESSD_API_KEY": "k"}
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stdout, stderr lockedBuffer
			code := make(chan int, 1)
			go func() {
				code <- run(ctx, []string{"events", "--follow", "--limit", "0", "-o", format}, strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] })
			}()
			lines := waitLines(t, &stdout, 2)
			cancel() // what Ctrl-C does to run's context
			if c := <-code; c != 0 {
				t.Errorf("exit %d after an interrupt, want 0; stderr %s", c, stderr.String())
			}
			if q := api.lastQuery(); q.Get("follow") != "true" || q.Get("limit") != "0" {
				t.Errorf("query %s", q.Encode())
			}
			if format == "text" {
				if lines[0] != formatEvent(evDeny) || lines[1] != formatEvent(evClose) {
					t.Errorf("lines:\n%s", strings.Join(lines, "\n"))
				}
				return
			}
			for i, want := range []client.Event{evDeny, evClose} {
				var got client.Event
				if err := json.Unmarshal([]byte(lines[i]), &got); err != nil || got.Seq != want.Seq || got.Host != want.Host {
					t.Errorf("JSON line %d: %v %q", i, err, lines[i])
				}
			}
		})
	}
}

// TestEventsFollowBinary runs the built egressctl: a follow outlives --timeout, and SIGINT
// ends it with exit status 0.
func TestEventsFollowBinary(t *testing.T) {
	api := newCannedAPI(t, nil, func(w io.Writer, flush func()) {
		writeSSE(w, evDeny)
		flush()
		time.Sleep(500 * time.Millisecond) // past --timeout
		writeSSE(w, evAllow)
		flush()
	})
	f := startFollower(t, []string{"EGRESSD_URL=" + api.URL, "EGRESSD_API_KEY=k"}, "--timeout", "200ms")
	lines := waitLines(t, &f.stdout, 2)
	if lines[1] != formatEvent(evAllow) {
		t.Errorf("second line %q", lines[1])
	}
	f.interrupt(t)
}

// follower is a running `egressctl events --follow`.
type follower struct {
	cmd            *exec.Cmd
	stdout, stderr lockedBuffer
	done           chan error
}

// startFollower runs the built egressctl's events --follow with env and more arguments; it is
// killed when the test ends if it still runs.
func startFollower(t *testing.T, env []string, args ...string) *follower {
	t.Helper()
	f := &follower{done: make(chan error, 1)}
	f.cmd = exec.Command(egressdtest.Binary(t, "egressctl"), append([]string{"events", "--follow"}, args...)...)
	f.cmd.Env = env
	f.cmd.Stdout, f.cmd.Stderr = &f.stdout, &f.stderr
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { f.done <- f.cmd.Wait() }()
	t.Cleanup(func() { f.cmd.Process.Kill() })
	return f
}

// interrupt sends SIGINT, the way a follow is meant to end, and checks that it exits 0.
func (f *follower) interrupt(t *testing.T) {
	t.Helper()
	if err := f.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-f.done:
		if err != nil {
			t.Errorf("after SIGINT: %v, want exit 0; stderr %s", err, f.stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("egressctl events --follow did not end on SIGINT")
	}
}
