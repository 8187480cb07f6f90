package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/socks5"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// startSOCKS serves the env's proxy on a SOCKS5 listener too, and returns its address.
func (e *env) startSOCKS() string {
	e.t.Helper()
	ln := listen(e.t)
	go e.p.ServeSOCKS(ln)
	return ln.Addr().String()
}

// socksDial opens a raw connection to the SOCKS listener.
func socksDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// socksConnect connects through the SOCKS listener with the session's credentials, and
// returns the connection and the reply: Succeeded, or the server's refusal.
func (e *env) socksConnect(addr, host string, port uint16) (net.Conn, socks5.Reply) {
	e.t.Helper()
	c := socksDial(e.t, addr)
	_, err := socks5.Connect(c, e.sess.ID, e.token, host, port)
	var re *socks5.ReplyError
	switch {
	case err == nil:
		return c, socks5.Succeeded
	case errors.As(err, &re):
		return c, re.Reply
	}
	e.t.Fatalf("SOCKS5 CONNECT %s:%d: %v", host, port, err)
	return nil, 0
}

// closed reports whether the server closed c (EOF or reset) before sending more.
func closed(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := c.Read(make([]byte, 1))
	return n == 0 && err != nil && !isTimeout(err)
}

// TestSOCKSAuthentication: only username/password is offered; the session ID and token
// open it; anything else is refused and closed, recorded nowhere (as a 407 is not).
func TestSOCKSAuthentication(t *testing.T) {
	e := newEnv(t, apiOnly)
	addr := e.startSOCKS()
	for _, tc := range []struct {
		name string
		send string
		want string // the server's bytes before it closes
	}{
		{"no authentication offered", "\x05\x01\x00", "\x05\xff"},
		{"GSSAPI only", "\x05\x01\x01", "\x05\xff"},
		{"wrong token", "\x05\x01\x02\x01\x05ses_a\x05tok_b", "\x05\x02\x01\x01"},
		{"unknown session", "\x05\x01\x02\x01\x05ses_z\x05tok_a", "\x05\x02\x01\x01"},
		{"token as user", "\x05\x01\x02\x01\x05tok_a\x05ses_a", "\x05\x02\x01\x01"},
		{"empty password", "\x05\x01\x02\x01\x05ses_a\x00", "\x05\x02"},
		{"auth version 5", "\x05\x01\x02\x05\x05ses_a\x05tok_a", "\x05\x02"},
		{"SOCKS4", "\x04\x01\x00\x16\xcb\x00\x71\x07\x00", ""},
		{"HTTP", "CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\n\r\n", ""},
		{"cut greeting", "\x05\x02\x02", ""},
	} {
		c := socksDial(t, addr)
		io.WriteString(c, tc.send)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		if string(got) != tc.want {
			t.Errorf("%s: the server sent %q, want %q", tc.name, got, tc.want)
		}
		if isTimeout(err) {
			t.Errorf("%s: the connection stayed open", tc.name)
		}
	}
	if recs := e.sink.all(); len(recs) != 0 {
		t.Errorf("refused handshakes were recorded:\n%s", e.sink.dump())
	}
	// The right credentials, then a request: served.
	c, rep := e.socksConnect(addr, "api.example.test", 80)
	if rep != socks5.Succeeded {
		t.Fatalf("with the session's credentials: %v", rep)
	}
	c.Close()
	// A session that ended is refused.
	e.auth.end("ses_a")
	c = socksDial(t, addr)
	if _, err := socks5.Connect(c, "ses_a", e.token, "api.example.test", 80); !errors.Is(err, socks5.ErrAuthFailed) {
		t.Errorf("after the session ended: %v, want the credentials refused", err)
	}
}

// TestSOCKSHandshakeDeadline: a client that stalls in the handshake is closed after
// HandshakeTimeout.
func TestSOCKSHandshakeDeadline(t *testing.T) {
	e := newEnv(t, apiOnly, func(c *Config) { c.HandshakeTimeout = 200 * time.Millisecond })
	addr := e.startSOCKS()
	for _, partial := range []string{"", "\x05", "\x05\x01\x02\x01\x05ses", "\x05\x01\x02\x01\x05ses_a\x05tok_a\x05\x01\x00\x03\x10api"} {
		c := socksDial(t, addr)
		io.WriteString(c, partial)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.ReadAll(c)
		if isTimeout(err) {
			t.Errorf("after %q the connection stayed open", partial)
		}
	}
}

