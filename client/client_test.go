package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/egressd/egressd/policy"
)

// recorded is what the fake server saw of one request.
type recorded struct {
	method, path, rawPath, query string
	header                       http.Header
	body                         string
	pathValues                   map[string]string
}

// fakeAPI is an httptest server that records every request and answers with the handler the
// test gives, so that each test asserts what the client sends and how it reads answers.
type fakeAPI struct {
	*httptest.Server
	conns atomic.Int32 // connections accepted
	mu    sync.Mutex
	reqs  []recorded
}

func newFakeAPI(t *testing.T, answer http.HandlerFunc) *fakeAPI {
	t.Helper()
	f := &fakeAPI{}
	mux := http.NewServeMux()
	record := func(w http.ResponseWriter, r *http.Request, names ...string) {
		body, _ := io.ReadAll(r.Body)
		rec := recorded{
			method: r.Method, path: r.URL.Path, rawPath: r.URL.EscapedPath(), query: r.URL.RawQuery,
			header: r.Header.Clone(), body: string(body), pathValues: map[string]string{},
		}
		for _, n := range names {
			rec.pathValues[n] = r.PathValue(n)
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, rec)
		f.mu.Unlock()
		answer(w, r)
	}
	// The routes of DESIGN §3, so that a path the client gets wrong is a 404 here too.
	for _, p := range []string{
		"/v1/vms/{vm_id}", "/v1/sessions/{session_id}", "/v1/egress/session/{id}",
		"/v1/egress/vm/{id}", "/v1/egress/session/{id}/effective", "/v1/egress/session/{id}/check",
		"/v1/api-keys/{id}",
	} {
		names := []string{p[strings.LastIndex(p, "{")+1 : strings.LastIndex(p, "}")]}
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) { record(w, r, names...) })
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { record(w, r) })
	f.Server = httptest.NewUnstartedServer(mux)
	f.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.conns.Add(1)
		}
	}
	f.Start()
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAPI) last(t *testing.T) recorded {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		t.Fatal("the server saw no request")
	}
	return f.reqs[len(f.reqs)-1]
}

func (f *fakeAPI) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

