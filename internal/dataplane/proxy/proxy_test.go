package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

var apiOnly = policy.Policy{AllowHTTPS: true, AllowHTTP: true, AllowedDomains: []string{"api.example.test"}}

func TestConnectAllowedAndRelayed(t *testing.T) {
	e := newEnv(t, apiOnly)
	c := e.client()
	resp, err := c.Get("https://api.example.test/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello from api.example.test\n" {
		t.Fatalf("HTTPS through the proxy: %s %q", resp.Status, body)
	}
	// A bulk transfer arrives whole through the relay.
	resp, err = c.Get("https://api.example.test/bytes?n=3000000")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n != 3000000 {
		t.Fatalf("bulk transfer: %d bytes", n)
	}

	allow := e.sink.wait(t, "connect allow", func(r events.Record) bool { return r.Kind == events.KindConnect })
	want := events.Record{Kind: events.KindConnect, Tenant: "tenant_a", VMID: "vm_a", SessionID: "ses_a", Decision: "allow",
		Reason: policy.ReasonAllowedDomains, Message: policy.ReasonAllowedDomains.Message(), Rule: "allowed_domains api.example.test", Layer: "session", Mode: "enforce",
		Transport: "tcp", Host: "api.example.test", IP: webIP, Port: 443}
	got := allow
	got.Time, got.DialMS = time.Time{}, 0
	if !reflect.DeepEqual(got, want) {
		t.Errorf("connect record\n got %+v\nwant %+v", got, want)
	}
	if allow.DialMS <= 0 {
		t.Errorf("DialMS = %v, want the dial latency", allow.DialMS)
	}
	if conns := e.live.tracked(); len(conns) != 1 || conns[0] != (policy.Conn{Host: "api.example.test", IP: mustAddr(webIP), Port: 443, Transport: policy.TCP}) {
		t.Errorf("tracked connections: %+v, want the tunnel as allowed", conns)
	}
	c.CloseIdleConnections()
	cl := e.sink.wait(t, "close", func(r events.Record) bool { return r.Kind == events.KindClose })
	// A TLS client that closes with the server's close_notify unread ends with a reset:
	// both are ordinary ends.
	if cl.BytesDown < 3000000 || cl.BytesUp == 0 || (cl.CloseReason != "eof" && cl.CloseReason != "reset") || cl.Host != "api.example.test" || cl.IP != webIP || cl.DurationMS <= 0 {
		t.Errorf("close record %+v", cl)
	}
	if len(e.live.tracked()) != 0 {
		t.Error("the closed tunnel is still tracked")
	}
	if !slices.Contains(e.web.seen(), "sni:api.example.test") {
		t.Errorf("the server saw %v", e.web.seen())
	}
}

func TestProxyAuthentication(t *testing.T) {
	e := newEnv(t, apiOnly)
	wrong := "Basic " + b64("ses_a:wrong")
	for _, tc := range []struct{ name, header string }{
		{"none", ""},
		{"wrong token", "Proxy-Authorization: " + wrong + "\r\n"},
		{"unknown session", "Proxy-Authorization: Basic " + b64("ses_x:tok_a") + "\r\n"},
		{"not basic", "Proxy-Authorization: Bearer tok_a\r\n"},
		{"garbage", "Proxy-Authorization: Basic !!!\r\n"},
	} {
		for _, req := range []string{
			"CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\n",
			"GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\n",
		} {
			c, br := e.dial()
			resp, body := e.roundTrip(c, br, req+tc.header+"\r\n")
			if resp.StatusCode != http.StatusProxyAuthRequired || resp.Header.Get("Proxy-Authenticate") != `Basic realm="egressd"` {
				t.Errorf("%s, %s: %s %v", tc.name, strings.Fields(req)[0], resp.Status, resp.Header)
			}
			if !strings.HasPrefix(body, "egressd: ") {
				t.Errorf("%s: body %q", tc.name, body)
			}
		}
	}
	if n := len(e.web.seen()); n != 0 {
		t.Errorf("unauthenticated requests reached the server: %v", e.web.seen())
	}
	// Every request on a kept-alive connection is authenticated: a later one without
	// credentials is refused.
	c, br := e.dial()
	resp, _ := e.roundTrip(c, br, "GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\nProxy-Authorization: "+e.authHeader()+"\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("first request: %s", resp.Status)
	}
	resp, _ = e.roundTrip(c, br, "GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
	if resp.StatusCode != http.StatusProxyAuthRequired {
		t.Errorf("second request without credentials: %s", resp.Status)
	}
}

func TestDenials(t *testing.T) {
	e := newEnv(t, policy.Policy{
		AllowHTTPS: true, AllowHTTP: true,
		AllowedDomains: []string{"api.example.test", "rebind.example.test", "*.example.test"},
		DeniedDomains:  []string{"secret.example.test", "bücher.example.test"},
	})
	tests := []struct {
		request string // the request line and headers after it, without credentials
		status  int
		reason  string
	}{
		{"CONNECT api.example.test:22", 403, string(policy.ReasonPort)},
		{"CONNECT 127.0.0.50:443", 403, string(policy.ReasonIPLiteral)},
		{"CONNECT [::ffff:127.0.0.50]:443", 403, string(policy.ReasonIPLiteral)},
		{"CONNECT rebind.example.test:443", 403, string(policy.ReasonHardDeny)},
		{"CONNECT secret.example.test:443", 403, string(policy.ReasonDeniedDomain)},
		{"CONNECT SECRET.Example.TEST.:443", 403, string(policy.ReasonDeniedDomain)},
		{"CONNECT xn--bcher-kva.example.test:443", 403, string(policy.ReasonDeniedDomain)},
		{"CONNECT BÜCHER.example.test:443", 403, string(policy.ReasonDeniedDomain)},
		{"CONNECT ｓｅｃｒｅｔ.example.test:443", 403, string(policy.ReasonDeniedDomain)},
		{"CONNECT 127.1:443", 403, string(policy.ReasonBadName)},
		{"CONNECT exa_mple.example.test:443", 403, string(policy.ReasonBadName)},
		{"CONNECT user@api.example.test:443", 400, string(policy.ReasonBadRequest)},
		{"CONNECT api.example.test", 400, string(policy.ReasonBadRequest)},
		{"CONNECT api.example.test:0", 400, string(policy.ReasonBadRequest)},
		{"CONNECT api.example.test%2f:443", 400, ""}, // net/http refuses it before the proxy reads it
		{"CONNECT [fe80::1%25eth0]:443", 400, string(policy.ReasonBadRequest)},
		{"GET http://secret.example.test/", 403, string(policy.ReasonDeniedDomain)},
		{"GET http://SECRET.example.test./", 403, string(policy.ReasonDeniedDomain)},
		{"GET http://api.example.test:8080/", 403, string(policy.ReasonPort)},
		{"GET http://127.0.0.50/", 403, string(policy.ReasonIPLiteral)},
		{"GET http://rebind.example.test/", 403, string(policy.ReasonHardDeny)},
		{"GET http://user@api.example.test/", 400, string(policy.ReasonBadRequest)},
		{"GET https://api.example.test/", 400, string(policy.ReasonBadRequest)},
		{"GET ftp://api.example.test/", 400, string(policy.ReasonBadRequest)},
		{"GET /path", 400, string(policy.ReasonBadRequest)},
		{"GET http://api.example.test/ HTTP/1.1\r\nHost: secret.example.test", 403, string(policy.ReasonDeniedDomain)}, // judged where seen
		{"GET http://api.example.test/ HTTP/1.1\r\nHost: other.example.test", 403, string(policy.ReasonHostMismatch)},
		{"GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test:8080", 403, string(policy.ReasonHostMismatch)},
		{"GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test@secret.example.test", 403, string(policy.ReasonHostMismatch)},
	}
	parserRefused := 0
	for _, tt := range tests {
		line, extra, _ := strings.Cut(tt.request, "\r\n")
		if !strings.HasSuffix(line, "HTTP/1.1") {
			line += " HTTP/1.1"
		}
		if extra == "" {
			target := strings.Fields(line)[1]
			host := strings.TrimPrefix(target, "http://")
			host, _, _ = strings.Cut(host, "/")
			extra = "Host: " + host
		}
		c, br := e.dial()
		resp, body := e.roundTrip(c, br, line+"\r\n"+extra+"\r\nProxy-Authorization: "+e.authHeader()+"\r\n\r\n")
		if resp.StatusCode != tt.status {
			t.Errorf("%s: %s %q, want %d", tt.request, resp.Status, body, tt.status)
			continue
		}
		if tt.reason == "" {
			parserRefused++
			continue
		}
		if got := resp.Header.Get("X-Egress-Decision"); got != "deny" {
			t.Errorf("%s: X-Egress-Decision %q", tt.request, got)
		}
		if got := resp.Header.Get("X-Egress-Reason"); got != tt.reason {
			t.Errorf("%s: X-Egress-Reason %q, want %q (%s)", tt.request, got, tt.reason, body)
		}
		if !strings.HasPrefix(body, "egressd: ") || !strings.Contains(body, "ses_a") || strings.Count(body, "\n") != 1 || !strings.Contains(body, " — ") {
			t.Errorf("%s: body %q, want one line naming the session and what to do", tt.request, body)
		}
		// The connection is closed after a refusal.
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := br.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Errorf("%s: the connection stayed open", tt.request)
		}
	}
	for _, h := range e.web.seen() {
		if strings.Contains(strings.ToLower(h), "secret") || strings.Contains(h, "bcher") || strings.Contains(h, "8080") {
			t.Errorf("a denied host reached the server: %s", h)
		}
	}
	if len(e.web.seen()) != 0 {
		t.Errorf("the server saw %v; every request was denied", e.web.seen())
	}
	// Every denial was recorded, with no allow.
	if n := e.sink.count("", "deny"); n != len(tests)-parserRefused {
		t.Errorf("%d deny records for %d denials:\n%s", n, len(tests), e.sink.dump())
	}
	if n := e.sink.count("", "allow"); n != 0 {
		t.Errorf("allow records:\n%s", e.sink.dump())
	}
	// The message says what to change.
	_, _, resp, body := e.connect("api.example.test:22")
	if want := "egressd: CONNECT api.example.test:22 denied for session ses_a: port_not_allowed: the port is not allowed"; !strings.HasPrefix(body, want) {
		t.Errorf("body %q, want it to start %q", body, want)
	}
	if resp.Header.Get("X-Egress-Rule") == "" {
		t.Error("no X-Egress-Rule")
	}
}

func TestSNIMustMatchConnectHost(t *testing.T) {
	e := newEnv(t, apiOnly)
	for _, tc := range []struct {
		name   string
		hello  func(net.Conn) error
		reason string
	}{
		{"other SNI", func(c net.Conn) error {
			return tls.Client(c, &tls.Config{ServerName: "other.example.test", RootCAs: e.ca.Pool}).Handshake()
		}, string(policy.ReasonSNIMismatch)},
		{"no SNI", func(c net.Conn) error {
			return tls.Client(c, &tls.Config{InsecureSkipVerify: true}).Handshake()
		}, string(policy.ReasonNoHost)},
		{"not TLS", func(c net.Conn) error {
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
			_, err := http.ReadResponse(bufio.NewReader(c), nil)
			return err
		}, string(policy.ReasonNotTLS)},
	} {
		c, _, resp, _ := e.connect("api.example.test:443")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: CONNECT %s", tc.name, resp.Status)
		}
		if err := tc.hello(c); err == nil {
			t.Errorf("%s: the exchange succeeded", tc.name)
		}
		r := e.sink.wait(t, tc.name, func(r events.Record) bool { return r.Decision == "deny" && string(r.Reason) == tc.reason })
		if r.Kind != events.KindConnect || r.Host != "api.example.test" || r.IP != webIP {
			t.Errorf("%s: record %+v", tc.name, r)
		}
	}
	if seen := e.web.seen(); len(seen) != 0 {
		t.Errorf("the server saw %v", seen)
	}
	if n := e.sink.count("", "allow"); n != 0 {
		t.Errorf("refused tunnels were recorded as allowed:\n%s", e.sink.dump())
	}
	for deadline := time.Now().Add(3 * time.Second); len(e.live.tracked()) != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("refused tunnels are still tracked")
		}
	}
}