// TestSOCKSDecisions: a SOCKS5 CONNECT is decided as an HTTP CONNECT to the same target:
// names normalised, IP literals only inside allowed_cidrs (IPv4-mapped as IPv4), names
// whose addresses are private or link-local refused, denied_domains first, BIND and UDP
// ASSOCIATE not supported; every denial is a record with its reason.
func TestSOCKSDecisions(t *testing.T) {
	e := newEnv(t, policy.Policy{
		AllowHTTPS: true, AllowHTTP: true,
		AllowedDomains: []string{"*.example.test"},
		DeniedDomains:  []string{"secret.example.test", "bücher.example.test"},
		AllowedCIDRs:   []string{webIP + "/32"},
	})
	e.dns.Set("metadata.example.test", "169.254.169.254")
	e.dns.Set("far.example.test", "127.0.0.51")
	addr := e.startSOCKS()
	echoAddr := netip.MustParseAddrPort(echo(t, "banner\n"))
	port := echoAddr.Port()
	for _, tc := range []struct {
		name   string
		req    string // raw request after the handshake, or "" to send host:port below
		host   string
		port   uint16
		rep    socks5.Reply
		reason policy.Reason
		rHost  string
		rIP    string
	}{
		{"IPv4 inside allowed_cidrs", "", webIP, port, socks5.Succeeded, policy.ReasonAllowedCIDRs, "", webIP},
		{"IPv4-mapped IPv6 inside allowed_cidrs", "\x05\x01\x00\x04" + string(netip.MustParseAddr("::ffff:"+webIP).AsSlice()) + string([]byte{byte(port >> 8), byte(port)}),
			"", 0, socks5.Succeeded, policy.ReasonAllowedCIDRs, "", webIP},
		{"an address as a name (ATYP 3)", "", "", 0, 0, "", "", ""}, // filled below
		{"name whose address allowed_cidrs opens, other port", "", "api.example.test", port, socks5.Succeeded, policy.ReasonAllowedCIDRs, "api.example.test", webIP},
		{"IPv4 outside allowed_cidrs", "", "127.0.0.51", 443, socks5.NotAllowed, policy.ReasonIPLiteral, "", "127.0.0.51"},
		{"IPv4 outside allowed_cidrs, other port", "", "127.0.0.51", port, socks5.NotAllowed, policy.ReasonIPLiteral, "", "127.0.0.51"},
		{"IPv4-mapped outside", "", "::ffff:127.0.0.51", 443, socks5.NotAllowed, policy.ReasonIPLiteral, "", "127.0.0.51"},
		{"metadata address", "", "169.254.169.254", 80, socks5.NotAllowed, policy.ReasonHardDeny, "", "169.254.169.254"},
		{"name resolving to a private address", "", "rebind.example.test", 443, socks5.NotAllowed, policy.ReasonHardDeny, "rebind.example.test", privateIP},
		{"name resolving to the metadata address", "", "metadata.example.test", 443, socks5.NotAllowed, policy.ReasonHardDeny, "metadata.example.test", "169.254.169.254"},
		{"denied domain", "", "secret.example.test", 443, socks5.NotAllowed, policy.ReasonDeniedDomain, "secret.example.test", ""},
		{"denied domain, other spelling", "", "SECRET.Example.TEST.", 443, socks5.NotAllowed, policy.ReasonDeniedDomain, "secret.example.test", ""},
		{"denied domain, Unicode", "", "BÜCHER.example.test", 443, socks5.NotAllowed, policy.ReasonDeniedDomain, "xn--bcher-kva.example.test", ""},
		{"a name on a port nothing opens", "", "far.example.test", 22, socks5.NotAllowed, policy.ReasonPort, "far.example.test", "127.0.0.51"},
		{"not a name", "", "exa_mple.example.test", 443, socks5.NotAllowed, policy.ReasonBadName, "", ""},
		{"127.1", "", "127.1", 443, socks5.NotAllowed, policy.ReasonBadName, "", ""},
		{"BIND", "\x05\x02\x00\x03\x10api.example.test\x01\xbb", "", 0, socks5.CommandNotSupported, policy.ReasonBadRequest, "api.example.test", ""},
		{"UDP ASSOCIATE for 0.0.0.0:0", "\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00", "", 0, socks5.CommandNotSupported, policy.ReasonBadRequest, "", "0.0.0.0"}, // RFC 1928 §7's usual form
		{"BIND for 0.0.0.0:0", "\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00", "", 0, socks5.CommandNotSupported, policy.ReasonBadRequest, "", "0.0.0.0"},
		{"CONNECT to port 0", "\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00", "", 0, 0, "", "", ""}, // malformed, closed
		{"UDP ASSOCIATE to a port", "\x05\x03\x00\x01\x00\x00\x00\x00\x00\x35", "", 0, socks5.CommandNotSupported, policy.ReasonBadRequest, "", "0.0.0.0"},
		{"address type 2", "\x05\x01\x00\x02\x01\x02\x03\x04\x00\x16", "", 0, socks5.AddressNotSupported, "", "", ""},
	} {
		if tc.name == "an address as a name (ATYP 3)" {
			tc.req = "\x05\x01\x00\x03" + string(rune(len(webIP))) + webIP + string([]byte{byte(port >> 8), byte(port)})
			tc.rep, tc.reason, tc.rIP = socks5.Succeeded, policy.ReasonAllowedCIDRs, webIP
		}
		e.sink.reset()
		var c net.Conn
		rep := socks5.Reply(0xff)
		if tc.req == "" {
			c, rep = e.socksConnect(addr, tc.host, tc.port)
		} else {
			c = socksDial(t, addr)
			io.WriteString(c, "\x05\x01\x02\x01\x05ses_a\x05tok_a"+tc.req)
			head := make([]byte, 4)
			if _, err := io.ReadFull(c, head); err != nil || string(head) != "\x05\x02\x01\x00" {
				t.Fatalf("%s: handshake %q %v", tc.name, head, err)
			}
			if _, err := socks5.ReadReply(c); err == nil {
				rep = socks5.Succeeded
			} else if re := (*socks5.ReplyError)(nil); errors.As(err, &re) {
				rep = re.Reply
			}
		}
		if tc.reason == "" && tc.rep == 0 {
			if rep != 0xff || !closed(c) {
				t.Errorf("%s: reply %v, want a close without one", tc.name, rep)
			}
			continue
		}
		if rep != tc.rep {
			t.Errorf("%s: reply %v, want %v", tc.name, rep, tc.rep)
			continue
		}
		if rep == socks5.Succeeded {
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || line != "banner\n" {
				t.Errorf("%s: through the tunnel: %q %v", tc.name, line, err)
			}
		} else if !closed(c) {
			t.Errorf("%s: the connection stayed open after %v", tc.name, rep)
		}
		c.Close()
		if tc.reason == "" {
			if n := len(e.sink.all()); n != 0 {
				t.Errorf("%s: records:\n%s", tc.name, e.sink.dump())
			}
			continue
		}
		r := e.sink.wait(t, tc.name, func(r events.Record) bool { return r.Kind == events.KindConnect })
		if r.Decision != decision(rep == socks5.Succeeded) || r.Reason != tc.reason || r.Host != tc.rHost || r.IP != tc.rIP || r.SessionID != "ses_a" {
			t.Errorf("%s: record %s %q host %q ip %q session %q, want %s %q host %q ip %q", tc.name, r.Decision, r.Reason, r.Host, r.IP, r.SessionID,
				decision(rep == socks5.Succeeded), tc.reason, tc.rHost, tc.rIP)
		}
		if rep == socks5.Succeeded {
			e.sink.wait(t, tc.name+": close", func(r events.Record) bool { return r.Kind == events.KindClose })
		} else if n := e.sink.count(events.KindClose, ""); n != 0 {
			t.Errorf("%s: a refused connection has a close record", tc.name)
		}
	}
	for _, h := range e.web.seen() {
		if strings.Contains(strings.ToLower(h), "secret") || strings.Contains(h, "bcher") {
			t.Errorf("a denied host reached the server: %s", h)
		}
	}
}