func answerJSON(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func mustNew(t *testing.T, base, key string, opts ...Option) *Client {
	t.Helper()
	c, err := New(base, key, opts...)
	if err != nil {
		t.Fatalf("New(%q): %v", base, err)
	}
	return c
}

func TestNewRejectsUnusableBaseURLs(t *testing.T) {
	for _, base := range []string{
		"", "127.0.0.1:8470", "localhost", "ftp://127.0.0.1", "http://", "/v1",
		"http://admin:secret@127.0.0.1:8470", "http://127.0.0.1:8470/?x=1", "http://127.0.0.1:8470/#top",
	} {
		if _, err := New(base, "k"); err == nil {
			t.Errorf("New(%q) succeeded; want an error", base)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("New(%q) error %q repeats the password", base, err)
		}
	}
}

func TestBaseURLPathPrefixIsKept(t *testing.T) {
	f := newFakeAPI(t, answerJSON(200, `{"vms": []}`))
	for _, base := range []string{f.URL + "/egressd", f.URL + "/egressd/"} {
		c := mustNew(t, base, "k")
		if _, err := c.ListVMs(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := f.last(t).path; got != "/egressd/v1/vms" {
			t.Errorf("base %q: path %q, want /egressd/v1/vms", base, got)
		}
	}
}

func TestRequestHeaders(t *testing.T) {
	f := newFakeAPI(t, answerJSON(200, `{"vm_id": "v1", "network": {"mode": "none"}}`))
	ctx := context.Background()

	c := mustNew(t, f.URL, "egk_secret")
	if _, err := c.GetVM(ctx, "v1"); err != nil {
		t.Fatal(err)
	}
	h := f.last(t).header
	if got := h.Get("Authorization"); got != "Bearer egk_secret" {
		t.Errorf("Authorization = %q, want Bearer egk_secret", got)
	}
	if got := h.Get("User-Agent"); got != DefaultUserAgent {
		t.Errorf("User-Agent = %q, want %q", got, DefaultUserAgent)
	}
	if got := h.Get("Accept"); got != "application/json" {
		t.Errorf("Accept = %q", got)
	}
	if got := h.Get("Content-Type"); got != "" {
		t.Errorf("a GET without a body sent Content-Type %q", got)
	}

	c = mustNew(t, f.URL, "k", WithUserAgent("egressctl/test"))
	if _, err := c.CreateVM(ctx, CreateVMRequest{}); err != nil {
		t.Fatal(err)
	}
	h = f.last(t).header
	if got := h.Get("Content-Type"); got != "application/json" {
		t.Errorf("POST Content-Type = %q, want application/json", got)
	}
	if got := h.Get("User-Agent"); got != "egressctl/test" {
		t.Errorf("User-Agent = %q, want egressctl/test", got)
	}

	// No key: no header at all, rather than an empty Bearer the server would have to parse.
	c = mustNew(t, f.URL, "")
	if err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.last(t).header.Get("Authorization"); got != "" {
		t.Errorf("no key, but Authorization = %q", got)
	}
}

func TestIDsAreOnePathSegment(t *testing.T) {
	f := newFakeAPI(t, answerJSON(200, `{}`))
	c := mustNew(t, f.URL, "k")
	ctx := context.Background()
	for _, id := range []string{"vm-1", "a/b", "../../v1/api-keys", "a b", "a?b#c", "%2F", "ü"} {
		calls := []struct {
			name     string
			call     func() error
			path     string // the pattern's prefix, then the ID
			wildcard string
		}{
			{"GetVM", func() error { _, err := c.GetVM(ctx, id); return err }, "/v1/vms/", "vm_id"},
			{"DeleteSession", func() error { return c.DeleteSession(ctx, id) }, "/v1/sessions/", "session_id"},
			{"GetVMPolicy", func() error { _, err := c.GetVMPolicy(ctx, id); return err }, "/v1/egress/vm/", "id"},
			{"Check", func() error { _, err := c.Check(ctx, id, CheckRequest{Host: "x.test", Port: 443}); return err }, "/v1/egress/session/", "id"},
			{"DeleteAPIKey", func() error { return c.DeleteAPIKey(ctx, id) }, "/v1/api-keys/", "id"},
		}
		for _, tc := range calls {
			if err := tc.call(); err != nil {
				t.Errorf("%s(%q): %v", tc.name, id, err)
				continue
			}
			got := f.last(t)
			if !strings.HasPrefix(got.path, tc.path) {
				t.Errorf("%s(%q) reached %q, outside %s", tc.name, id, got.path, tc.path)
			}
			if v := got.pathValues[tc.wildcard]; v != id {
				t.Errorf("%s(%q): server read {%s} as %q (raw path %q)", tc.name, id, tc.wildcard, v, got.rawPath)
			}
		}
	}
}

func TestUnusableIDsAreRefusedBeforeSending(t *testing.T) {
	f := newFakeAPI(t, answerJSON(200, `{}`))
	c := mustNew(t, f.URL, "k")
	ctx := context.Background()
	for _, id := range []string{"", ".", ".."} {
		if _, err := c.GetVM(ctx, id); err == nil {
			t.Errorf("GetVM(%q) succeeded", id)
		}
		if _, err := c.SetSessionPolicy(ctx, id, policy.Policy{}); err == nil {
			t.Errorf("SetSessionPolicy(%q) succeeded", id)
		}
		if err := c.DeleteAPIKey(ctx, id); err == nil {
			t.Errorf("DeleteAPIKey(%q) succeeded", id)
		}
	}
	if n := f.count(); n != 0 {
		t.Errorf("%d requests reached the server", n)
	}
}

func TestSetPolicySendsDefaultsExplicitly(t *testing.T) {
	f := newFakeAPI(t, answerJSON(200, `{"scope": "session", "id": "s1", "revision": 7, "allow_https": true,
		"allowed_domains": ["api.openai.com"], "allowed_cidrs": [], "denied_domains": [], "mode": "enforce",
		"warnings": ["w1"]}`))
	c := mustNew(t, f.URL, "k")
	got, err := c.SetSessionPolicy(context.Background(), "s1", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.openai.com"}})
	if err != nil {
		t.Fatal(err)
	}
	req := f.last(t)
	if req.method != http.MethodPost || req.path != "/v1/egress/session/s1" {
		t.Errorf("sent %s %s", req.method, req.path)
	}
	var sent map[string]any
	if err := json.Unmarshal([]byte(req.body), &sent); err != nil {
		t.Fatalf("body %q: %v", req.body, err)
	}
	want := map[string]any{
		"allow_package_managers": false, "allow_http": false, "allow_https": true,
		"allowed_domains": []any{"api.openai.com"}, "allowed_cidrs": []any{}, "denied_domains": []any{},
		"mode": "enforce", "allowed_tcp": []any{}, "http_rules": []any{},
	}
	if a, b := mustJSON(t, sent), mustJSON(t, want); a != b {
		t.Errorf("body\n got %s\nwant %s", a, b)
	}
	if got.Scope != "session" || got.ID != "s1" || got.Revision != 7 || !got.AllowHTTPS ||
		len(got.AllowedDomains) != 1 || len(got.Warnings) != 1 {
		t.Errorf("decoded %+v", got)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRequestShapes(t *testing.T) {
	f := newFakeAPI(t, answerJSON(200, `{}`))
	c := mustNew(t, f.URL, "k")
	ctx := context.Background()
	cases := []struct {
		name                      string
		call                      func() error
		method, path, query, body string
	}{
		{"ListSessions all", func() error { _, err := c.ListSessions(ctx, ""); return err }, "GET", "/v1/sessions", "", ""},
		{"ListSessions of a VM", func() error { _, err := c.ListSessions(ctx, "vm 1&x=y"); return err }, "GET", "/v1/sessions", "vm_id=vm+1%26x%3Dy", ""},
		{"CreateSession", func() error { _, err := c.CreateSession(ctx, CreateSessionRequest{VMID: "v1"}); return err }, "POST", "/v1/sessions", "", `{"vm_id":"v1"}`},
		{"CreateVM netns", func() error {
			_, err := c.CreateVM(ctx, CreateVMRequest{VMID: "v1", Network: &Network{Mode: "netns"}})
			return err
		}, "POST", "/v1/vms", "", `{"vm_id":"v1","network":{"mode":"netns"}}`},
		{"Check URL", func() error { _, err := c.Check(ctx, "s1", CheckRequest{URL: "https://pypi.org/simple/"}); return err }, "POST", "/v1/egress/session/s1/check", "", `{"url":"https://pypi.org/simple/"}`},
		{"Check host and port", func() error {
			_, err := c.Check(ctx, "s1", CheckRequest{Host: "github.com", Port: 22})
			return err
		}, "POST", "/v1/egress/session/s1/check", "", `{"host":"github.com","port":22}`},
		{"SetVMPolicy allowed_tcp", func() error {
			_, err := c.SetVMPolicy(ctx, "v1", policy.Policy{AllowedTCP: []string{"github.com:22"}})
			return err
		}, "POST", "/v1/egress/vm/v1", "", `{"allow_package_managers":false,"allow_http":false,"allow_https":false,"allowed_domains":[],"allowed_cidrs":[],"denied_domains":[],"mode":"enforce","allowed_tcp":["github.com:22"],"http_rules":[]}`},
		{"Check DNS", func() error {
			_, err := c.Check(ctx, "s1", CheckRequest{DNSQuery: "pypi.org", QType: "AAAA", Resolve: true})
			return err
		}, "POST", "/v1/egress/session/s1/check", "", `{"dns_query":"pypi.org","qtype":"AAAA","resolve":true}`},
		{"Effective", func() error { _, err := c.Effective(ctx, "s1"); return err }, "GET", "/v1/egress/session/s1/effective", "", ""},
		{"DeleteVMPolicy", func() error { return c.DeleteVMPolicy(ctx, "v1") }, "DELETE", "/v1/egress/vm/v1", "", ""},
		{"PackageManagers", func() error { _, err := c.PackageManagers(ctx); return err }, "GET", "/v1/egress/package-managers", "", ""},
		{"CreateAPIKey", func() error { _, err := c.CreateAPIKey(ctx, CreateAPIKeyRequest{Tenant: "acme"}); return err }, "POST", "/v1/api-keys", "", `{"tenant":"acme"}`},
		{"Ready", func() error { return c.Ready(ctx) }, "GET", "/readyz", "", ""},
	}
	for _, tc := range cases {
		if err := tc.call(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		got := f.last(t)
		if got.method != tc.method || got.path != tc.path || got.query != tc.query || got.body != tc.body {
			t.Errorf("%s sent %s %s ?%s %s\nwant %s %s ?%s %s", tc.name,
				got.method, got.path, got.query, got.body, tc.method, tc.path, tc.query, tc.body)
		}
	}
}

func TestErrorAnswers(t *testing.T) {
	cases := []struct {
		name     string
		status   int
		ctype    string
		body     string
		want     Error
		wantText string
	}{
		{
			name: "API error with field", status: 400, ctype: "application/json",
			body:     `{"error": {"code": "invalid_policy", "message": "10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?", "field": "allowed_cidrs[1]"}}`,
			want:     Error{Status: 400, Code: CodeInvalidPolicy, Field: "allowed_cidrs[1]", Message: "10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"},
			wantText: "allowed_cidrs[1]: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8? (400 invalid_policy)",
		},
		{
			name: "message that names its field", status: 400, ctype: "application/json",
			body:     `{"error": {"code": "bad_request", "message": "allowed_domains must be a JSON slice", "field": "allowed_domains"}}`,
			want:     Error{Status: 400, Code: CodeBadRequest, Field: "allowed_domains", Message: "allowed_domains must be a JSON slice"},
			wantText: "allowed_domains must be a JSON slice (400 bad_request)",
		},
		{
			name: "API error without field", status: 401, ctype: "application/json",
			body:     `{"error": {"code": "unauthorized", "message": "the API key is not valid"}}`,
			want:     Error{Status: 401, Code: CodeUnauthorized, Message: "the API key is not valid"},
			wantText: "the API key is not valid (401 unauthorized)",
		},
		{
			name: "reverse proxy HTML page", status: 502, ctype: "text/html",
			body:     "<html><head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>",
			want:     Error{Status: 502, Message: "<html><head><title>502 Bad Gateway</title></head>"},
			wantText: "<html><head><title>502 Bad Gateway</title></head> (502)",
		},
		{
			name: "plain text", status: 404, ctype: "text/plain; charset=utf-8",
			body:     "404 page not found\n",
			want:     Error{Status: 404, Message: "404 page not found"},
			wantText: "404 page not found (404)",
		},
		{
			name: "empty body", status: 500,
			want:     Error{Status: 500},
			wantText: "internal server error (500)",
		},
		{
			name: "binary body", status: 500, ctype: "application/octet-stream", body: "\x00\x01\xff",
			want:     Error{Status: 500},
			wantText: "internal server error (500)",
		},
		{
			name: "JSON that is not the error shape", status: 418, ctype: "application/json", body: `[1, 2]`,
			want:     Error{Status: 418, Message: "[1, 2]"},
			wantText: "[1, 2] (418)",
		},
		{
			name: "error as a string", status: 429, ctype: "application/json", body: `{"error": "slow down"}`,
			want:     Error{Status: 429, Message: "slow down"},
			wantText: "slow down (429)",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
				if tc.ctype != "" {
					w.Header().Set("Content-Type", tc.ctype)
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			})
			_, err := mustNew(t, f.URL, "k").GetVM(context.Background(), "v1")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is not *Error", err, err)
			}
			if *e != tc.want {
				t.Errorf("got %+v\nwant %+v", *e, tc.want)
			}
			if got := e.Error(); got != tc.wantText {
				t.Errorf("Error() = %q\n          want %q", got, tc.wantText)
			}
		})
	}
}

func TestLongErrorBodyIsCut(t *testing.T) {
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(503)
		io.WriteString(w, strings.Repeat("x", 1<<20))
	})
	err := mustNew(t, f.URL, "k").Health(context.Background())
	e, ok := asError(err)
	if !ok {
		t.Fatalf("error %v is not *Error", err)
	}
	if n := len([]rune(e.Message)); n > 201 {
		t.Errorf("message has %d characters; want it cut to about 200", n)
	}
}

func TestRedirectIsNotFollowed(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
	}))
	defer other.Close()
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/steal", http.StatusFound)
	})
	_, err := mustNew(t, f.URL, "egk_secret").ListVMs(context.Background())
	e, ok := asError(err)
	if !ok || e.Status != http.StatusFound || !strings.Contains(e.Message, "unexpected redirect to "+other.URL) {
		t.Errorf("error %v; want a 302 *Error naming the target", err)
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect was followed %d times", n)
	}
}

