package proxy

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/dialer"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/resolve"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// Addresses (DESIGN §10): the proxy and DNS on 127.0.0.1; fake public web servers inside
// Classifier.Public 127.0.0.0/26, on addresses no other package's tests use; answers that
// must be refused on 127.0.0.100, loopback outside Public.
const (
	webIP     = "127.0.0.50"
	privateIP = "127.0.0.100"
)

var classifier = &policy.Classifier{Public: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/26")}}

// env is one proxy with its fake internet and one session, "ses_a".
type env struct {
	t     *testing.T
	p     *Proxy
	addr  string
	dns   *testnet.DNS
	ca    *testnet.CA
	web   *web
	sink  *sink
	auth  *fakeSessions
	sess  *Source
	live  *fakeLive
	token string
}

func newEnv(t *testing.T, pol policy.Policy, opts ...func(*Config)) *env {
	t.Helper()
	testnet.RequireRoot(t) // the web rule opens ports 80 and 443 only: the fake servers need them
	e := &env{t: t, dns: testnet.StartDNS(t, "127.0.0.1"), ca: testnet.NewCA(t), sink: &sink{}, token: "tok_a"}
	for _, name := range []string{"api.example.test", "other.example.test", "secret.example.test", "xn--bcher-kva.example.test"} {
		e.dns.Set(name, webIP)
	}
	e.dns.Set("rebind.example.test", privateIP)
	e.web = startWeb(t, webIP, e.ca)
	e.auth = &fakeSessions{m: map[string]authEntry{}}
	e.sess, e.live = e.auth.add("ses_a", e.token, set(t, pol))

	cfg := Config{
		Sessions:         e.auth,
		Dialer:           &dialer.Dialer{Resolver: &resolve.Resolver{Upstream: e.dns.Addr}, Timeout: 3 * time.Second},
		Sink:             e.sink,
		Logger:           slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		HandshakeTimeout: 3 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.p, e.addr = p, ln.Addr().String()
	go p.Serve(ln)
	t.Cleanup(func() { p.Close() })
	return e
}

func set(t testing.TB, pols ...policy.Policy) *policy.Effective {
	t.Helper()
	var layers []policy.Layered
	for i, p := range pols {
		m, err := policy.Compile(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		l := policy.LayerSession
		if i > 0 {
			l = policy.LayerVM
		}
		layers = append(layers, policy.Layered{Layer: l, Matcher: m})
	}
	return policy.NewEffective(classifier, layers...)
}

// proxyURL is the session's proxy_url.
func (e *env) proxyURL() *url.URL {
	return &url.URL{Scheme: "http", User: url.UserPassword(e.sess.ID, e.token), Host: e.addr}
}

// client is a Go HTTP client through the proxy, trusting the test CA.
func (e *env) client() *http.Client {
	tr := &http.Transport{
		Proxy:           http.ProxyURL(e.proxyURL()),
		TLSClientConfig: &tls.Config{RootCAs: e.ca.Pool},
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func (e *env) authHeader() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(e.sess.ID+":"+e.token))
}

// dial opens a raw connection to the proxy.
func (e *env) dial() (net.Conn, *bufio.Reader) {
	e.t.Helper()
	c, err := net.DialTimeout("tcp", e.addr, 3*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	e.t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// roundTrip writes raw and reads one response, with its body.
func (e *env) roundTrip(c net.Conn, br *bufio.Reader, raw string) (*http.Response, string) {
	e.t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		e.t.Fatal(err)
	}
	method, _, _ := strings.Cut(raw, " ")
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		e.t.Fatalf("reading the answer to %q: %v", strings.SplitN(raw, "\r\n", 2)[0], err)
	}
	if method == http.MethodConnect && resp.StatusCode == 200 {
		return resp, ""
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// connect sends "CONNECT target" with the session's credentials.
func (e *env) connect(target string) (net.Conn, *bufio.Reader, *http.Response, string) {
	e.t.Helper()
	c, br := e.dial()
	resp, body := e.roundTrip(c, br, fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n", target, target, e.authHeader()))
	return c, br, resp, body
}

// testWriter sends the proxy's logs to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// sink keeps records.
type sink struct {
	mu   sync.Mutex
	recs []events.Record
}

func (s *sink) Record(r events.Record) {
	s.mu.Lock()
	s.recs = append(s.recs, r)
	s.mu.Unlock()
}

// reset forgets the records so far.
func (s *sink) reset() {
	s.mu.Lock()
	s.recs = nil
	s.mu.Unlock()
}

func (s *sink) all() []events.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]events.Record(nil), s.recs...)
}

// wait returns the first record that match accepts, waiting a bounded time: close
// records come when a connection ends, on the proxy's goroutine.
func (s *sink) wait(t *testing.T, what string, match func(events.Record) bool) events.Record {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, r := range s.all() {
			if match(r) {
				return r
			}
		}
	}
	t.Fatalf("no record %s among:\n%s", what, s.dump())
	return events.Record{}
}

func (s *sink) dump() string {
	var b strings.Builder
	for _, r := range s.all() {
		fmt.Fprintf(&b, "  %s %s %s:%d ip=%s reason=%q would_deny=%v close=%q up=%d down=%d\n",
			r.Kind, r.Decision, r.Host, r.Port, r.IP, r.Reason, r.WouldDeny, r.CloseReason, r.BytesUp, r.BytesDown)
	}
	return b.String()
}

func (s *sink) count(kind, decision string) int {
	n := 0
	for _, r := range s.all() {
		if (kind == "" || r.Kind == kind) && (decision == "" || r.Decision == decision) {
			n++
		}
	}
	return n
}

// fakeSessions is the proxy's view of sessions, in memory.
type fakeSessions struct {
	mu sync.Mutex
	m  map[string]authEntry
}

type authEntry struct {
	token string
	sess  *Source
}

var errUnauthorized = errors.New("no open session has these credentials")

func (f *fakeSessions) add(id, token string, s *policy.Effective) (*Source, *fakeLive) {
	live := &fakeLive{conns: map[*tracked]struct{}{}, done: make(chan struct{})}
	live.set.Store(s)
	sess := &Source{Tenant: "tenant_a", ID: id, VMID: "vm_a", Live: live}
	f.mu.Lock()
	f.m[id] = authEntry{token, sess}
	f.mu.Unlock()
	return sess, live
}

func (f *fakeSessions) Authenticate(id, token string) (*Source, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e, ok := f.m[id]; ok && e.token == token {
		return e.sess, nil
	}
	return nil, errUnauthorized
}

// end ends a session as the view does: credentials stop working, connections are cut.
func (f *fakeSessions) end(id string) {
	f.mu.Lock()
	e := f.m[id]
	delete(f.m, id)
	f.mu.Unlock()
	l := e.sess.Live.(*fakeLive)
	close(l.done)
	l.cancelAll("session ended")
}

// fakeLive behaves as view.Session does for Set and Track.
type fakeLive struct {
	set   atomic.Pointer[policy.Effective]
	mu    sync.Mutex
	conns map[*tracked]struct{}
	done  chan struct{} // closed when the session ends; nil: never
}

type tracked struct {
	c      policy.Conn
	cancel func(string)
	once   sync.Once
}

func (t *tracked) fire(reason string) { t.once.Do(func() { go t.cancel(reason) }) }

func (l *fakeLive) Effective() *policy.Effective { return l.set.Load() }

func (l *fakeLive) Done() <-chan struct{} { return l.done }

func (l *fakeLive) Track(c policy.Conn, cancel func(string)) func() {
	t := &tracked{c: c, cancel: cancel}
	l.mu.Lock()
	l.conns[t] = struct{}{}
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.conns, t)
		l.mu.Unlock()
	}
}