// TestSOCKSUnreachable: an allowed destination that refuses the connection is "connection
// refused", with the allowed record followed by its close; a name that does not resolve is
// "host unreachable".
func TestSOCKSUnreachable(t *testing.T) {
	e := newEnv(t, policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"*.example.test"}, AllowedCIDRs: []string{webIP + "/32"}})
	addr := e.startSOCKS()
	ln, err := net.Listen("tcp", webIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := netip.MustParseAddrPort(ln.Addr().String()).Port()
	ln.Close() // nothing listens there now
	if _, rep := e.socksConnect(addr, webIP, port); rep != socks5.ConnectionRefused {
		t.Errorf("closed port: %v, want connection refused", rep)
	}
	e.sink.wait(t, "the close of the failed dial", func(r events.Record) bool { return r.Kind == events.KindClose && r.CloseReason == "error" })
	if _, rep := e.socksConnect(addr, "nowhere.example.test", 443); rep != socks5.HostUnreachable {
		t.Errorf("a name without an address: %v, want host unreachable", rep)
	}
}

// TestSOCKSName443: after SOCKS5 CONNECT name:443 the ClientHello must name that host, as
// after an HTTP CONNECT; the right name reaches the server.
func TestSOCKSName443(t *testing.T) {
	e := newEnv(t, apiOnly)
	addr := e.startSOCKS()
	for _, tc := range []struct {
		name   string
		sni    string
		reason policy.Reason
	}{
		{"other SNI", "other.example.test", policy.ReasonSNIMismatch},
		{"no SNI", "", policy.ReasonNoHost},
	} {
		e.sink.reset()
		c, rep := e.socksConnect(addr, "api.example.test", 443)
		if rep != socks5.Succeeded {
			t.Fatalf("%s: %v", tc.name, rep)
		}
		if err := tls.Client(c, &tls.Config{ServerName: tc.sni, InsecureSkipVerify: true}).Handshake(); err == nil {
			t.Errorf("%s: the handshake succeeded", tc.name)
		}
		r := e.sink.wait(t, tc.name, func(r events.Record) bool { return r.Kind == events.KindConnect })
		if r.Decision != events.Deny || r.Reason != tc.reason || r.Host != "api.example.test" || r.IP != webIP {
			t.Errorf("%s: record %s %q host %q ip %q", tc.name, r.Decision, r.Reason, r.Host, r.IP)
		}
	}
	if seen := e.web.seen(); len(seen) != 0 {
		t.Errorf("the server saw %v", seen)
	}
	// The right name: a whole HTTPS exchange, recorded as allowed and closed.
	e.sink.reset()
	c, rep := e.socksConnect(addr, "API.example.test.", 443)
	if rep != socks5.Succeeded {
		t.Fatalf("allowed name: %v", rep)
	}
	tc := tls.Client(c, &tls.Config{ServerName: "api.example.test", RootCAs: e.ca.Pool})
	io.WriteString(tc, "GET / HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "hello from api.example.test\n" {
		t.Errorf("body %q", body)
	}
	c.Close()
	r := e.sink.wait(t, "allow", func(r events.Record) bool { return r.Kind == events.KindConnect })
	if r.Decision != events.Allow || r.Reason != policy.ReasonAllowedDomains || r.Host != "api.example.test" || r.Port != 443 {
		t.Errorf("record %+v", r)
	}
	cl := e.sink.wait(t, "close", func(r events.Record) bool { return r.Kind == events.KindClose })
	if cl.BytesDown == 0 || cl.BytesUp == 0 {
		t.Errorf("close record without bytes: %+v", cl)
	}
}