func TestIPLiteralInsideAllowedCIDRs(t *testing.T) {
	e := newEnv(t, policy.Policy{AllowedCIDRs: []string{webIP + "/32"}})
	target := echo(t, "")
	c, br, resp, body := e.connect(target)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: %s %q", target, resp.Status, body)
	}
	io.WriteString(c, "ping through the tunnel")
	got := make([]byte, len("ping through the tunnel"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping through the tunnel" {
		t.Fatalf("echo: %q %v", got, err)
	}
	r := e.sink.wait(t, "connect", func(r events.Record) bool { return r.Kind == events.KindConnect })
	if r.Decision != "allow" || r.Reason != policy.ReasonAllowedCIDRs || r.Host != "" || r.IP != webIP {
		t.Errorf("record %+v", r)
	}
	// An IP literal on 443 inside allowed_cidrs carries no SNI check: TLS to an address
	// has no server name.
	c, _, resp, _ = e.connect(webIP + ":443")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s:443: %s", webIP, resp.Status)
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Errorf("TLS to an allowed address: %v", err)
	}
}

func TestMonitorMode(t *testing.T) {
	e := newEnv(t, policy.Policy{Mode: policy.Monitor, AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})
	c := e.client()
	for _, u := range []string{"https://other.example.test/", "http://other.example.test/"} {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("%s in monitor mode: %v", u, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "hello from other.example.test\n" {
			t.Fatalf("%s in monitor mode: %s %q", u, resp.Status, body)
		}
	}
	r := e.sink.wait(t, "would-deny connect", func(r events.Record) bool { return r.Kind == events.KindConnect && r.Port == 443 })
	if r.Decision != "allow" || !r.WouldDeny || r.Reason != policy.ReasonHostNotListed || r.Mode != "monitor" {
		t.Errorf("record %+v, want allow with would_deny", r)
	}
	r = e.sink.wait(t, "would-deny request", func(r events.Record) bool { return r.Kind == events.KindRequest })
	if r.Decision != "allow" || !r.WouldDeny || r.Reason != policy.ReasonHTTPOff {
		t.Errorf("record %+v, want allow with would_deny", r)
	}
	// Hard denials hold in monitor mode.
	_, _, resp, _ := e.connect("rebind.example.test:443")
	if resp.StatusCode != 403 || resp.Header.Get("X-Egress-Reason") != string(policy.ReasonHardDeny) {
		t.Errorf("monitor mode, loopback answer: %s", resp.Status)
	}
}

func TestTunnelCap(t *testing.T) {
	e := newEnv(t, apiOnly, func(c *Config) { c.MaxTunnelsPerSession = 2 })
	var open []net.Conn
	for i := 0; i < 2; i++ {
		c, _, resp, _ := e.connect("api.example.test:80")
		if resp.StatusCode != 200 {
			t.Fatalf("tunnel %d: %s", i, resp.Status)
		}
		open = append(open, c)
	}
	_, _, resp, body := e.connect("api.example.test:80")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("X-Egress-Reason") != string(policy.ReasonTooMany) || !strings.Contains(body, "2 open connections") {
		t.Fatalf("third tunnel: %s %q", resp.Status, body)
	}
	// Plain HTTP counts too.
	c, br := e.dial()
	resp, _ = e.roundTrip(c, br, "GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\nProxy-Authorization: "+e.authHeader()+"\r\n\r\n")
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("plain request over the cap: %s", resp.Status)
	}
	// Closing a tunnel frees its slot.
	open[0].Close()
	e.sink.wait(t, "close", func(r events.Record) bool { return r.Kind == events.KindClose })
	_, _, resp, _ = e.connect("api.example.test:80")
	if resp.StatusCode != 200 {
		t.Errorf("after a tunnel closed: %s", resp.Status)
	}
}

