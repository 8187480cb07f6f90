package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/socks5"
	"github.com/egressd/egressd/policy"
)

// Attacks on the SOCKS5 front and allowed_tcp through the explicit proxy: each test tries
// one way around a "must not" of DESIGN §2.6, with its variants.

// rawSOCKS sends the session's greeting and credentials, then req (a raw request and
// anything after it), and returns the reply code, 0xff when the server closed without one.
func (e *env) rawSOCKS(addr, req string) (net.Conn, *bufio.Reader, socks5.Reply) {
	e.t.Helper()
	c := socksDial(e.t, addr)
	io.WriteString(c, "\x05\x01\x02\x01\x05ses_a\x05tok_a"+req)
	br := bufio.NewReader(c)
	head := make([]byte, 4)
	if _, err := io.ReadFull(br, head); err != nil || string(head) != "\x05\x02\x01\x00" {
		e.t.Fatalf("handshake %q %v", head, err)
	}
	_, err := socks5.ReadReply(br)
	var re *socks5.ReplyError
	switch {
	case err == nil:
		return c, br, socks5.Succeeded
	case errors.As(err, &re):
		return c, br, re.Reply
	}
	return c, br, 0xff
}

func portBytes(p uint16) string { return string([]byte{byte(p >> 8), byte(p)}) }

// TestSOCKSAllowedTCPAddressForms: an allowed_tcp entry opens a name, never its address:
// the entry's address on the entry's port, in every form a SOCKS5 request can carry it
// (ATYP 1, IPv4-mapped, IPv4-compatible and NAT64 IPv6, the address's text as a name with
// a trailing dot, in brackets, mapped), is refused and never reaches the server, while
// the name itself gets through.
func TestSOCKSAllowedTCPAddressForms(t *testing.T) {
	target := netip.MustParseAddrPort(echo(t, "SSH-2.0-fake\r\n"))
	port := target.Port()
	e := newEnv(t, policy.Policy{AllowedTCP: []string{"git.example.test:" + strconv.Itoa(int(port))}})
	e.dns.Set("git.example.test", webIP)
	socks := e.startSOCKS()
	v4 := netip.MustParseAddr(webIP).As4()
	v6 := func(prefix []byte) string { return string(append(prefix, v4[:]...)) }
	zeros := make([]byte, 12)
	for _, tc := range []struct{ name, req string }{
		{"ATYP 1", "\x05\x01\x00\x01" + string(v4[:]) + portBytes(port)},
		{"ATYP 4 IPv4-mapped", "\x05\x01\x00\x04" + v6(append(make([]byte, 10), 0xff, 0xff)) + portBytes(port)},
		{"ATYP 4 IPv4-compatible", "\x05\x01\x00\x04" + v6(zeros) + portBytes(port)},
		{"ATYP 4 NAT64", "\x05\x01\x00\x04" + v6([]byte{0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0}) + portBytes(port)},
		{"ATYP 3 address", "\x05\x01\x00\x03\x0a" + webIP + portBytes(port)},
		{"ATYP 3 address with a dot", "\x05\x01\x00\x03\x0b" + webIP + "." + portBytes(port)},
		{"ATYP 3 mapped", "\x05\x01\x00\x03\x11::ffff:" + webIP + portBytes(port)},
		{"ATYP 3 bracketed", "\x05\x01\x00\x03\x0c[" + webIP + "]" + portBytes(port)},
		{"ATYP 3 name and port", "\x05\x01\x00\x03\x16git.example.test:" + strconv.Itoa(int(port)) + portBytes(port)},
	} {
		e.sink.reset()
		c, _, rep := e.rawSOCKS(socks, tc.req)
		if rep == socks5.Succeeded {
			t.Errorf("%s: connected", tc.name)
		} else if !closed(c) {
			t.Errorf("%s: the connection stayed open after %v", tc.name, rep)
		}
		c.Close()
		for _, r := range e.sink.all() {
			if r.Decision == events.Allow {
				t.Errorf("%s: allowed: %+v", tc.name, r)
			}
		}
	}
	c, br, rep := e.rawSOCKS(socks, "\x05\x01\x00\x03\x10git.example.test"+portBytes(port))
	if rep != socks5.Succeeded {
		t.Fatalf("the entry's name: %v", rep)
	}
	if line, err := br.ReadString('\n'); line != "SSH-2.0-fake\r\n" {
		t.Errorf("the entry's name: banner %q %v", line, err)
	}
	c.Close()
}