// TestSOCKSName80IsHTTP: SOCKS5 CONNECT name:80 carries HTTP, decided request by request
// as after CONNECT name:80: a request for another host is refused, never relayed.
func TestSOCKSName80IsHTTP(t *testing.T) {
	e := newEnv(t, policy.Policy{AllowHTTP: true, AllowedDomains: []string{"api.example.test", "other.example.test"}, DeniedDomains: []string{"secret.example.test"}})
	addr := e.startSOCKS()
	for _, tc := range []struct {
		host   string
		status int
		reason policy.Reason
	}{
		{"api.example.test", 200, ""},
		{"other.example.test", 403, policy.ReasonHostMismatch},
		{"secret.example.test", 403, policy.ReasonDeniedDomain},
	} {
		c, rep := e.socksConnect(addr, "api.example.test", 80)
		if rep != socks5.Succeeded {
			t.Fatalf("%v", rep)
		}
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+tc.host+"\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.host, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || policy.Reason(resp.Header.Get("X-Egress-Reason")) != tc.reason {
			t.Errorf("Host %s: %s %q, want %d %q", tc.host, resp.Status, resp.Header.Get("X-Egress-Reason"), tc.status, tc.reason)
		}
		c.Close()
	}
	for _, h := range e.web.seen() {
		if h != "api.example.test" {
			t.Errorf("the server saw a request for %s", h)
		}
	}
	if n := e.sink.count(events.KindRequest, events.Allow); n != 1 {
		t.Errorf("%d allowed request records, want 1:\n%s", n, e.sink.dump())
	}
}