func TestReadyReportsReason(t *testing.T) {
	f := newFakeAPI(t, answerJSON(503, `{"status": "unavailable", "reason": "store: database is locked"}`))
	err := mustNew(t, f.URL, "").Ready(context.Background())
	e, ok := asError(err)
	if !ok {
		t.Fatalf("Ready: %v; want *Error", err)
	}
	if want := "store: database is locked (503 unavailable)"; e.Error() != want {
		t.Errorf("Error() = %q, want %q", e.Error(), want)
	}
}

func TestHelpers(t *testing.T) {
	notSet := &Error{Status: 404, Code: CodeNotSet, Message: "no session policy"}
	wrapped := errors.Join(errors.New("context"), notSet)
	cases := []struct {
		err                                           error
		notFound, notSet, unauth, forbidden, conflict bool
		code                                          string
	}{
		{err: &Error{Status: 404, Code: CodeNotFound}, notFound: true, code: CodeNotFound},
		{err: wrapped, notFound: true, notSet: true, code: CodeNotSet},
		{err: &Error{Status: 401, Code: CodeUnauthorized}, unauth: true, code: CodeUnauthorized},
		{err: &Error{Status: 403, Code: CodeForbidden}, forbidden: true, code: CodeForbidden},
		{err: &Error{Status: 409, Code: CodeConflict}, conflict: true, code: CodeConflict},
		{err: &Error{Status: 404}, notFound: true},
		{err: errors.New("dial tcp: connection refused")},
		{err: nil},
	}
	for _, tc := range cases {
		if IsNotFound(tc.err) != tc.notFound || IsPolicyNotSet(tc.err) != tc.notSet ||
			IsUnauthorized(tc.err) != tc.unauth || IsForbidden(tc.err) != tc.forbidden ||
			IsConflict(tc.err) != tc.conflict || ErrorCode(tc.err) != tc.code {
			t.Errorf("helpers disagree about %v", tc.err)
		}
	}
}

