package intercept

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/sni"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// Names of the tests: made-up hosts under .test (DESIGN §10). Everything listens on
// 127.0.0.1.
const (
	apiHost   = "api.example.test"
	otherHost = "other.example.test"
)

// env is one engine between test clients and an origin, on loopback. Its listener plays
// the caller's part (the explicit or the transparent proxy): it peeks the ClientHello with
// package sni, as the proxies do, and hands the connection to the engine with the hello as
// its prefix.
type env struct {
	t        testing.TB
	engine   *Engine
	ca       *testnet.CA // the interception CA: clients trust it
	originCA *testnet.CA // the origin's: the engine trusts it
	origin   *httptest.Server
	ln       net.Listener
	pol      *testPolicy
	secrets  *testSecrets
	sink     *recordSink

	accepted atomic.Int64
	dials    atomic.Int64
	dialer   Dialer // nil: dial the origin
	policy   Policy // nil: pol
	mu       sync.Mutex
	conns    []*Conn
	results  chan Result
	wg       sync.WaitGroup
}

type envOpts struct {
	handler    http.Handler
	noH2       bool   // the origin speaks HTTP/1.1 only
	originName string // the origin shows a certificate for this name, whatever the SNI
	cfg        func(*Config)
	dialer     Dialer
	noChecks   bool   // no goroutine check (benchmarks)
	policy     Policy // decides instead of the testPolicy (a real policy.Effective)
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	if !o.noChecks {
		checkGoroutines(t) // registered first: runs after every other cleanup
	}
	e := &env{
		t: t, ca: testnet.NewCA(t), originCA: testnet.NewCA(t),
		pol: &testPolicy{}, secrets: newTestSecrets(), sink: &recordSink{},
		results: make(chan Result, 1000), dialer: o.dialer, policy: o.policy,
	}
	if o.handler == nil {
		o.handler = http.NotFoundHandler()
	}
	e.origin = httptest.NewUnstartedServer(o.handler)
	e.origin.TLS = &tls.Config{GetCertificate: e.originCA.Certificate}
	if o.originName != "" {
		e.origin.TLS.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return e.originCA.Certificate(&tls.ClientHelloInfo{ServerName: o.originName})
		}
	}
	e.origin.EnableHTTP2 = !o.noH2
	e.origin.Config.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug)
	e.origin.StartTLS()
	t.Cleanup(e.origin.Close)

	cfg := Config{
		Certs: certs{e.ca}, RootCAs: e.originCA.Pool, Sink: e.sink,
		Logger: slog.New(slog.DiscardHandler), HandshakeTimeout: 5 * time.Second,
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	eng, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.engine = eng
	e.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.wg.Add(1)
	go e.accept()
	t.Cleanup(func() {
		e.ln.Close()
		e.engine.Close()
		e.wg.Wait()
	})
	return e
}

// accept is the caller: peek the ClientHello, judge nothing (the tests' SNI is allowed by
// construction), hand the connection over.
func (e *env) accept() {
	defer e.wg.Done()
	for {
		c, err := e.ln.Accept()
		if err != nil {
			return
		}
		e.accepted.Add(1)
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			name, hello, err := sni.ServerName(c)
			c.SetReadDeadline(time.Time{})
			if err != nil {
				c.Close()
				return
			}
			host, err := policy.NormalizeName(name)
			if err != nil {
				c.Close()
				return
			}
			dialer := e.dialer
			if dialer == nil {
				dialer = DialFunc(e.dialOrigin)
			}
			var pol Policy = e.pol
			if e.policy != nil {
				pol = e.policy
			}
			ic := &Conn{
				Client: c, Prefix: hello, SNI: host,
				Source: events.Source{Tenant: "t1", VMID: "vm1", SessionID: "ses_1"},
				Policy: pol, Secrets: e.secrets, Dialer: dialer,
			}
			e.mu.Lock()
			e.conns = append(e.conns, ic)
			e.mu.Unlock()
			e.results <- e.engine.Serve(context.Background(), ic)
		}()
	}
}

// dialOrigin is the judged dialer of the tests: every name is the origin.
func (e *env) dialOrigin(ctx context.Context, host string, port uint16) (net.Conn, error) {
	if port != 443 {
		return nil, errors.New("dialled a port other than 443")
	}
	e.dials.Add(1)
	var d net.Dialer
	return d.DialContext(ctx, "tcp", e.origin.Listener.Addr().String())
}

// lastConn is the newest connection the engine serves.
func (e *env) lastConn() *Conn {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.conns) == 0 {
		e.t.Fatal("no connection was handed to the engine")
	}
	return e.conns[len(e.conns)-1]
}

// result waits for the next connection's Result.
func (e *env) result() Result {
	e.t.Helper()
	select {
	case r := <-e.results:
		return r
	case <-time.After(5 * time.Second):
		e.t.Fatal("no connection ended within 5s")
		return Result{}
	}
}

// client is an HTTP client whose every connection goes to the engine, trusting the
// interception CA; h2 offers HTTP/2 (and the engine takes it), else HTTP/1.1 only.
func (e *env) client(h2 bool) *http.Client { return e.clientTo(e.ln.Addr().String(), h2) }