// TestSOCKSPolicyCut: a live SOCKS tunnel is tracked as the connection it was allowed as;
// a policy that no longer allows it, or the end of the session, cuts it.
func TestSOCKSPolicyCut(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
		cut          func(e *env)
	}{
		{"a tightening", "policy", func(e *env) {
			e.live.publish(set(t, policy.Policy{AllowedCIDRs: []string{"127.0.0.51/32"}}))
		}},
		{"the session ends", "session ended", func(e *env) { e.auth.end("ses_a") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The name's addresses are inside allowed_cidrs, and allowed_domains lets the
			// gateway resolve it.
			e := newEnv(t, policy.Policy{AllowedDomains: []string{"api.example.test"}, AllowedCIDRs: []string{webIP + "/32"}})
			addr := e.startSOCKS()
			target := netip.MustParseAddrPort(echo(t, ""))
			c, rep := e.socksConnect(addr, "api.example.test", target.Port())
			if rep != socks5.Succeeded {
				t.Fatal(rep)
			}
			io.WriteString(c, "ping\n")
			br := bufio.NewReader(c)
			if line, err := br.ReadString('\n'); line != "ping\n" {
				t.Fatalf("echo: %q %v", line, err)
			}
			tracked := e.live.tracked()
			if len(tracked) != 1 || tracked[0].Host != "api.example.test" || tracked[0].Port != target.Port() {
				t.Fatalf("tracked %+v", tracked)
			}
			tc.cut(e)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := br.ReadString('\n'); err == nil || isTimeout(err) {
				t.Errorf("the tunnel was not cut: %v", err)
			}
			r := e.sink.wait(t, "close", func(r events.Record) bool { return r.Kind == events.KindClose })
			if r.CloseReason != tc.reason || r.Host != "api.example.test" {
				t.Errorf("close %q host %q, want %q", r.CloseReason, r.Host, tc.reason)
			}
		})
	}
}

// TestSOCKSPipelined: a client that sends its first bytes with the request, before the
// reply (optimistic data), gets them to the destination, after the checks they undergo.
func TestSOCKSPipelined(t *testing.T) {
	e := newEnv(t, policy.Policy{AllowedCIDRs: []string{webIP + "/32"}})
	addr := e.startSOCKS()
	target := netip.MustParseAddrPort(echo(t, ""))
	c := socksDial(t, addr)
	p := target.Port()
	io.WriteString(c, "\x05\x01\x02\x01\x05ses_a\x05tok_a\x05\x01\x00\x01"+string(target.Addr().AsSlice())+string([]byte{byte(p >> 8), byte(p)})+"early\n")
	br := bufio.NewReader(c)
	head := make([]byte, 4)
	io.ReadFull(br, head)
	if _, err := socks5.ReadReply(br); err != nil {
		t.Fatal(err)
	}
	if line, err := br.ReadString('\n'); line != "early\n" {
		t.Errorf("echo of the early bytes: %q %v", line, err)
	}
}

