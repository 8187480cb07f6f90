package gateway

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/egressd/egressd/policy"
)

// TestAReusedAddressInheritsNoConnections: the connections a VM opened through its set
// carry the ct mark, and the forward chain passes a marked flow of that source address
// whatever the set holds. A VM removed with such a connection open, and its address given
// to the next VM (the lowest free one, at once), must not leave the new VM a flow it can
// ride: the new VM, root in its sandbox, can send on the old 5-tuple. Whatever the new
// VM's policy, and whether or not it ever looks anything up, the old flows are cut.
func TestAReusedAddressInheritsNoConnections(t *testing.T) {
	for _, c := range []struct {
		name string
		p    policy.Policy
	}{
		{"the same policy", gitPolicy},
		{"a policy that allows nothing", policy.Policy{}},
		{"monitor", policy.Policy{Mode: policy.Monitor}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTCPWorld(t)
			a := w.tcpNode()
			nameA, addr := a.vm("t", "a", gitPolicy)
			must(t, a.answer(addr, "t", "a", "git.example.test", 60, "203.0.113.10"))
			if !a.fw.kernel.connect(nameA, "203.0.113.10", 22) {
				t.Fatal("A: no connection")
			}
			a.fw.kernel.flushes()
			a.remove("t", "a")
			if f := a.fw.kernel.flushes(); !slices.Contains(f, addr) {
				t.Errorf("removing A: FlushTCP calls %v, none for its %v", f, addr)
			}
			nameB, addrB := a.vm("t", "b", c.p)
			if addrB != addr {
				t.Fatalf("B got %v, not A's %v: the test needs the address reused", addrB, addr)
			}
			if got := a.fw.kernel.open(nameB); len(got) != 0 {
				t.Errorf("B, at A's old address, has A's connections %v", got)
			}
		})
	}
}

// TestAnAddressFreedWhileDown: a VM removed while egressd was down leaves marked
// connections from its address that this run knows nothing of (no book): the next VM
// made at that address does not get them either.
func TestAnAddressFreedWhileDown(t *testing.T) {
	w := newTCPWorld(t)
	a := w.tcpNode()
	addr := attachment(t, "t", "b", 0).Addr
	a.fw.kernel.mu.Lock()
	a.fw.kernel.flows = map[netip.Addr][]endpoint{addr: {{mustIP("203.0.113.10"), 22}}}
	a.fw.kernel.mu.Unlock()
	nameB, addrB := a.vm("t", "b", gitPolicy)
	if addrB != addr {
		t.Fatalf("B got %v, not %v: the test needs the address reused", addrB, addr)
	}
	if got := a.fw.kernel.open(nameB); len(got) != 0 {
		t.Errorf("B has the connections of an earlier holder of its address: %v", got)
	}
	// B's own connections are B's: a later change that keeps them keeps them.
	must(t, a.answer(addr, "t", "b", "git.example.test", 60, "203.0.113.10"))
	if !a.fw.kernel.connect(nameB, "203.0.113.10", 22) {
		t.Fatal("B: no connection")
	}
	a.setTCPPolicy("t", "b", policy.Policy{AllowedTCP: []string{"git.example.test:22", "x.example.test:1"}})
	if got := a.fw.kernel.open(nameB); !slices.Equal(got, []string{"203.0.113.10:22"}) {
		t.Errorf("B's own connection after a loosening: %v", got)
	}
}
