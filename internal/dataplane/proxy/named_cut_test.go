package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// TestNamedTunnelCutAsItsAddressToo: a tunnel to an address (an IP literal that
// allowed_cidrs opens) whose ClientHello names a host is judged as that name at that
// address, but it was opened by the address: a policy that no longer opens the address
// cuts it, even when it now lets the name through by allowed_tcp (or allowed_domains on
// 443) — a new tunnel to that address would be refused, and the name's own addresses are
// not the one the client chose.
func TestNamedTunnelCutAsItsAddressToo(t *testing.T) {
	for _, d := range doors {
		t.Run(d.name, func(t *testing.T) {
			e := newEnv(t, policy.Policy{AllowedCIDRs: []string{webIP + "/32"}})
			_, p, _ := net.SplitHostPort(e.web.serve(webIP+":0", true))
			port, _ := strconv.Atoi(p)
			e.dns.Set("git.example.test", webIP)
			socks := e.startSOCKS()
			c, _, ok := d.open(e, socks, webIP, uint16(port))
			if !ok {
				t.Fatal("refused")
			}
			tc := tls.Client(c, &tls.Config{ServerName: "git.example.test", RootCAs: e.ca.Pool})
			br := bufio.NewReader(tc)
			get := func() error {
				if _, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: git.example.test\r\n\r\n"); err != nil {
					return err
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				return resp.Body.Close()
			}
			if err := get(); err != nil {
				t.Fatalf("before: %v", err)
			}
			r := e.sink.wait(t, "allow", func(r events.Record) bool { return r.Kind == events.KindConnect })
			if r.Decision != events.Allow || r.Host != "git.example.test" || r.IP != webIP {
				t.Fatalf("record %s host %q ip %q", r.Decision, r.Host, r.IP)
			}
			e.live.publish(set(t, policy.Policy{AllowedTCP: []string{"git.example.test:" + p}}))
			// The cut lands on its own goroutine: its close record says it has.
			cl := e.sink.wait(t, "close", func(r events.Record) bool { return r.Kind == events.KindClose })
			if cl.CloseReason != "policy" {
				t.Errorf("close reason %q", cl.CloseReason)
			}
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := get(); err == nil {
				t.Error("the tunnel to an address the policy no longer opens still carries requests")
			}
			if c, _, ok := d.open(e, socks, webIP, uint16(port)); ok {
				c.Close()
				t.Error("a new tunnel to the address is allowed: the cut is not the open's decision")
			}
		})
	}
}

// TestPinnedUpstreamCutAsItsAddressToo: inside a tunnel to an address on port 80, a Host
// name is judged at that address and its upstream is kept alive; a policy that no longer
// opens the address (though it allows the name as a web host) cuts that upstream, and the
// next request is refused rather than carried to the address the client chose.
func TestPinnedUpstreamCutAsItsAddressToo(t *testing.T) {
	for _, d := range doors {
		t.Run(d.name, func(t *testing.T) {
			e := newEnv(t, policy.Policy{AllowedCIDRs: []string{webIP + "/32"}})
			socks := e.startSOCKS()
			c, br, ok := d.open(e, socks, webIP, 80)
			if !ok {
				t.Fatal("refused")
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			get := func() int {
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					return 0
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode
			}
			if code := get(); code != 200 {
				t.Fatalf("before: %d", code)
			}
			e.live.publish(set(t, policy.Policy{AllowHTTP: true, AllowedDomains: []string{"api.example.test"}}))
			before := len(e.web.seen())
			if code := get(); code == 200 {
				t.Error("a request to an address the policy no longer opens was served on the kept-alive upstream")
			}
			if seen := e.web.seen(); len(seen) != before {
				t.Errorf("the server saw %v", seen[before:])
			}
		})
	}
}