// A new policy that denies a live tunnel, or a plain-HTTP upstream, closes it at once; so
// does the end of the session, which also revokes the credentials.
func TestPolicyChangeAndSessionEnd(t *testing.T) {
	e := newEnv(t, apiOnly)
	c := e.client()
	resp, err := c.Get("https://api.example.test/slow?n=500") // ten seconds of data
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	e.live.publish(set(t, policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"other.example.test"}}))
	n, _ := io.Copy(io.Discard, resp.Body)
	if d := time.Since(cut); d > time.Second || n >= 500*1024-4096 {
		t.Errorf("transfer went on for %v (%d bytes) after the policy denied it", d, n)
	}
	r := e.sink.wait(t, "close by policy", func(r events.Record) bool { return r.Kind == events.KindClose })
	if r.CloseReason != "policy" {
		t.Errorf("close reason %q, want policy", r.CloseReason)
	}

	// A plain-HTTP exchange in progress is cut too.
	e.live.publish(set(t, apiOnly))
	resp, err = c.Get("http://api.example.test/slow?n=500")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, 4096))
	cut = time.Now()
	e.auth.end("ses_a")
	io.Copy(io.Discard, resp.Body)
	if d := time.Since(cut); d > time.Second {
		t.Errorf("plain transfer went on for %v after the session ended", d)
	}
	e.sink.wait(t, "close by session end", func(r events.Record) bool { return r.Kind == events.KindClose && r.CloseReason == "session ended" })
	cc, br := e.dial()
	resp, _ = e.roundTrip(cc, br, "GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\nProxy-Authorization: "+e.authHeader()+"\r\n\r\n")
	if resp.StatusCode != http.StatusProxyAuthRequired {
		t.Errorf("ended session: %s, want 407", resp.Status)
	}
}

