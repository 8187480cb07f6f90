package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/socks5"
	"github.com/egressd/egressd/policy"
)

// door opens a tunnel to host:port through one of the explicit proxy's fronts, and
// reports whether it was allowed.
type door struct {
	name string
	open func(e *env, socks string, host string, port uint16) (net.Conn, *bufio.Reader, bool)
}

var doors = []door{
	{"CONNECT", func(e *env, _ string, host string, port uint16) (net.Conn, *bufio.Reader, bool) {
		c, br, resp, _ := e.connect(net.JoinHostPort(host, strconv.Itoa(int(port))))
		return c, br, resp.StatusCode == 200
	}},
	{"SOCKS5", func(e *env, socks string, host string, port uint16) (net.Conn, *bufio.Reader, bool) {
		c, rep := e.socksConnect(socks, host, port)
		return c, bufio.NewReader(c), rep == socks5.Succeeded
	}},
}

// TestAllowedTCP: an allowed_tcp entry opens name:port through CONNECT and SOCKS5 alike,
// and nothing else: not another port, not another name on the address, not a name whose
// address is private, not a denied domain, not the address itself; a TLS server name seen
// in the tunnel is judged as that name at that port.
func TestAllowedTCP(t *testing.T) {
	target := netip.MustParseAddrPort(echo(t, "SSH-2.0-fake\r\n"))
	port := target.Port()
	other := netip.MustParseAddrPort(echo(t, "SSH-2.0-other\r\n")).Port()
	entry := func(name string) string { return name + ":" + strconv.Itoa(int(port)) }
	e := newEnv(t, policy.Policy{
		AllowedTCP:    []string{entry("git.example.test"), entry("*.db.example.test"), entry("rebind.example.test"), entry("secret.example.test")},
		DeniedDomains: []string{"secret.example.test"},
	})
	e.dns.Set("git.example.test", webIP)
	e.dns.Set("a.db.example.test", webIP)
	e.dns.Set("db.example.test", webIP)
	socks := e.startSOCKS()
	for _, d := range doors {
		for _, tc := range []struct {
			name   string
			host   string
			port   uint16
			allow  bool
			reason policy.Reason
		}{
			{"the entry", "git.example.test", port, true, policy.ReasonAllowedTCP},
			{"the entry, another spelling", "GIT.Example.test.", port, true, policy.ReasonAllowedTCP},
			{"a wildcard's name", "a.db.example.test", port, true, policy.ReasonAllowedTCP},
			{"the wildcard's parent", "db.example.test", port, false, policy.ReasonPort},
			{"another port", "git.example.test", other, false, policy.ReasonPort},
			{"another name at the address", "api.example.test", port, false, policy.ReasonPort},
			{"the address itself", webIP, port, false, policy.ReasonIPLiteral},
			{"a private answer", "rebind.example.test", port, false, policy.ReasonHardDeny},
			{"denied_domains wins", "secret.example.test", port, false, policy.ReasonDeniedDomain},
		} {
			e.sink.reset()
			c, br, ok := d.open(e, socks, tc.host, tc.port)
			if ok != tc.allow {
				t.Errorf("%s %s: allowed %v, want %v:\n%s", d.name, tc.name, ok, tc.allow, e.sink.dump())
				continue
			}
			if ok {
				line, err := br.ReadString('\n')
				if err != nil || line != "SSH-2.0-fake\r\n" {
					t.Errorf("%s %s: the server's banner: %q %v", d.name, tc.name, line, err)
				}
			}
			c.Close()
			r := e.sink.wait(t, tc.name, func(r events.Record) bool { return r.Kind == events.KindConnect })
			if r.Decision != decision(tc.allow) || r.Reason != tc.reason {
				t.Errorf("%s %s: record %s %q (rule %q), want %s %q", d.name, tc.name, r.Decision, r.Reason, r.Rule, decision(tc.allow), tc.reason)
			}
			if tc.allow && (r.IP != webIP || r.Rule != "allowed_tcp "+entry(normalized(t, tc.host)) && r.Rule != "allowed_tcp "+entry("*.db.example.test")) {
				t.Errorf("%s %s: record ip %q rule %q", d.name, tc.name, r.IP, r.Rule)
			}
		}
	}
}

