package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// A ClientHello for a denied name, shaped so that a crypto/tls server reads it while a
// reader that wants a handshake record first does not (an alert record before it, or a
// record version below 3.x), is refused after a CONNECT to an address that allowed_cidrs
// opens and after a CONNECT by name to another port there: the server never answers it.
func TestUnreadableClientHelloRefused(t *testing.T) {
	l := newLab(t)
	l.setSession(namesPolicy)
	other := startTLS(t, webIP+":0")
	_, port, _ := net.SplitHostPort(other)

	for _, target := range []string{webIP + ":443", other, "api.example.test:" + port} {
		for _, tc := range helloShapes(t, "secret.example.test") {
			c, br := l.proxyConn()
			resp := roundTrip(t, c, br, fmt.Sprintf("CONNECT %s HTTP/1.1\r\nProxy-Authorization: %s\r\n\r\n", target, auth(l.sess.ProxyURL)))
			if resp.StatusCode != 200 {
				t.Fatalf("CONNECT %s: %s", target, resp.Status)
			}
			c.Write(tc.b)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			first := make([]byte, 1)
			if _, err := io.ReadFull(br, first); err == nil && first[0] == 0x16 {
				t.Errorf("CONNECT %s, %s naming secret.example.test: the server answered", target, tc.name)
			}
			c.Close()
		}
	}
	e := l.waitEvent("a refusal for unreadable TLS", func(e client.Event) bool {
		return e.Kind == "connect" && e.Decision == "deny" && e.Reason == string(policy.ReasonNotTLS)
	})
	if e.IP != webIP {
		t.Errorf("the refusal's event: ip %q host %q", e.IP, e.Host)
	}
}

// startTLS serves TLS on addr (a port of its own on the fake web server's address) and
// returns the address it listens on.
func startTLS(t *testing.T, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cfg := testnet.NewCA(t).ServerConfig()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				tc := tls.Server(c, cfg)
				if tc.Handshake() == nil {
					io.Copy(io.Discard, tc)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestTransparentUnreadableClientHelloRefused is the same from inside a sandbox, in both
// gateway modes: ClientHellos naming a denied name, plain or shaped so that only a lenient
// reader finds them, sent to an address the gateway answered the VM (with --fast-path, one
// the kernel routes to the verifier) and to one that allowed_cidrs opens. The server never
// answers one, and the refusals are recorded.
func TestTransparentUnreadableClientHelloRefused(t *testing.T) {
	eachGWMode(t, testTransparentUnreadableClientHelloRefused)
}

func testTransparentUnreadableClientHelloRefused(t *testing.T, m gwMode) {
	l := newGWLab(t, m.args...)
	vm := l.vm("shapes", &policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"},
		DeniedDomains: []string{"secret.example.test"}, AllowedCIDRs: []string{privateAddr + "/32"}})
	l.lookup(vm, "api.example.test")
	dial := netns.DialIn("/run/netns/" + vm.Network.Netns)

	refused := l.fastFlows("refused")
	shapes := helloShapes(t, "secret.example.test")
	for _, addr := range []string{webAddr, privateAddr} {
		for _, tc := range shapes {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := dial(ctx, "tcp4", net.JoinHostPort(addr, "443"))
			cancel()
			if err != nil {
				t.Fatalf("%s: connect from the VM: %v", addr, err)
			}
			c.Write(tc.b)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			first := make([]byte, 1)
			if _, err := io.ReadFull(c, first); err == nil && first[0] == 0x16 {
				t.Errorf("%s, %s naming secret.example.test: the server answered", addr, tc.name)
			}
			c.Close()
		}
	}
	l.awaitEvents(t, 10*time.Second, client.EventsFilter{VMID: vm.VMID, Decision: "deny"}, func(evs []client.Event) bool {
		return slices.ContainsFunc(evs, func(e client.Event) bool { return e.Kind == "connect" && e.IP == webAddr && e.Port == 443 })
	})
	// With the fast path, the answered address's attempts were the verifier's to refuse.
	if n := l.fastFlows("refused") - refused; m.fast() && n < len(shapes) {
		t.Errorf("the fast path refused %d flows, want at least %d", n, len(shapes))
	}
}

// helloShape is a ClientHello as a test sends it, whole or reshaped.
type helloShape struct {
	name string
	b    []byte
}

// helloShapes are crypto/tls's ClientHello naming sni, plain and shaped so that a
// crypto/tls server reads it while a reader that wants a handshake record first does not
// (an alert record before it, or a record version below 3.x).
func helloShapes(t *testing.T, sni string) []helloShape {
	hello := testnet.ClientHello(t, &tls.Config{ServerName: sni})
	alertFirst := append([]byte{0x15, 0x03, 0x01, 0x00, 0x02, 0x01, 0x5a}, hello...)
	oldVersion := append([]byte(nil), hello...)
	oldVersion[1], oldVersion[2] = 0x01, 0x01
	return []helloShape{{"an alert record first", alertFirst}, {"record version 1.1", oldVersion}, {"a plain ClientHello", hello}}
}