func (l *fakeLive) tracked() []policy.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []policy.Conn
	for t := range l.conns {
		out = append(out, t.c)
	}
	return out
}

// publish replaces the policy and cancels what it denies.
func (l *fakeLive) publish(s *policy.Effective) {
	l.set.Store(s)
	l.mu.Lock()
	defer l.mu.Unlock()
	for t := range l.conns {
		if !s.Decide(t.c).Allow {
			delete(l.conns, t)
			t.fire("policy")
		}
	}
}

func (l *fakeLive) cancelAll(reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for t := range l.conns {
		delete(l.conns, t)
		t.fire(reason)
	}
}

// web is a fake site on ip:80 and ip:443 (TLS from the test CA, for any name).
type web struct {
	mu    sync.Mutex
	hosts []string // Host of every request, and the SNI of every TLS handshake as "sni:<name>"
	// serve serves the site on one more address ("127.0.0.50:0": a port of its own), over
	// TLS or not, and returns the address.
	serve func(addr string, useTLS bool) string
}

func (w *web) log(s string) {
	w.mu.Lock()
	w.hosts = append(w.hosts, s)
	w.mu.Unlock()
}

func (w *web) seen() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.hosts...)
}

func startWeb(t *testing.T, ip string, ca *testnet.CA) *web {
	t.Helper()
	w := &web{}
	mux := http.NewServeMux()
	mux.Handle("/", testnet.Handler())
	mux.HandleFunc("/echo", func(rw http.ResponseWriter, r *http.Request) {
		io.Copy(rw, r.Body)
	})
	mux.HandleFunc("/headers", func(rw http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(rw, "%s %s %s\n", r.Method, r.RequestURI, r.Host)
		r.Header.Write(rw)
	})
	mux.HandleFunc("/trailers", func(rw http.ResponseWriter, r *http.Request) {
		// Says which request trailers arrived, and sends trailers of its own.
		body, _ := io.ReadAll(r.Body)
		rw.Header().Set("Trailer", "X-Server-Trailer")
		fmt.Fprintf(rw, "body %s, trailers %v\n", body, r.Trailer)
		rw.Header().Set("X-Server-Trailer", "from the server")
	})
	mux.HandleFunc("/close-delimited", func(rw http.ResponseWriter, r *http.Request) {
		// A response whose body ends when the server closes: no length, not chunked.
		c, brw, err := rw.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
		brw.WriteString(strings.Repeat("z", 100000))
		brw.Flush()
	})
	mux.HandleFunc("/then-close", func(rw http.ResponseWriter, r *http.Request) {
		// A complete, kept-alive response, after which the server drops the connection, as
		// a server whose keep-alive timeout ran out does.
		c, brw, err := rw.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		brw.Flush()
		c.Close()
	})
	logged := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.log(r.Host)
		mux.ServeHTTP(rw, r)
	})
	tlsCfg := ca.ServerConfig().Clone()
	get := tlsCfg.GetCertificate
	tlsCfg.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		w.log("sni:" + h.ServerName)
		if get == nil {
			return nil, errors.New("no certificate")
		}
		return get(h)
	}
	w.serve = func(addr string, useTLS bool) string {
		ln, err := listenFixed(addr)
		if err != nil {
			t.Fatalf("listen %s: %v", addr, err)
		}
		srv := &http.Server{Handler: logged, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
		if useTLS {
			ln = tls.NewListener(ln, tlsCfg)
		}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return ln.Addr().String()
	}
	w.serve(net.JoinHostPort(ip, "80"), false)
	w.serve(net.JoinHostPort(ip, "443"), true)
	return w
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// echo serves an echo on webIP at a port of its own (allowed_cidrs opens every port), and
// returns its address; banner, if set, is sent first, as a server that speaks first does.
func echo(t *testing.T, banner string) string {
	t.Helper()
	ln, err := net.Listen("tcp", webIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				io.WriteString(c, banner)
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// listenFixed listens on addr, a fixed port (the fake web's :80 and :443), trying again for up
// to two seconds while the address is in use: a connection of the previous test on that
// address may still be closing when the next test's site starts.
func listenFixed(addr string) (net.Listener, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return ln, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