func TestCloseEndsTunnels(t *testing.T) {
	e := newEnv(t, apiOnly)
	c, br, resp, _ := e.connect("api.example.test:80")
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	done := make(chan error, 1)
	go func() {
		_, err := br.ReadByte()
		done <- err
	}()
	e.p.Close()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("the tunnel outlived Close")
	}
	r := e.sink.wait(t, "close", func(r events.Record) bool { return r.Kind == events.KindClose })
	if r.CloseReason != "shutdown" {
		t.Errorf("close reason %q", r.CloseReason)
	}
	c.Close()
	if _, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
		t.Error("the proxy still accepts after Close")
	}
}

func TestHeaderLimits(t *testing.T) {
	e := newEnv(t, apiOnly, func(c *Config) { c.MaxHeaderBytes = 4096 })
	c, br := e.dial()
	resp, _ := e.roundTrip(c, br, "GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\nX-Big: "+strings.Repeat("b", 8000)+"\r\n\r\n")
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversized header: %s", resp.Status)
	}
	c, br = e.dial()
	resp, _ = e.roundTrip(c, br, "NOT HTTP\r\n\r\n")
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("garbage: %s", resp.Status)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestTunnelIdleTimeout(t *testing.T) {
	e := newEnv(t, policy.Policy{AllowedCIDRs: []string{webIP + "/32"}}, func(c *Config) { c.IdleTimeout = 200 * time.Millisecond })
	_, br, resp, _ := e.connect(echo(t, ""))
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	start := time.Now()
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("read a byte from a silent tunnel")
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 3*time.Second {
		t.Errorf("the idle tunnel closed after %v", d)
	}
	r := e.sink.wait(t, "close", func(r events.Record) bool { return r.Kind == events.KindClose })
	if r.CloseReason != "idle" {
		t.Errorf("close reason %q, want idle", r.CloseReason)
	}
}

// Shutdown closes connections that wait for a request at once, and cuts a tunnel when its
// context ends.
func TestShutdown(t *testing.T) {
	e := newEnv(t, policy.Policy{AllowHTTP: true, AllowedDomains: []string{"api.example.test"}, AllowedCIDRs: []string{webIP + "/32"}})
	idle, idleBr := e.dial()
	resp, _ := e.roundTrip(idle, idleBr, "GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\nProxy-Authorization: "+e.authHeader()+"\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	_, tunnelBr, resp, _ := e.connect(echo(t, ""))
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.p.Shutdown(ctx) }()
	idle.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := idleBr.ReadByte(); err == nil || isTimeout(err) {
		t.Errorf("the idle keep-alive connection was not closed at once: %v", err)
	}
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return after its context ended")
	}
	tunnelBr.ReadByte() // closed, not hanging: the test's deadline would fail it
	e.sink.wait(t, "tunnel close", func(r events.Record) bool { return r.Kind == events.KindClose && r.CloseReason == "shutdown" })
}
