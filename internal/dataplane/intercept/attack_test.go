package intercept

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"testing"

	"github.com/egressd/egressd/policy"
)

// realPolicy is the proxies' adapter over a compiled policy: http_rules on host allow
// only paths under prefix.
func realPolicy(t *testing.T, host, prefix string) Policy {
	t.Helper()
	m, err := policy.Compile(policy.Policy{AllowHTTPS: true,
		HTTPRules: []policy.HTTPRule{{Domain: host, Paths: []string{prefix}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	eff := policy.NewEffective(nil, policy.Layered{Layer: policy.LayerSession, Matcher: m})
	return PolicyFunc(func(host, method, path string) policy.Decision {
		return eff.DecideRequest(policy.Request{Host: host, Port: 443, Method: method, Path: path})
	})
}

// TestPathDecidedAsSent: the path the real policy decides is the one that goes upstream.
// policy.DecideRequest decodes the path itself, so a path the engine had already decoded
// was decoded twice: "%252e%252e" became a dot segment for the decision while the origin
// reads a literal "%2e%2e" segment, and a request outside "/v1/" was allowed.
func TestPathDecidedAsSent(t *testing.T) {
	o := &recorder{}
	e := newEnv(t, envOpts{handler: o, policy: realPolicy(t, apiHost, "/v1/")})
	c := e.tlsConn(apiHost, "http/1.1")
	br := bufio.NewReader(c)
	for _, tc := range []struct {
		target string
		status int
	}{
		{"/v1/ok", 200},
		{"/x/%252e%252e/v1/y", 403}, // the origin reads /x/%2e%2e/v1/y: not under /v1/
		{"/v1/%252e%252e/y", 200},   // the origin reads /v1/%2e%2e/y: under /v1/
		{"/v1/../admin", 403},
		{"/v1/%2e%2E/admin", 403},
		{"/v1/..;/admin", 403},
		{"//v1/x", 403},
		{"/v1/%2fx/../../admin", 403},
		{"/V1/x", 403},
	} {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", tc.target, apiHost)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.target, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", tc.target, resp.StatusCode, tc.status)
		}
	}
}

// TestMalformedAnswerDoesNotEchoTheValue: an origin that echoes the key it got in a
// malformed answer (here as its status line) makes the transport's error quote it; the
// 502 the sandbox gets, and the log line, must carry the placeholder, not the value.
func TestMalformedAnswerDoesNotEchoTheValue(t *testing.T) {
	const value = "sk-live-0123456789abcdef"
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString(r.Header.Get("X-Key") + "\r\n\r\n")
		brw.Flush()
	})
	var logged bytes.Buffer
	var mu sync.Mutex
	e := newEnv(t, envOpts{handler: echo, noH2: true, cfg: func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &logged}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}})
	ph := e.secrets.add("key", value, apiHost)
	for _, h2 := range []bool{false, true} {
		req := newRequest(t, "GET", "https://"+apiHost+"/", nil)
		req.Header.Set("X-Key", ph)
		resp, body := get(t, e.client(h2), req)
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("h2=%v: status %d, want 502", h2, resp.StatusCode)
		}
		if strings.Contains(body, value) || strings.Contains(fmt.Sprint(resp.Header), value) {
			t.Errorf("h2=%v: the sandbox got the value in the 502: %q", h2, body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(logged.String(), value) {
		t.Errorf("the value is in the log: %s", logged.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestEarlyHintsRedacted: an origin that echoes the key in a 103 Early Hints header does
// not hand it to the sandbox (answers' headers and trailers are redacted; interim ones
// were not).
func TestEarlyHintsRedacted(t *testing.T) {
	const value = "sk-live-0123456789abcdef"
	hints := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</x>; rel=preload; key="+r.Header.Get("X-Key"))
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "ok")
	})
	e := newEnv(t, envOpts{handler: hints})
	ph := e.secrets.add("key", value, apiHost)
	for _, h2 := range []bool{false, true} {
		var got []string
		req := newRequest(t, "GET", "https://"+apiHost+"/", nil)
		req.Header.Set("X-Key", ph)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				got = append(got, fmt.Sprint(code, h))
				return nil
			},
		}))
		resp, _ := get(t, e.client(h2), req)
		if resp.StatusCode != 200 || len(got) == 0 {
			t.Fatalf("h2=%v: %d, interim %v", h2, resp.StatusCode, got)
		}
		if s := strings.Join(got, " "); strings.Contains(s, value) || !strings.Contains(s, ph) {
			t.Errorf("h2=%v: the 103 carried %s", h2, s)
		}
	}
}

// TestPlaceholderOutsideHeaderValuesTowardAnotherHost: DESIGN §2.7 "a request that carries
// a placeholder to any other host is denied (secret_not_for_host), so neither leaks". The
// engine searched header values only: a placeholder in the path, the query or a trailer
// went up to a host that is not its secret's.
func TestPlaceholderOutsideHeaderValuesTowardAnotherHost(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		o := &recorder{}
		e := newEnv(t, envOpts{handler: o})
		ph := e.secrets.add("openai", realKey, otherHost) // not for apiHost
		for name, mk := range map[string]func() *http.Request{
			"query": func() *http.Request { return newRequest(t, "GET", "https://"+apiHost+"/x?k="+ph, nil) },
			"path":  func() *http.Request { return newRequest(t, "GET", "https://"+apiHost+"/x/"+ph, nil) },
			"encoded path": func() *http.Request {
				return newRequest(t, "GET", "https://"+apiHost+"/x/"+strings.ReplaceAll(ph, "-", "%2D"), nil)
			},
			"trailer": func() *http.Request {
				pr, pw := io.Pipe()
				r := newRequest(t, "POST", "https://"+apiHost+"/x", pr)
				r.Trailer = http.Header{"X-T": nil}
				go func() {
					io.WriteString(pw, "body")
					r.Trailer.Set("X-T", ph)
					pw.Close()
				}()
				return r
			},
		} {
			before := len(o.all())
			resp, err := e.client(h2).Do(mk())
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			for _, s := range o.all()[before:] {
				if strings.Contains(fmt.Sprint(s), ph) || strings.Contains(fmt.Sprint(s), strings.ReplaceAll(ph, "-", "%2D")) {
					t.Errorf("%s: the placeholder reached another host: %+v", name, s)
				}
			}
			if err == nil && resp.StatusCode != 403 {
				t.Errorf("%s: %d, want 403", name, resp.StatusCode)
			}
		}
	})
}

