package e2e

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// echoProbe is a Python snippet that opens one TCP connection to host:port, then sends a
// byte and reads it back every 200 ms for up to limit seconds. It prints "ok N" for the
// round trips that worked, then "cut" when one fails (reset, closed, or no answer within a
// second: a flow whose conntrack entry the gateway flushed is dropped, not reset), or
// "survived" if none did.
func echoProbe(host string, port, limit int) string {
	return fmt.Sprintf(`
import socket, time
s = socket.create_connection((%q, %d), timeout=3)
s.settimeout(1)
ok = 0
end = time.time() + %d
while time.time() < end:
    try:
        s.sendall(b"x")
        if s.recv(1) != b"x":
            raise OSError("closed")
        ok += 1
    except Exception as e:
        print("ok", ok); print("cut", type(e).__name__); break
    time.sleep(0.2)
else:
    print("ok", ok); print("survived")
`, host, port, limit)
}

// TestGrantExpiryCutsAForwardedFlow: a grant of a CIDR on a VM whose policy allows nothing
// opens a flow that the kernel forwards (no proxy on the path); at the grant's expiry the
// gateway removes the range from the VM's rules and flushes conntrack, so the established
// flow stops, and a new connection is refused.
func TestGrantExpiryCutsAForwardedFlow(t *testing.T) {
	eachGWMode(t, testGrantExpiryCutsAForwardedFlow)
}

func testGrantExpiryCutsAForwardedFlow(t *testing.T, m gwMode) {
	l := newGWLab(t, m.args...)
	inet := testnet.In("/run/netns/" + l.inetNS)
	ln, err := inet.Listen("tcp", privateAddr+":7007")
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
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	vm := l.vm("granted", &policy.Policy{})
	if out, _ := l.py(vm, tcpProbe(privateAddr, 7007)); !strings.HasPrefix(out, "closed") {
		t.Fatalf("reached the private range before any grant: %q", out)
	}
	g, err := l.api.CreateGrant(context.Background(), client.GrantVM, l.id("granted"), client.GrantRequest{CIDRs: []string{privateAddr}, TTLSeconds: 6})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := l.run(vm, 40*time.Second, "python3", "-c", echoProbe(privateAddr, 7007, 20))
	if time.Now().Before(g.ExpiresAt) {
		t.Fatalf("the probe ended before the grant expired: %q", out)
	}
	if !strings.Contains(out, "cut") || strings.HasPrefix(out, "ok 0") {
		t.Fatalf("the forwarded flow was not cut at the grant's expiry (or never carried bytes): %q", out)
	}
	t.Logf("probe: %q", out)
	if out, _ := l.py(vm, tcpProbe(privateAddr, 7007)); !strings.HasPrefix(out, "closed") {
		t.Errorf("a new connection after the grant expired: %q", out)
	}
}
