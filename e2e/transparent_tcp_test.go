package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/policy"
)

// TestTransparentAllowedTCPQuick: the real binary end to end for allowed_tcp in transparent
// mode. A sandbox that looks up an allowed_tcp name connects to its address on the port;
// an unlisted name, an address it never looked up, and another VM (same policy, no
// lookup of its own) do not reach the server; removing the entry closes the address; the
// denied attempts are recorded.
func TestTransparentAllowedTCPQuick(t *testing.T) {
	l := newGWLab(t)
	l.dns.Set("git.example.test", webAddr)
	p := policy.Policy{AllowedTCP: []string{"git.example.test:22"}}
	a := l.vm("a", &p)
	b := l.vm("b", &p)

	if out, _ := l.py(a, tcpProbe("git.example.test", 22)); strings.TrimSpace(out) != "open" {
		t.Fatalf("A to git.example.test:22 after its lookup: %q", out)
	}
	if n := l.tcp22.Load(); n != 1 {
		t.Fatalf("the server got %d connections on 22, want 1", n)
	}
	for _, c := range []struct {
		who  *client.VM
		what string
		host string
	}{
		{a, "an unlisted name", "other.example.test"},
		{a, "an address never looked up", otherWeb},
		{b, "another VM, by the address A looked up", webAddr},
	} {
		if out, _ := l.py(c.who, tcpProbe(c.host, 22)); !strings.HasPrefix(strings.TrimSpace(out), "closed") {
			t.Errorf("%s (%s:22): %q", c.what, c.host, out)
		}
	}
	if n := l.tcp22.Load(); n != 1 {
		t.Errorf("the server got %d connections on 22, want only A's", n)
	}

	// Tightening: A's policy no longer lists the name. The address A was given is
	// closed at once, though its answer's lifetime is not over.
	l.setVM("a", policy.Policy{AllowedTCP: []string{"db.example.test:5432"}})
	if out, _ := l.py(a, tcpProbe(webAddr, 22)); !strings.HasPrefix(strings.TrimSpace(out), "closed") {
		t.Errorf("A to %s:22 after the entry was removed: %q", webAddr, out)
	}
	if n := l.tcp22.Load(); n != 1 {
		t.Errorf("the server got %d connections on 22 after the tightening, want 1", n)
	}

	// B's attempt is recorded, denied, as B's, by address: B looked nothing up.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var found bool
	for !found && ctx.Err() == nil {
		evs, err := l.api.Events(ctx, client.EventsFilter{VMID: l.id("b"), Decision: "deny"})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Kind == "connect" && e.IP == webAddr && e.Port == 22 {
				found = true
				if e.Reason != "ip_literal" || e.Host != "" {
					t.Errorf("B's attempt recorded as %+v", e)
				}
			}
		}
		if !found {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !found {
		t.Error("no record of B's denied attempt")
	}
}