func TestBadSuccessAnswers(t *testing.T) {
	for name, h := range map[string]http.HandlerFunc{
		"HTML": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<html>captive portal</html>")
		},
		"204": func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) },
	} {
		f := newFakeAPI(t, h)
		if _, err := mustNew(t, f.URL, "k").GetVM(context.Background(), "v1"); err == nil {
			t.Errorf("%s answer to GetVM: no error", name)
		} else if _, ok := asError(err); ok {
			t.Errorf("%s answer: %v is an *Error, but the API did not fail", name, err)
		}
	}
}

func TestTransportErrorsAreReturned(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = mustNew(t, "http://"+addr, "k").ListVMs(context.Background())
	if err == nil || IsNotFound(err) {
		t.Fatalf("ListVMs against a closed port: %v", err)
	}

	f := newFakeAPI(t, answerJSON(200, `{"vms": []}`))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := mustNew(t, f.URL, "k").ListVMs(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: %v, want context.Canceled", err)
	}
}

// Bodies are read to the end and closed, so one keep-alive connection carries every call,
// the failed ones included.
func TestConnectionIsReused(t *testing.T) {
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		case http.MethodPost:
			answerJSON(400, `{"error": {"code": "invalid_policy", "message": "bad", "field": "mode"}}`+strings.Repeat(" ", 10000))(w, r)
		default:
			answerJSON(200, `{"vms": [{"vm_id": "v1"}]}`+strings.Repeat(" ", 10000))(w, r)
		}
	})
	c := mustNew(t, f.URL, "k")
	ctx := context.Background()
	for range 5 {
		if vms, err := c.ListVMs(ctx); err != nil || len(vms) != 1 || vms[0].VMID != "v1" {
			t.Fatalf("ListVMs: %v %v", vms, err)
		}
		if _, err := c.SetVMPolicy(ctx, "v1", policy.Policy{}); ErrorCode(err) != CodeInvalidPolicy {
			t.Fatalf("SetVMPolicy: %v", err)
		}
		if err := c.DeleteVM(ctx, "v1"); err != nil {
			t.Fatalf("DeleteVM: %v", err)
		}
	}
	if n := f.conns.Load(); n != 1 {
		t.Errorf("%d connections for 15 calls; want 1", n)
	}
}