func normalized(t *testing.T, host string) string {
	n, err := policy.NormalizeName(host)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAllowedTCPNameInTLS: TLS inside an allowed_tcp tunnel is judged by its server name
// at that port: the entry's name passes, another name is cut before the server reads it.
func TestAllowedTCPNameInTLS(t *testing.T) {
	e := newEnv(t, policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})
	_, p, _ := net.SplitHostPort(e.web.serve(webIP+":0", true))
	port, _ := strconv.Atoi(p)
	e.live.publish(set(t, policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}, AllowedTCP: []string{"git.example.test:" + p}}))
	e.dns.Set("git.example.test", webIP)
	socks := e.startSOCKS()
	for _, d := range doors {
		for _, tc := range []struct {
			sni    string
			allow  bool
			reason policy.Reason
		}{
			{"git.example.test", true, policy.ReasonAllowedTCP},
			{"api.example.test", false, policy.ReasonPort}, // allowed on 443 only
			{"", true, policy.ReasonAllowedTCP},
		} {
			e.sink.reset()
			c, _, ok := d.open(e, socks, "git.example.test", uint16(port))
			if !ok {
				t.Fatalf("%s: the tunnel was refused", d.name)
			}
			err := tls.Client(c, &tls.Config{ServerName: tc.sni, InsecureSkipVerify: true}).Handshake()
			if (err == nil) != tc.allow {
				t.Errorf("%s, SNI %q: handshake %v, want allowed %v", d.name, tc.sni, err, tc.allow)
			}
			c.Close()
			r := e.sink.wait(t, "decision", func(r events.Record) bool { return r.Kind == events.KindConnect })
			if r.Decision != decision(tc.allow) || r.Reason != tc.reason {
				t.Errorf("%s, SNI %q: record %s %q host %q", d.name, tc.sni, r.Decision, r.Reason, r.Host)
			}
		}
	}
	for _, h := range e.web.seen() {
		if h == "sni:api.example.test" {
			t.Error("the server read a ClientHello the policy denies at that port")
		}
	}
}

// TestAllowedTCPCut: removing the entry cuts the tunnels it allowed, through both doors.
func TestAllowedTCPCut(t *testing.T) {
	target := netip.MustParseAddrPort(echo(t, ""))
	entry := "git.example.test:" + strconv.Itoa(int(target.Port()))
	e := newEnv(t, policy.Policy{AllowedTCP: []string{entry}})
	e.dns.Set("git.example.test", webIP)
	socks := e.startSOCKS()
	var open []*bufio.Reader
	for _, d := range doors {
		c, br, ok := d.open(e, socks, "git.example.test", target.Port())
		if !ok {
			t.Fatalf("%s: refused", d.name)
		}
		io.WriteString(c, "ping\n")
		if line, err := br.ReadString('\n'); line != "ping\n" {
			t.Fatalf("%s: echo %q %v", d.name, line, err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		open = append(open, br)
	}
	e.live.publish(set(t, policy.Policy{AllowedTCP: []string{"other.example.test:" + strconv.Itoa(int(target.Port()))}}))
	for i, br := range open {
		if _, err := br.ReadString('\n'); err == nil || isTimeout(err) {
			t.Errorf("%s: the tunnel was not cut: %v", doors[i].name, err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); e.sink.count(events.KindClose, "") < 2 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
	}
	for _, r := range e.sink.all() {
		if r.Kind == events.KindClose && r.CloseReason != "policy" {
			t.Errorf("close reason %q, want policy", r.CloseReason)
		}
	}
	if n := e.sink.count(events.KindClose, ""); n != 2 {
		t.Errorf("%d close records, want 2:\n%s", n, e.sink.dump())
	}
}