// clientTo is client, to a listener of the test's own.
func (e *env) clientTo(addr string, h2 bool) *http.Client {
	protos := new(http.Protocols)
	protos.SetHTTP1(!h2)
	protos.SetHTTP2(h2)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: e.ca.Pool},
		ForceAttemptHTTP2: h2,
		Protocols:         protos,
		MaxConnsPerHost:   1,
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// direct is an HTTP client straight to the origin, for comparisons.
func (e *env) direct(h2 bool) *http.Client {
	protos := new(http.Protocols)
	protos.SetHTTP1(!h2)
	protos.SetHTTP2(h2)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", e.origin.Listener.Addr().String())
		},
		TLSClientConfig:   &tls.Config{RootCAs: e.originCA.Pool},
		ForceAttemptHTTP2: h2,
		Protocols:         protos,
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// tlsConn is a raw TLS connection to the engine for name, for requests a client library
// would not send as they are.
func (e *env) tlsConn(name string, alpn ...string) *tls.Conn {
	e.t.Helper()
	c, err := tls.Dial("tcp", e.ln.Addr().String(), &tls.Config{RootCAs: e.ca.Pool, ServerName: name, NextProtos: alpn})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// certs mints leaves with the test CA.
type certs struct{ ca *testnet.CA }

func (c certs) Leaf(name string) (*tls.Certificate, error) {
	return c.ca.Certificate(&tls.ClientHelloInfo{ServerName: name})
}

// testPolicy allows every request unless methods or path prefixes are set; a test
// changes it between requests with set.
type testPolicy struct {
	rules   atomic.Pointer[rules]
	monitor atomic.Bool
	calls   atomic.Int64
}

type rules struct {
	methods, paths []string
}

func (p *testPolicy) set(methods, paths []string) { p.rules.Store(&rules{methods, paths}) }

func (p *testPolicy) DecideRequest(host, method, path string) policy.Decision {
	p.calls.Add(1)
	allow := policy.Decision{Allow: true, Reason: policy.ReasonAllowedDomains, Rule: "allowed_domains " + host,
		Layer: policy.LayerSession, Mode: policy.Enforce}
	deny := func(reason, rule string) policy.Decision {
		if p.monitor.Load() {
			allow.WouldDeny, allow.Mode = true, policy.Monitor
			return allow
		}
		return policy.Decision{Reason: policy.Reason(reason), Rule: rule, Layer: policy.LayerSession, Mode: policy.Enforce}
	}
	r := p.rules.Load()
	if r == nil {
		return allow
	}
	if len(r.methods) > 0 && !slices.Contains(r.methods, method) {
		return deny("method_not_allowed", "http_rules "+host+" methods "+strings.Join(r.methods, ","))
	}
	if len(r.paths) > 0 && !slices.ContainsFunc(r.paths, func(p string) bool { return strings.HasPrefix(path, p) }) {
		return deny("path_not_allowed", "http_rules "+host+" paths "+strings.Join(r.paths, ","))
	}
	return allow
}

// testSecrets is one tenant's secrets.
type testSecrets struct {
	mu sync.Mutex
	m  map[string]testSecret // by placeholder
}

type testSecret struct {
	name, value string
	domains     []string
}

func newTestSecrets() *testSecrets { return &testSecrets{m: make(map[string]testSecret)} }

// add makes a secret and returns its placeholder.
func (s *testSecrets) add(name, value string, domains ...string) string {
	p := PlaceholderPrefix + name + "-" + strings.Repeat("A", placeholderTail-len(name)%5) + strings.Repeat("7", len(name)%5)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[p] = testSecret{name, value, domains}
	return p
}

// rotate changes the value of the secret with placeholder p.
func (s *testSecrets) rotate(p, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.m[p]
	sec.value = value
	s.m[p] = sec
}

func (s *testSecrets) Lookup(placeholder, host string) (Secret, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, ok := s.m[placeholder]
	if !ok {
		return Secret{}, false
	}
	if !slices.Contains(sec.domains, host) {
		return Secret{Name: sec.name}, true
	}
	return Secret{Name: sec.name, ForHost: true, Value: sec.value}, true
}

// recordSink keeps the records.
type recordSink struct {
	mu   sync.Mutex
	recs []Record
}

func (s *recordSink) Request(r Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, r)
}

// wait returns the records once there are n, failing after 5 s.
func (s *recordSink) wait(t testing.TB, n int) []Record {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		recs := slices.Clone(s.recs)
		s.mu.Unlock()
		if len(recs) >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d records, want %d: %+v", len(recs), n, recs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// json is every record as the wire would carry it, for searching.
func (s *recordSink) json(t testing.TB) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := json.Marshal(s.recs)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// seen is what the origin received.
type seen struct {
	Method, URI, Proto, Host, Body string
	Header                         http.Header
	Trailer                        http.Header
}

// recorder is an origin handler that keeps every request and answers "ok".
type recorder struct {
	mu   sync.Mutex
	reqs []seen
}

func (o *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	o.mu.Lock()
	o.reqs = append(o.reqs, seen{r.Method, r.RequestURI, r.Proto, r.Host, string(body), r.Header.Clone(), r.Trailer.Clone()})
	o.mu.Unlock()
	w.Header().Set("X-Origin", "yes")
	io.WriteString(w, "ok")
}

func (o *recorder) all() []seen {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.reqs)
}

// last is the newest request the origin received.
func (o *recorder) last(t testing.TB) seen {
	t.Helper()
	all := o.all()
	if len(all) == 0 {
		t.Fatal("the origin received nothing")
	}
	return all[len(all)-1]
}

// get sends a request and returns the response with its body read.
func get(t testing.TB, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

func newRequest(t testing.TB, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// checkGoroutines fails the test when, once every cleanup has run, more goroutines are
// left than when it started (a few of the runtime's own may come and go).
func checkGoroutines(t testing.TB) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before+2 {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines left, %d before the test:\n%s", n, before, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
