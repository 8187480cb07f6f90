package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// decoyIP is where a client sends its connection in tests of the rule that the client's
// choice of address is never trusted: a server there must see nothing.
const decoyIP = "127.0.0.51"

// tenv is a transparent proxy on the fake internet of env, for one VM, "vm_t", whose
// sandbox has the source address 127.0.0.1. The firewall's redirect is played by
// OriginalDst: each listener of the proxy stands for one original destination.
type tenv struct {
	*env
	tp     *Proxy
	vm     *Source
	vmLive *fakeLive

	mu   sync.Mutex
	dsts map[netip.AddrPort]netip.AddrPort // listener address → original destination
}

func newTransparentEnv(t *testing.T, pol policy.Policy, opts ...func(*Config)) *tenv {
	t.Helper()
	e := newEnv(t, pol, opts...)
	te := &tenv{env: e, dsts: map[netip.AddrPort]netip.AddrPort{}, vmLive: &fakeLive{conns: map[*tracked]struct{}{}}}
	te.vmLive.set.Store(set(t, pol))
	te.vm = &Source{Tenant: "tenant_a", VMID: "vm_t", Live: te.vmLive}
	cfg := e.p.cfg // the explicit proxy's, options included
	cfg.Sessions = nil
	cfg.Sandboxes = &fakeSandboxes{m: map[netip.Addr]*Source{mustAddr("127.0.0.1"): te.vm}}
	cfg.OriginalDst = te.originalDst
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	te.tp = p
	t.Cleanup(func() { p.Close() })
	return te
}

// listen serves the transparent proxy on a new listener whose connections were going to
// dst ("" for connections that were not redirected), and returns its address.
func (te *tenv) listen(dst string) string {
	ln := listen(te.t)
	var d netip.AddrPort
	if dst != "" {
		d = netip.MustParseAddrPort(dst)
	}
	te.mu.Lock()
	te.dsts[ln.Addr().(*net.TCPAddr).AddrPort()] = d
	te.mu.Unlock()
	go te.tp.ServeTransparent(ln)
	return ln.Addr().String()
}

func (te *tenv) originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	te.mu.Lock()
	defer te.mu.Unlock()
	if d := te.dsts[c.LocalAddr().(*net.TCPAddr).AddrPort()]; d.IsValid() {
		return d, nil
	}
	return netip.AddrPort{}, errNotRedirected
}