// TestHostForms: every form of a Host that is not the SNI is a 421 (or a 400 from the
// server for a malformed head); the forms that name it are served, and the origin sees the
// SNI whatever the client wrote.
func TestHostForms(t *testing.T) {
	o := &recorder{}
	e := newEnv(t, envOpts{handler: o})
	for _, tc := range []struct {
		head   string
		status int
	}{
		{"GET / HTTP/1.1\r\nHost: API.Example.TEST\r\n", 200},
		{"GET / HTTP/1.1\r\nHost: api.example.test.:443\r\n", 200},
		{"GET / HTTP/1.1\r\nHost: api.example.test:444\r\n", 421},
		{"GET / HTTP/1.1\r\nHost: api.example.test:\r\n", 200}, // an empty port is the default (RFC 3986 §3.2.3)
		{"GET / HTTP/1.1\r\nHost: [::1]\r\n", 421},
		{"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n", 421},
		{"GET / HTTP/1.1\r\nHost: other.example.test\r\n", 421},
		{"GET / HTTP/1.1\r\nHost: api.example.test@other.example.test\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: \r\n", 421},
		{"GET / HTTP/1.1\r\n", 400},
		{"GET / HTTP/1.0\r\n", 421},
		{"GET / HTTP/1.1\r\nHost: api.example.test\r\nHost: other.example.test\r\n", 400},
		{"GET https://other.example.test/ HTTP/1.1\r\nHost: api.example.test\r\n", 421},
		{"GET https://api.example.test/ HTTP/1.1\r\nHost: other.example.test\r\n", 200},
		{"GET //other.example.test/ HTTP/1.1\r\nHost: api.example.test\r\n", 200}, // a path
	} {
		c := e.tlsConn(apiHost, "http/1.1")
		br := bufio.NewReader(c)
		before := len(o.all())
		fmt.Fprintf(c, "%sConnection: close\r\n\r\n", tc.head)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Errorf("%q: %v", tc.head, err)
			c.Close()
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		c.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%q: %d, want %d", tc.head, resp.StatusCode, tc.status)
		}
		for _, s := range o.all()[before:] {
			if s.Host != apiHost {
				t.Errorf("%q: the origin saw Host %q", tc.head, s.Host)
			}
		}
	}
}

// TestBasicCredentialEchoRedacted: an origin that echoes the Authorization header it got in
// an answer's header hands back base64(user:value), which the search for the raw value does
// not find; the encoded credential goes back to the encoded placeholder credential.
func TestBasicCredentialEchoRedacted(t *testing.T) {
	const value = "sk-live-0123456789abcdef"
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		io.WriteString(w, "ok")
	})
	protos(t, func(t *testing.T, h2 bool) {
		e := newEnv(t, envOpts{handler: echo})
		ph := e.secrets.add("pypi", value, apiHost)
		req := newRequest(t, "GET", "https://"+apiHost+"/simple/", nil)
		req.SetBasicAuth("__token__", ph)
		resp, _ := get(t, e.client(h2), req)
		sent := "Basic " + base64.StdEncoding.EncodeToString([]byte("__token__:"+value))
		if got := resp.Header.Get("X-Echo"); got == sent || got != req.Header.Get("Authorization") {
			t.Errorf("X-Echo = %q, want the placeholder credential %q", got, req.Header.Get("Authorization"))
		}
	})
}

// TestEchoOnAnotherRequestRedacted: an origin that echoes the key of an earlier request on
// the connection (a debugging endpoint showing the last request's headers) in the header
// of a request that carried no placeholder: only the values put in that request itself
// were searched for.
func TestEchoOnAnotherRequestRedacted(t *testing.T) {
	const value = "sk-live-0123456789abcdef"
	var mu sync.Mutex
	last := ""
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if a := r.Header.Get("Authorization"); a != "" {
			last = a
		}
		w.Header().Set("X-Last", last)
		io.WriteString(w, "ok")
	})
	protos(t, func(t *testing.T, h2 bool) {
		e := newEnv(t, envOpts{handler: echo})
		ph := e.secrets.add("key", value, apiHost)
		c := e.client(h2)
		req := newRequest(t, "GET", "https://"+apiHost+"/a", nil)
		req.Header.Set("Authorization", "Bearer "+ph)
		get(t, c, req)
		resp, _ := get(t, c, newRequest(t, "GET", "https://"+apiHost+"/debug", nil))
		if e.accepted.Load() != 1 {
			t.Fatal("the requests did not share a connection")
		}
		if got := resp.Header.Get("X-Last"); strings.Contains(got, value) || got != "Bearer "+ph {
			t.Errorf("X-Last = %q, want the placeholder", got)
		}
	})
}