// TestSOCKSCurl: curl --socks5-hostname with the session's credentials, the way a sandbox's
// tools use a socks5h:// URL, over HTTPS and HTTP; with a wrong token it fails.
func TestSOCKSCurl(t *testing.T) {
	path, err := exec.LookPath("curl")
	testnet.Require(t, err == nil, "curl")
	e := newEnv(t, apiOnly)
	addr := e.startSOCKS()
	dir := t.TempDir()
	ca := e.ca.WriteFile(t, dir)
	run := func(proxy, url string) (string, error) {
		cmd := exec.Command(path, "-q", "-sS", "--max-time", "10", "--cacert", ca, "--proxy", proxy, url)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	good := "socks5h://ses_a:tok_a@" + addr
	for _, u := range []string{"https://api.example.test/", "http://api.example.test/"} {
		if out, err := run(good, u); err != nil || out != "hello from api.example.test\n" {
			t.Errorf("curl %s: %q %v", u, out, err)
		}
	}
	if out, err := run(good, "https://other.example.test/"); err == nil {
		t.Errorf("curl to a host the policy denies: %q", out)
	}
	r := e.sink.wait(t, "the denial", func(r events.Record) bool { return r.Decision == events.Deny })
	if r.Host != "other.example.test" || r.Reason != policy.ReasonHostNotListed {
		t.Errorf("record %+v", r)
	}
	if out, err := run("socks5h://ses_a:wrong@"+addr, "https://api.example.test/"); err == nil {
		t.Errorf("curl with a wrong token: %q", out)
	}
}

// TestSOCKSNamesThatAreNoNames: a name field that smuggles something else (an address in
// another notation, a port, a user, a path, NUL, a zone) never reaches the address it
// hints at: it is refused as a name, or leads nowhere.
func TestSOCKSNamesThatAreNoNames(t *testing.T) {
	e := newEnv(t, policy.Policy{AllowHTTPS: true, AllowHTTP: true, AllowedCIDRs: []string{webIP + "/32"}})
	addr := e.startSOCKS()
	for _, host := range []string{
		"127.0.0.50.", "0x7f.0.0.50", "2130706482", "127.50", "[127.0.0.50]", "[::ffff:127.0.0.50]",
		"api.example.test:443", "user@api.example.test", "api.example.test/x", "api.example.test\x00.evil",
		"api.example.test ", "fe80::1%lo", "127.0.0.50%lo", "*.example.test", ".", "..",
	} {
		e.sink.reset()
		c, rep := e.socksConnect(addr, host, 443)
		c.Close()
		if rep == socks5.Succeeded {
			t.Errorf("%q: connected", host)
		}
		for _, r := range e.sink.all() {
			if r.Decision == events.Allow {
				t.Errorf("%q: allowed: %+v", host, r)
			}
		}
	}
	if seen := e.web.seen(); len(seen) != 0 {
		t.Errorf("the server saw %v", seen)
	}
}

// TestSOCKSCountsAgainstTheCap: SOCKS5 tunnels and HTTP CONNECTs share the session's cap;
// one over it is refused (0x02 or 429) and recorded as too_many_connections.
func TestSOCKSCountsAgainstTheCap(t *testing.T) {
	e := newEnv(t, apiOnly, func(c *Config) { c.MaxTunnelsPerSession = 2 })
	addr := e.startSOCKS()
	c1, rep := e.socksConnect(addr, "api.example.test", 80)
	if rep != socks5.Succeeded {
		t.Fatal(rep)
	}
	if _, _, resp, _ := e.connect("api.example.test:80"); resp.StatusCode != 200 {
		t.Fatalf("second tunnel: %s", resp.Status)
	}
	if _, rep := e.socksConnect(addr, "api.example.test", 80); rep != socks5.NotAllowed {
		t.Errorf("SOCKS over the cap: %v", rep)
	}
	if _, _, resp, _ := e.connect("api.example.test:80"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("CONNECT over the cap: %s", resp.Status)
	}
	r := e.sink.wait(t, "cap", func(r events.Record) bool { return r.Decision == events.Deny })
	if r.Reason != policy.ReasonTooMany {
		t.Errorf("record %q", r.Reason)
	}
	c1.Close()
	e.sink.wait(t, "close", func(r events.Record) bool { return r.Kind == events.KindClose })
	if _, rep := e.socksConnect(addr, "api.example.test", 80); rep != socks5.Succeeded {
		t.Errorf("after a tunnel closed: %v", rep)
	}
}

// TestSOCKSMonitorMode: in monitor mode a would-be denial flows and is recorded with
// would_deny; a hard denial is refused all the same.
func TestSOCKSMonitorMode(t *testing.T) {
	e := newEnv(t, policy.Policy{Mode: policy.Monitor, AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})
	addr := e.startSOCKS()
	c, rep := e.socksConnect(addr, "other.example.test", 443)
	if rep != socks5.Succeeded {
		t.Fatalf("monitor mode: %v", rep)
	}
	if err := tls.Client(c, &tls.Config{ServerName: "other.example.test", RootCAs: e.ca.Pool}).Handshake(); err != nil {
		t.Errorf("monitor mode: %v", err)
	}
	c.Close()
	r := e.sink.wait(t, "would deny", func(r events.Record) bool { return r.Kind == events.KindConnect })
	if r.Decision != events.Allow || !r.WouldDeny || r.Reason != policy.ReasonHostNotListed || r.Mode != "monitor" {
		t.Errorf("record %+v", r)
	}
	if _, rep := e.socksConnect(addr, "rebind.example.test", 443); rep != socks5.NotAllowed {
		t.Errorf("monitor mode, a loopback answer: %v", rep)
	}
}