// slowWriter writes one byte per Write, so that every message reaches the server in
// pieces (the client's socket has TCP_NODELAY).
type slowWriter struct{ net.Conn }

func (w slowWriter) Write(b []byte) (int, error) {
	for i := range b {
		if _, err := w.Conn.Write(b[i : i+1]); err != nil {
			return i, err
		}
		time.Sleep(time.Millisecond)
	}
	return len(b), nil
}

// TestSOCKSInPieces: a handshake and a ClientHello that arrive a byte at a time are read
// as a whole: the allowed name gets through, and another TLS server name on the entry's
// port is refused all the same, before the server reads it.
func TestSOCKSInPieces(t *testing.T) {
	e := newEnv(t, policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})
	_, p, _ := net.SplitHostPort(e.web.serve(webIP+":0", true))
	port, _ := strconv.Atoi(p)
	e.live.publish(set(t, policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}, AllowedTCP: []string{"git.example.test:" + p}}))
	e.dns.Set("git.example.test", webIP)
	socks := e.startSOCKS()
	for _, tc := range []struct {
		sni   string
		allow bool
	}{
		{"git.example.test", true},
		{"api.example.test", false},
		{"secret.example.test", false},
	} {
		e.sink.reset()
		c := socksDial(t, socks)
		sw := slowWriter{c}
		if _, err := socks5.Connect(struct {
			io.Reader
			io.Writer
		}{c, sw}, "ses_a", "tok_a", "git.example.test", uint16(port)); err != nil {
			t.Fatalf("SNI %s: %v", tc.sni, err)
		}
		err := tls.Client(slowWriter{c}, &tls.Config{ServerName: tc.sni, InsecureSkipVerify: true}).Handshake()
		if (err == nil) != tc.allow {
			t.Errorf("SNI %s: handshake %v, want allowed %v", tc.sni, err, tc.allow)
		}
		c.Close()
		r := e.sink.wait(t, tc.sni, func(r events.Record) bool { return r.Kind == events.KindConnect })
		if r.Decision != decision(tc.allow) || r.Host != tc.sni {
			t.Errorf("SNI %s: record %s %q host %q", tc.sni, r.Decision, r.Reason, r.Host)
		}
	}
	for _, h := range e.web.seen() {
		if h != "sni:git.example.test" {
			t.Errorf("the server read %s", h)
		}
	}
}

// TestSOCKSAllowedTCPLayers: every layer must allow name:port. A session that lists the
// entry cannot open it when the VM does not; the reverse neither; a monitor layer that does
// not list it lets it through as would_deny; a monitor layer does not lift an enforce
// layer's denial.
func TestSOCKSAllowedTCPLayers(t *testing.T) {
	target := netip.MustParseAddrPort(echo(t, "SSH-2.0-fake\r\n"))
	ep := "git.example.test:" + strconv.Itoa(int(target.Port()))
	other := "git.example.test:" + strconv.Itoa(int(target.Port())+1)
	listed := policy.Policy{AllowedTCP: []string{ep}}
	for _, tc := range []struct {
		name             string
		session, vm      policy.Policy
		allow, wouldDeny bool
	}{
		{"both", listed, listed, true, false},
		{"the session only", listed, policy.Policy{AllowHTTPS: true}, false, false},
		{"the VM only", policy.Policy{AllowHTTPS: true}, listed, false, false},
		{"another port in the VM", listed, policy.Policy{AllowedTCP: []string{other}}, false, false},
		{"a wildcard apex in the VM", listed, policy.Policy{AllowedTCP: []string{"*." + ep}}, false, false},
		{"a monitor VM without it", listed, policy.Policy{Mode: policy.Monitor}, true, true},
		{"a monitor session, an enforce VM without it", policy.Policy{Mode: policy.Monitor, AllowedTCP: []string{ep}}, policy.Policy{AllowHTTPS: true}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.session)
			e.live.publish(set(t, tc.session, tc.vm))
			e.dns.Set("git.example.test", webIP)
			socks := e.startSOCKS()
			c, rep := e.socksConnect(socks, "git.example.test", target.Port())
			if (rep == socks5.Succeeded) != tc.allow {
				t.Errorf("reply %v, want allowed %v", rep, tc.allow)
			}
			c.Close()
			r := e.sink.wait(t, "decision", func(r events.Record) bool { return r.Kind == events.KindConnect })
			if r.Decision != decision(tc.allow) || r.WouldDeny != tc.wouldDeny {
				t.Errorf("record %s would_deny %v %q, want %s would_deny %v", r.Decision, r.WouldDeny, r.Reason, decision(tc.allow), tc.wouldDeny)
			}
		})
	}
}