// dialFrom connects to addr from the source address src.
func (te *tenv) dialFrom(src, addr string) (net.Conn, *bufio.Reader) {
	te.t.Helper()
	d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		te.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	te.t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// tlsGet sends "GET path" over TLS with server name sni (none when "") through addr, and
// returns the response, its body still to read.
func (te *tenv) tlsGet(addr, sni, path string) (*http.Response, error) {
	te.t.Helper()
	c, _ := te.dialFrom("127.0.0.1", addr)
	tc := tls.Client(c, &tls.Config{ServerName: sni, RootCAs: te.ca.Pool, InsecureSkipVerify: sni == ""})
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	host := sni
	if host == "" {
		host = "nosni.example.test"
	}
	if _, err := io.WriteString(tc, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n"); err != nil {
		return nil, err
	}
	br := bufio.NewReader(tc)
	resp, err := http.ReadResponse(br, nil)
	if err == nil {
		resp.Body = closer{resp.Body, br, tc}
	}
	return resp, err
}

// closer ends the connection when its body is closed, as a careful client does: it reads
// to the server's close_notify first. Closing a socket with unread bytes (the server's
// alert) makes the kernel send a reset, and the relay would end with "error", not "eof".
type closer struct {
	io.Reader
	br *bufio.Reader
	c  io.Closer
}

func (c closer) Close() error {
	io.Copy(io.Discard, c.Reader)
	io.Copy(io.Discard, c.br)
	return c.c.Close()
}

// fakeSandboxes finds VMs by source address, in memory.
type fakeSandboxes struct {
	mu sync.Mutex
	m  map[netip.Addr]*Source
}

func (f *fakeSandboxes) BySource(a netip.Addr) (*Source, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.m[a]
	return s, ok
}

// vmRecord checks a record's identity: the VM, no session.
func vmRecord(t *testing.T, r events.Record) {
	t.Helper()
	if r.Tenant != "tenant_a" || r.VMID != "vm_t" || r.SessionID != "" {
		t.Errorf("record identity: tenant %q vm %q session %q, want tenant_a, vm_t and no session", r.Tenant, r.VMID, r.SessionID)
	}
}

func TestTransparentHTTPSBySNI(t *testing.T) {
	te := newTransparentEnv(t, apiOnly)
	addr := te.listen(webIP + ":443")
	resp, err := te.tlsGet(addr, "api.example.test", "/bytes?n=2000000")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || n != 2000000 {
		t.Fatalf("HTTPS through the transparent proxy: %s, %d bytes", resp.Status, n)
	}
	r := te.sink.wait(t, "connect", func(r events.Record) bool { return r.Kind == events.KindConnect })
	vmRecord(t, r)
	if r.Decision != "allow" || r.Host != "api.example.test" || r.IP != webIP || r.Port != 443 || r.Reason != policy.ReasonAllowedDomains || r.DialMS <= 0 {
		t.Errorf("connect record %+v", r)
	}
	cl := te.sink.wait(t, "close", func(r events.Record) bool { return r.Kind == events.KindClose })
	vmRecord(t, cl)
	if cl.BytesDown < 2000000 || cl.BytesUp == 0 || (cl.CloseReason != "eof" && cl.CloseReason != "reset") || cl.IP != webIP {
		t.Errorf("close record %+v", cl)
	}
	if !slices.Contains(te.web.seen(), "sni:api.example.test") {
		t.Errorf("the server saw %v", te.web.seen())
	}
	if len(te.live.tracked()) != 0 || len(te.vmLive.tracked()) != 0 {
		t.Error("a closed tunnel is still tracked")
	}
}

// A denied name, TLS without a name, and not TLS at all: the connection is closed after
// the first bytes and nothing reaches a server.
func TestTransparentTLSRefused(t *testing.T) {
	te := newTransparentEnv(t, policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"*.example.test"}, DeniedDomains: []string{"secret.example.test"}})
	addr := te.listen(webIP + ":443")
	for _, tc := range []struct {
		name, sni, reason string
	}{
		{"denied SNI", "secret.example.test", string(policy.ReasonDeniedDomain)},
		{"SNI outside allowed_domains", "api.other.test", string(policy.ReasonHostNotListed)},
		{"SNI that resolves to loopback", "rebind.example.test", string(policy.ReasonHardDeny)},
		{"no SNI", "", string(policy.ReasonNoHost)},
	} {
		if _, err := te.tlsGet(addr, tc.sni, "/"); err == nil {
			t.Errorf("%s: the handshake succeeded", tc.name)
		}
		r := te.sink.wait(t, tc.name, func(r events.Record) bool { return string(r.Reason) == tc.reason })
		vmRecord(t, r)
		if r.Kind != events.KindConnect || r.Decision != "deny" || r.Port != 443 {
			t.Errorf("%s: record %+v", tc.name, r)
		}
		if tc.sni == "" && r.IP != webIP {
			t.Errorf("%s: the record names %q, want the address the client chose", tc.name, r.IP)
		}
	}
	c, br := te.dialFrom("127.0.0.1", addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
	if n, _ := br.Read(make([]byte, 1)); n != 0 {
		t.Error("plain HTTP to 443 got an answer")
	}
	te.sink.wait(t, "not TLS", func(r events.Record) bool { return r.Reason == policy.ReasonNotTLS && r.Decision == "deny" })
	if seen := te.web.seen(); len(seen) != 0 {
		t.Errorf("the server saw %v", seen)
	}
	if n := te.sink.count("", "allow"); n != 0 {
		t.Errorf("allow records:\n%s", te.sink.dump())
	}
}