// TestSOCKSAllowedTCPGrant: a grant's allowed_tcp entry opens name:port through SOCKS5,
// the record names the grant, and when the grant ends (the view publishes the policy
// without it) the tunnel is cut.
func TestSOCKSAllowedTCPGrant(t *testing.T) {
	target := netip.MustParseAddrPort(echo(t, ""))
	ep := "git.example.test:" + strconv.Itoa(int(target.Port()))
	base := policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}}
	e := newEnv(t, base)
	m, err := policy.CompileGrants(base, nil, []policy.Grant{{ID: "gr_x", TCP: []string{ep}, ExpiresAt: time.Now().Add(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	e.live.publish(policy.NewEffective(classifier, policy.Layered{Layer: policy.LayerSession, Matcher: m}))
	e.dns.Set("git.example.test", webIP)
	socks := e.startSOCKS()
	c, rep := e.socksConnect(socks, "git.example.test", target.Port())
	if rep != socks5.Succeeded {
		t.Fatalf("with the grant: %v", rep)
	}
	io.WriteString(c, "ping\n")
	br := bufio.NewReader(c)
	if line, err := br.ReadString('\n'); line != "ping\n" {
		t.Fatalf("echo %q %v", line, err)
	}
	r := e.sink.wait(t, "allow", func(r events.Record) bool { return r.Kind == events.KindConnect })
	if r.Decision != events.Allow || r.Rule != "grant gr_x: allowed_tcp "+ep {
		t.Errorf("record %s rule %q", r.Decision, r.Rule)
	}
	e.live.publish(set(t, base)) // the grant expired
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadString('\n'); err == nil || isTimeout(err) {
		t.Errorf("the tunnel was not cut: %v", err)
	}
	cl := e.sink.wait(t, "close", func(r events.Record) bool { return r.Kind == events.KindClose })
	if cl.CloseReason != "policy" {
		t.Errorf("close reason %q", cl.CloseReason)
	}
	if _, rep := e.socksConnect(socks, "git.example.test", target.Port()); rep != socks5.NotAllowed {
		t.Errorf("after the grant: %v", rep)
	}
}

// TestSOCKSAllowedTCPPort80: an allowed_tcp entry on port 80 opens that name's HTTP with
// the web flags off, request by request: the name's requests pass, a request for another
// host in the same tunnel (by Host or absolute URL) never reaches the server.
func TestSOCKSAllowedTCPPort80(t *testing.T) {
	e := newEnv(t, policy.Policy{AllowedTCP: []string{"api.example.test:80"}})
	socks := e.startSOCKS()
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"the name", "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n", 200},
		{"another Host", "GET / HTTP/1.1\r\nHost: other.example.test\r\n\r\n", 403},
		{"another absolute URL", "GET http://other.example.test/ HTTP/1.1\r\nHost: other.example.test\r\n\r\n", 403},
		{"the name on another port", "GET / HTTP/1.1\r\nHost: api.example.test:8080\r\n\r\n", 403},
	} {
		c, rep := e.socksConnect(socks, "api.example.test", 80)
		if rep != socks5.Succeeded {
			t.Fatalf("%s: %v", tc.name, rep)
		}
		io.WriteString(c, tc.req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %s (%s)", tc.name, resp.Status, resp.Header.Get("X-Egress-Reason"))
		}
		c.Close()
	}
	for _, h := range e.web.seen() {
		if h != "api.example.test" {
			t.Errorf("the server saw a request for %s", h)
		}
	}
	// Port 443 is not opened by the port-80 entry.
	if _, rep := e.socksConnect(socks, "api.example.test", 443); rep != socks5.NotAllowed {
		t.Errorf("443: %v", rep)
	}
}

// TestSOCKSSessionEndsBeforeTheRequest: a client that authenticated and then waits must not
// open a connection once its session has ended: the request after the end is refused, and
// nothing is dialled for it.
func TestSOCKSSessionEndsBeforeTheRequest(t *testing.T) {
	target := netip.MustParseAddrPort(echo(t, "SSH-2.0-fake\r\n"))
	e := newEnv(t, policy.Policy{AllowedTCP: []string{"git.example.test:" + strconv.Itoa(int(target.Port()))}})
	e.dns.Set("git.example.test", webIP)
	socks := e.startSOCKS()
	c := socksDial(t, socks)
	io.WriteString(c, "\x05\x01\x02\x01\x05ses_a\x05tok_a")
	head := make([]byte, 4)
	if _, err := io.ReadFull(c, head); err != nil || string(head) != "\x05\x02\x01\x00" {
		t.Fatalf("handshake %q %v", head, err)
	}
	e.auth.end("ses_a")
	io.WriteString(c, "\x05\x01\x00\x03\x10git.example.test"+portBytes(target.Port()))
	if _, err := socks5.ReadReply(c); err == nil {
		t.Error("the request of an ended session was served")
	}
	if !closed(c) {
		t.Error("the connection stayed open")
	}
	for _, r := range e.sink.all() {
		if r.Decision == events.Allow {
			t.Errorf("allowed after the session ended: %+v", r)
		}
	}
}

// TestSOCKSToItself: egressd's own listeners are never a destination, whatever opens
// them: an allowed_tcp name that resolves to the SOCKS listener's address, on its port; an
// IP literal inside allowed_cidrs; the listener's address IPv4-mapped. Each is a hard denial,
// and the listener is not entered a second time.
func TestSOCKSToItself(t *testing.T) {
	e := newEnv(t, policy.Policy{})
	socks := e.startSOCKS()
	self := netip.MustParseAddrPort(socks)
	ep := "loop.example.test:" + strconv.Itoa(int(self.Port()))
	m, err := policy.Compile(policy.Policy{AllowedTCP: []string{ep}, AllowedCIDRs: []string{"127.0.0.0/24"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl := &policy.Classifier{Public: classifier.Public, Self: []netip.AddrPort{self}}
	e.live.publish(policy.NewEffective(cl, policy.Layered{Layer: policy.LayerSession, Matcher: m}))
	e.dns.Set("loop.example.test", self.Addr().String())
	for _, tc := range []struct{ name, req string }{
		{"the name", "\x05\x01\x00\x03\x11loop.example.test" + portBytes(self.Port())},
		{"the address", "\x05\x01\x00\x01" + string(self.Addr().AsSlice()) + portBytes(self.Port())},
		{"the address, mapped", "\x05\x01\x00\x04" + string(netip.AddrFrom16(self.Addr().As16()).AsSlice()) + portBytes(self.Port())},
	} {
		e.sink.reset()
		c, _, rep := e.rawSOCKS(socks, tc.req)
		c.Close()
		if rep != socks5.NotAllowed {
			t.Errorf("%s: reply %v, want not allowed", tc.name, rep)
		}
		r := e.sink.wait(t, tc.name, func(r events.Record) bool { return r.Kind == events.KindConnect })
		if r.Decision != events.Deny || r.Reason != policy.ReasonHardDeny {
			t.Errorf("%s: record %s %q (%s)", tc.name, r.Decision, r.Reason, r.Rule)
		}
		if n := len(e.sink.all()); n != 1 {
			t.Errorf("%s: %d records, want 1 (the listener entered again?):\n%s", tc.name, n, e.sink.dump())
		}
	}
}

// TestSOCKSAllowedTCPCutsPrecisely: a tightening cuts exactly the tunnels it no longer
// allows: a wildcard narrowed to one of its names keeps that name's tunnel and cuts the
// other's; a name added to denied_domains is cut though its entry stays.
func TestSOCKSAllowedTCPCutsPrecisely(t *testing.T) {
	target := netip.MustParseAddrPort(echo(t, ""))
	p := strconv.Itoa(int(target.Port()))
	e := newEnv(t, policy.Policy{AllowedTCP: []string{"*.db.example.test:" + p, "git.example.test:" + p}})
	for _, n := range []string{"a.db.example.test", "b.db.example.test", "git.example.test"} {
		e.dns.Set(n, webIP)
	}
	socks := e.startSOCKS()
	open := map[string]*bufio.Reader{}
	conns := map[string]net.Conn{}
	for _, n := range []string{"a.db.example.test", "b.db.example.test", "git.example.test"} {
		c, rep := e.socksConnect(socks, n, target.Port())
		if rep != socks5.Succeeded {
			t.Fatalf("%s: %v", n, rep)
		}
		io.WriteString(c, "ping\n")
		br := bufio.NewReader(c)
		if line, err := br.ReadString('\n'); line != "ping\n" {
			t.Fatalf("%s: echo %q %v", n, line, err)
		}
		open[n], conns[n] = br, c
	}
	e.live.publish(set(t, policy.Policy{AllowedTCP: []string{"a.db.example.test:" + p, "git.example.test:" + p}, DeniedDomains: []string{"git.example.test"}}))
	for _, n := range []string{"b.db.example.test", "git.example.test"} {
		conns[n].SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := open[n].ReadString('\n'); err == nil || isTimeout(err) {
			t.Errorf("%s: not cut: %v", n, err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); e.sink.count(events.KindClose, "") < 2 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
	}
	io.WriteString(conns["a.db.example.test"], "still\n")
	if line, err := open["a.db.example.test"].ReadString('\n'); line != "still\n" {
		t.Errorf("a.db.example.test, still allowed, was cut: %q %v", line, err)
	}
	for _, r := range e.sink.all() {
		if r.Kind == events.KindClose && (r.Host == "a.db.example.test" || r.CloseReason != "policy") {
			t.Errorf("close %s %q", r.Host, r.CloseReason)
		}
	}
	if n := e.sink.count(events.KindClose, ""); n != 2 {
		t.Errorf("%d close records, want 2:\n%s", n, e.sink.dump())
	}
}

// TestSOCKSDecidedAtTheRequest: the policy that decides is the one in force when the
// request comes, not when the credentials did: a tightening in between refuses it.
func TestSOCKSDecidedAtTheRequest(t *testing.T) {
	target := netip.MustParseAddrPort(echo(t, "SSH-2.0-fake\r\n"))
	ep := "git.example.test:" + strconv.Itoa(int(target.Port()))
	e := newEnv(t, policy.Policy{AllowedTCP: []string{ep}})
	e.dns.Set("git.example.test", webIP)
	socks := e.startSOCKS()
	c := socksDial(t, socks)
	io.WriteString(c, "\x05\x01\x02\x01\x05ses_a\x05tok_a")
	head := make([]byte, 4)
	if _, err := io.ReadFull(c, head); err != nil || string(head) != "\x05\x02\x01\x00" {
		t.Fatalf("handshake %q %v", head, err)
	}
	e.live.publish(set(t, policy.Policy{AllowedTCP: []string{"other.example.test:" + strconv.Itoa(int(target.Port()))}}))
	io.WriteString(c, "\x05\x01\x00\x03\x10git.example.test"+portBytes(target.Port()))
	_, err := socks5.ReadReply(c)
	var re *socks5.ReplyError
	if !errors.As(err, &re) || re.Reply != socks5.NotAllowed {
		t.Errorf("after a tightening: %v, want not allowed", err)
	}
	r := e.sink.wait(t, "denial", func(r events.Record) bool { return r.Kind == events.KindConnect })
	if r.Decision != events.Deny || r.Reason != policy.ReasonPort || r.Host != "git.example.test" {
		t.Errorf("record %s %q host %q", r.Decision, r.Reason, r.Host)
	}
}

// TestPort80TunnelAfterTheSessionEnds: a tunnel to name:80 carries requests one by one, each
// on an upstream connection decided anew; when the session ends the upstream is cut, and
// the next request in the same tunnel must not reach the server, through either door.
func TestPort80TunnelAfterTheSessionEnds(t *testing.T) {
	for _, d := range doors {
		t.Run(d.name, func(t *testing.T) {
			e := newEnv(t, policy.Policy{AllowedTCP: []string{"api.example.test:80"}})
			socks := e.startSOCKS()
			c, br, ok := d.open(e, socks, "api.example.test", 80)
			if !ok {
				t.Fatal("refused")
			}
			get := func() (*http.Response, error) { return getOver(c, br) }
			if resp, err := get(); err != nil || resp.StatusCode != 200 {
				t.Fatalf("first request: %v %v", resp, err)
			}
			e.auth.end("ses_a")
			before := len(e.web.seen())
			if resp, err := get(); err == nil && resp.StatusCode == 200 {
				t.Error("a request after the session ended was served")
			}
			if seen := e.web.seen(); len(seen) != before {
				t.Errorf("the server saw %v after the session ended", seen[before:])
			}
		})
	}
}

// TestPort80TunnelAfterTheSessionEndsInTheView: the same attack against the real view over
// a real store, where the ended session keeps its last policy: the session is deleted in
// the store, and the tunnel's next request still reaches nothing.
func TestPort80TunnelAfterTheSessionEndsInTheView(t *testing.T) {
	for _, d := range doors {
		t.Run(d.name, func(t *testing.T) {
			pol := policy.Policy{AllowedTCP: []string{"api.example.test:80"}}
			var live *liveStore
			e := newEnv(t, pol, func(c *Config) {
				live = newLiveStore(t, slog.New(slog.DiscardHandler), store.VM{ID: "vm_v", Network: store.Network{Mode: "netns", Address: "127.0.0.1", Gateway: "127.0.0.2"}}, "ses_a", "tok_a", pol, pol)
				c.Sessions = FromView(live.view)
			})
			socks := e.startSOCKS()
			c, br, ok := d.open(e, socks, "api.example.test", 80)
			if !ok {
				t.Fatal("refused")
			}
			get := func() (*http.Response, error) { return getOver(c, br) }
			if resp, err := get(); err != nil || resp.StatusCode != 200 {
				t.Fatalf("first request: %v %v", resp, err)
			}
			if err := live.st.DeleteSession(context.Background(), "t1", "ses_a"); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if _, err := live.view.Authenticate("ses_a", "tok_a"); err != nil {
					break
				}
			}
			before := len(e.web.seen())
			if resp, err := get(); err == nil && resp.StatusCode == 200 {
				t.Error("a request after the session ended was served")
			}
			if seen := e.web.seen(); len(seen) != before {
				t.Errorf("the server saw %v after the session ended", seen[before:])
			}
		})
	}
}

// TestSOCKSLayersAndGrantInTheView: through the real view, a SOCKS5 session is judged with
// its VM's policy too (the session cannot open what the VM does not list, nor the VM what
// the session does not), and a session grant's allowed_tcp entry opens name:port until it
// expires, when the tunnel it allowed is cut.
func TestSOCKSLayersAndGrantInTheView(t *testing.T) {
	target := netip.MustParseAddrPort(echo(t, ""))
	ep := "git.example.test:" + strconv.Itoa(int(target.Port()))
	listed := policy.Policy{AllowedTCP: []string{ep}}
	web := policy.Policy{AllowHTTPS: true}
	vm := store.VM{ID: "vm_v", Network: store.Network{Mode: "netns", Address: "127.0.0.1", Gateway: "127.0.0.2"}}
	for _, tc := range []struct {
		name        string
		vm, session policy.Policy
		allow       bool
	}{
		{"both", listed, listed, true},
		{"the VM only", listed, web, false},
		{"the session only", web, listed, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, policy.Policy{}, func(c *Config) {
				c.Sessions = FromView(newLiveStore(t, slog.New(slog.DiscardHandler), vm, "ses_a", "tok_a", tc.vm, tc.session).view)
			})
			e.dns.Set("git.example.test", webIP)
			c, rep := e.socksConnect(e.startSOCKS(), "git.example.test", target.Port())
			c.Close()
			if (rep == socks5.Succeeded) != tc.allow {
				t.Errorf("reply %v, want allowed %v", rep, tc.allow)
			}
		})
	}
	t.Run("a grant", func(t *testing.T) {
		var live *liveStore
		e := newEnv(t, policy.Policy{}, func(c *Config) {
			live = newLiveStore(t, slog.New(slog.DiscardHandler), vm, "ses_a", "tok_a", listed, web)
			c.Sessions = FromView(live.view)
		})
		e.dns.Set("git.example.test", webIP)
		socks := e.startSOCKS()
		if _, rep := e.socksConnect(socks, "git.example.test", target.Port()); rep != socks5.NotAllowed {
			t.Fatalf("before the grant: %v", rep)
		}
		if _, err := live.st.CreateGrant(context.Background(), store.Grant{Tenant: "t1", ID: "gr_s", Scope: store.ScopeSession, ObjectID: "ses_a", TCP: []string{ep}}, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		var c net.Conn
		rep := socks5.Reply(0xff)
		for deadline := time.Now().Add(5 * time.Second); rep != socks5.Succeeded && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			c, rep = e.socksConnect(socks, "git.example.test", target.Port())
		}
		if rep != socks5.Succeeded {
			t.Fatalf("with the grant: %v", rep)
		}
		r := e.sink.wait(t, "allow", func(r events.Record) bool { return r.Decision == events.Allow })
		if r.Rule != "grant gr_s: allowed_tcp "+ep {
			t.Errorf("rule %q", r.Rule)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("the tunnel outlived its grant: %v", err)
		}
		cl := e.sink.wait(t, "close", func(r events.Record) bool { return r.Kind == events.KindClose })
		if cl.CloseReason != "policy" {
			t.Errorf("close reason %q", cl.CloseReason)
		}
	})
}

// getOver sends GET / for api.example.test on a tunnel and reads the whole answer.
func getOver(c io.Writer, br *bufio.Reader) (*http.Response, error) {
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}