// The client's chosen address is never dialled: an allowed name sent to another address
// goes to the address the gateway resolved for the name, on 443 and 80 alike.
func TestTransparentIgnoresChosenAddress(t *testing.T) {
	te := newTransparentEnv(t, apiOnly)
	decoy := startWeb(t, decoyIP, te.ca)
	resp, err := te.tlsGet(te.listen(decoyIP+":443"), "api.example.test", "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "hello from api.example.test\n" {
		t.Fatalf("got %q", body)
	}
	c, br := te.dialFrom("127.0.0.1", te.listen(decoyIP+":80"))
	resp, body2 := te.roundTrip(c, br, "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
	if resp.StatusCode != 200 || body2 != "hello from api.example.test\n" {
		t.Fatalf("HTTP: %s %q", resp.Status, body2)
	}
	if seen := decoy.seen(); len(seen) != 0 {
		t.Errorf("the address the client chose was contacted: %v", seen)
	}
	for _, r := range te.sink.all() {
		if r.IP == decoyIP && r.Decision == "allow" {
			t.Errorf("record %+v", r)
		}
	}
	if seen := te.web.seen(); !slices.Contains(seen, "sni:api.example.test") || !slices.Contains(seen, "api.example.test") {
		t.Errorf("the resolved address saw %v", seen)
	}
}

func TestTransparentHTTP(t *testing.T) {
	te := newTransparentEnv(t, policy.Policy{AllowHTTP: true, AllowedDomains: []string{"api.example.test", "other.example.test"}})
	addr := te.listen(webIP + ":80")
	c, br := te.dialFrom("127.0.0.1", addr)
	for i := 0; i < 2; i++ {
		resp, body := te.roundTrip(c, br, "GET /headers?q=1 HTTP/1.1\r\nHost: API.Example.TEST.\r\nX-End-To-End: yes\r\n\r\n")
		if resp.StatusCode != 200 || !strings.HasPrefix(body, "GET /headers?q=1 api.example.test\n") || !strings.Contains(body, "X-End-To-End: yes") {
			t.Fatalf("request %d: %s %q", i, resp.Status, body)
		}
	}
	if n := te.sink.count(events.KindConnect, "allow"); n != 1 {
		t.Errorf("%d upstream connections for two requests to one host, want 1\n%s", n, te.sink.dump())
	}
	// A switch to another allowed host is decided anew and redialled.
	resp, body := te.roundTrip(c, br, "GET / HTTP/1.1\r\nHost: other.example.test\r\n\r\n")
	if resp.StatusCode != 200 || body != "hello from other.example.test\n" {
		t.Fatalf("other host: %s %q", resp.Status, body)
	}
	if n := te.sink.count(events.KindConnect, "allow"); n != 2 {
		t.Errorf("%d upstream connections, want 2\n%s", n, te.sink.dump())
	}
	// A switch to a denied host on the same connection is refused, and never sent.
	resp, body = te.roundTrip(c, br, "GET / HTTP/1.1\r\nHost: secret.example.test\r\n\r\n")
	if resp.StatusCode != 403 || resp.Header.Get("X-Egress-Decision") != "deny" || resp.Header.Get("X-Egress-Reason") != string(policy.ReasonHostNotListed) {
		t.Fatalf("denied host: %s %v", resp.Status, resp.Header)
	}
	if want := "egressd: GET http://secret.example.test/ denied for VM vm_t: host_not_allowed: the host is not allowed"; !strings.HasPrefix(body, want) || strings.Count(body, "\n") != 1 {
		t.Errorf("body %q, want one line starting %q", body, want)
	}
	if n, _ := br.Read(make([]byte, 1)); n != 0 {
		t.Error("the connection stayed open after a refusal")
	}
	if seen := te.web.seen(); !slices.Equal(seen, []string{"api.example.test", "api.example.test", "other.example.test"}) {
		t.Errorf("the server saw %v", seen)
	}
	for _, r := range te.sink.all() {
		vmRecord(t, r)
	}
	if n := te.sink.count(events.KindRequest, "allow"); n != 3 {
		t.Errorf("%d allowed requests, want 3\n%s", n, te.sink.dump())
	}
	te.sink.wait(t, "upstream closes", func(r events.Record) bool { return te.sink.count(events.KindClose, "") == 2 })
}

func TestTransparentHTTPDenials(t *testing.T) {
	te := newTransparentEnv(t, policy.Policy{AllowHTTP: true, AllowedDomains: []string{"*.example.test"}, DeniedDomains: []string{"secret.example.test"}})
	addr := te.listen(webIP + ":80")
	for _, tt := range []struct {
		request string
		status  int
		reason  string
	}{
		{"GET / HTTP/1.1\r\nHost: secret.example.test", 403, string(policy.ReasonDeniedDomain)},
		{"GET / HTTP/1.1\r\nHost: SECRET.example.test.", 403, string(policy.ReasonDeniedDomain)},
		{"GET / HTTP/1.1\r\nHost: api.other.test", 403, string(policy.ReasonHostNotListed)},
		{"GET / HTTP/1.1\r\nHost: rebind.example.test", 403, string(policy.ReasonHardDeny)},
		{"GET / HTTP/1.1\r\nHost: " + webIP, 403, string(policy.ReasonIPLiteral)},
		{"GET / HTTP/1.1\r\nHost: exa_mple.example.test", 403, string(policy.ReasonBadName)},
		{"GET / HTTP/1.1\r\nHost: api.example.test:8080", 403, string(policy.ReasonHostMismatch)},
		{"GET / HTTP/1.0", 403, string(policy.ReasonNoHost)},
		{"GET / HTTP/1.1\r\nUser-Agent: x", 403, string(policy.ReasonNoHost)},
		{"GET / HTTP/1.1\r\nHost: api.example.test\r\nHost: secret.example.test", 400, ""}, // net/http refuses it
		{"GET / HTTP/1.1\r\nHost: user@api.example.test", 400, string(policy.ReasonBadRequest)},
		{"GET http://secret.example.test/ HTTP/1.1\r\nHost: secret.example.test", 403, string(policy.ReasonDeniedDomain)},
		{"GET http://api.example.test/ HTTP/1.1\r\nHost: secret.example.test", 403, string(policy.ReasonDeniedDomain)}, // judged where seen
		{"GET http://api.example.test/ HTTP/1.1\r\nHost: other.example.test", 403, string(policy.ReasonHostMismatch)},
		{"GET https://api.example.test/ HTTP/1.1\r\nHost: api.example.test", 400, string(policy.ReasonBadRequest)},
		{"CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443", 400, string(policy.ReasonBadRequest)},
	} {
		c, br := te.dialFrom("127.0.0.1", addr)
		resp, body := te.roundTrip(c, br, tt.request+"\r\n\r\n")
		line := strings.SplitN(tt.request, "\r\n", 2)
		if resp.StatusCode != tt.status || resp.Header.Get("X-Egress-Reason") != tt.reason {
			t.Errorf("%q: %s %q, want %d %q", line, resp.Status, body, tt.status, tt.reason)
			continue
		}
		if tt.reason == "" {
			te.sink.wait(t, "malformed", func(r events.Record) bool {
				return r.Reason == policy.ReasonBadRequest && strings.Contains(r.Rule, "malformed")
			})
			continue
		}
		if !strings.HasPrefix(body, "egressd: ") || !strings.Contains(body, "VM vm_t") || strings.Count(body, "\n") != 1 {
			t.Errorf("%q: body %q", line, body)
		}
		r := te.sink.wait(t, tt.reason, func(r events.Record) bool { return string(r.Reason) == tt.reason && r.Kind == events.KindRequest })
		vmRecord(t, r)
	}
	if seen := te.web.seen(); len(seen) != 0 {
		t.Errorf("the server saw %v", seen)
	}
	if n := te.sink.count("", "allow"); n != 0 {
		t.Errorf("allow records:\n%s", te.sink.dump())
	}
	// An absolute URL, which any HTTP/1.1 server must accept, is served by its host.
	c, br := te.dialFrom("127.0.0.1", addr)
	resp, body := te.roundTrip(c, br, "GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
	if resp.StatusCode != 200 || body != "hello from api.example.test\n" {
		t.Errorf("absolute URL: %s %q", resp.Status, body)
	}
}

// A connection from an address of no VM, one that was not redirected, and one redirected
// from a port the firewall should not have redirected are closed without a byte.
func TestTransparentUnknownAndStray(t *testing.T) {
	te := newTransparentEnv(t, apiOnly)
	closed := func(what string, c net.Conn, br *bufio.Reader) {
		t.Helper()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
		if n, err := br.Read(make([]byte, 1)); n != 0 || isTimeout(err) {
			t.Errorf("%s: not closed (%d bytes, %v)", what, n, err)
		}
	}
	for _, dst := range []string{webIP + ":80", webIP + ":443"} {
		c, br := te.dialFrom("127.0.0.9", te.listen(dst))
		closed("unknown source to "+dst, c, br)
		r := te.sink.wait(t, "unknown source", func(r events.Record) bool {
			return r.Reason == policy.ReasonUnknownSandbox && r.Port == int(netip.MustParseAddrPort(dst).Port())
		})
		if r.Decision != "deny" || r.Tenant != "" || r.VMID != "" || r.IP != webIP || !strings.Contains(r.Rule, "127.0.0.9") {
			t.Errorf("record %+v", r)
		}
	}
	before := len(te.sink.all())
	c, br := te.dialFrom("127.0.0.1", te.listen(""))
	closed("not redirected", c, br)
	c, br = te.dialFrom("127.0.0.1", te.listen(webIP+":22"))
	closed("port 22", c, br)
	r := te.sink.wait(t, "port 22", func(r events.Record) bool { return r.Port == 22 })
	vmRecord(t, r)
	if r.Decision != "deny" || r.Reason != policy.ReasonPort {
		t.Errorf("record %+v", r)
	}
	if n := len(te.sink.all()); n != before+1 {
		t.Errorf("records after the unredirected connection:\n%s", te.sink.dump())
	}
	if seen := te.web.seen(); len(seen) != 0 {
		t.Errorf("the server saw %v", seen)
	}
}

func TestTransparentMonitorMode(t *testing.T) {
	te := newTransparentEnv(t, policy.Policy{Mode: policy.Monitor, AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})
	resp, err := te.tlsGet(te.listen(webIP+":443"), "other.example.test", "/")
	if err != nil {
		t.Fatalf("HTTPS in monitor mode: %v", err)
	}
	if body, _ := io.ReadAll(resp.Body); string(body) != "hello from other.example.test\n" {
		t.Errorf("HTTPS in monitor mode: %q", body)
	}
	r := te.sink.wait(t, "would-deny connect", func(r events.Record) bool { return r.Kind == events.KindConnect && r.Port == 443 })
	if r.Decision != "allow" || !r.WouldDeny || r.Reason != policy.ReasonHostNotListed || r.Mode != "monitor" || r.IP != webIP {
		t.Errorf("record %+v, want allow with would_deny", r)
	}
	c, br := te.dialFrom("127.0.0.1", te.listen(webIP+":80"))
	resp, body := te.roundTrip(c, br, "GET / HTTP/1.1\r\nHost: other.example.test\r\n\r\n")
	if resp.StatusCode != 200 || body != "hello from other.example.test\n" {
		t.Errorf("HTTP in monitor mode: %s %q", resp.Status, body)
	}
	r = te.sink.wait(t, "would-deny request", func(r events.Record) bool { return r.Kind == events.KindRequest })
	if r.Decision != "allow" || !r.WouldDeny || r.Reason != policy.ReasonHTTPOff {
		t.Errorf("record %+v, want allow with would_deny", r)
	}
	// Hard denials, and the lack of a name, hold in monitor mode.
	resp, _ = te.roundTrip(c, br, "GET / HTTP/1.1\r\nHost: rebind.example.test\r\n\r\n")
	if resp.StatusCode != 403 || resp.Header.Get("X-Egress-Reason") != string(policy.ReasonHardDeny) {
		t.Errorf("monitor mode, loopback answer: %s", resp.Status)
	}
	if _, err := te.tlsGet(te.listen(webIP+":443"), "", "/"); err == nil {
		t.Error("monitor mode: TLS without SNI went through")
	}
}

// A new policy that denies a live transparent tunnel, or plain-HTTP upstream, cuts it.
func TestTransparentPolicyChange(t *testing.T) {
	te := newTransparentEnv(t, apiOnly)
	resp, err := te.tlsGet(te.listen(webIP+":443"), "api.example.test", "/slow?n=500")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	if conns := te.vmLive.tracked(); len(conns) != 1 || conns[0] != (policy.Conn{Host: "api.example.test", IP: mustAddr(webIP), Port: 443, Transport: policy.TCP}) {
		t.Errorf("tracked by the VM: %+v", conns)
	}
	cut := time.Now()
	te.vmLive.publish(set(t, policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"other.example.test"}}))
	n, _ := io.Copy(io.Discard, resp.Body)
	if d := time.Since(cut); d > time.Second || n >= 500*1024-4096 {
		t.Errorf("transfer went on for %v (%d bytes) after the policy denied it", d, n)
	}
	r := te.sink.wait(t, "close by policy", func(r events.Record) bool { return r.Kind == events.KindClose })
	vmRecord(t, r)
	if r.CloseReason != "policy" {
		t.Errorf("close reason %q, want policy", r.CloseReason)
	}

	te.vmLive.publish(set(t, apiOnly))
	c, br := te.dialFrom("127.0.0.1", te.listen(webIP+":80"))
	io.WriteString(c, "GET /slow?n=500 HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, 4096))
	cut = time.Now()
	te.vmLive.publish(set(t, policy.Policy{AllowHTTP: true, AllowedDomains: []string{"other.example.test"}}))
	io.Copy(io.Discard, resp.Body)
	if d := time.Since(cut); d > time.Second {
		t.Errorf("plain transfer went on for %v after the policy denied it", d)
	}
	te.sink.wait(t, "plain close by policy", func(r events.Record) bool {
		return r.Kind == events.KindClose && r.Port == 80 && r.CloseReason == "policy"
	})
}

// The connection cap counts per VM, apart from the explicit proxy's sessions.
func TestTransparentCapPerVM(t *testing.T) {
	te := newTransparentEnv(t, apiOnly, func(c *Config) { c.MaxTunnelsPerSession = 1 })
	addr := te.listen(webIP + ":443")
	if _, err := te.tlsGet(addr, "api.example.test", "/slow?n=100"); err != nil { // open until the test ends
		t.Fatal(err)
	}
	if _, err := te.tlsGet(addr, "api.example.test", "/"); err == nil {
		t.Error("a second tunnel over the cap of 1 went through")
	}
	r := te.sink.wait(t, "cap", func(r events.Record) bool { return r.Reason == policy.ReasonTooMany })
	if !strings.Contains(r.Rule, "VM vm_t has 1 open connections") {
		t.Errorf("record %+v", r)
	}
	// The VM's tunnel does not take the session's slot in the explicit proxy.
	_, _, cresp, _ := te.connect("api.example.test:443")
	if cresp.StatusCode != 200 {
		t.Errorf("explicit CONNECT of a session while the VM is at its cap: %s", cresp.Status)
	}
}
