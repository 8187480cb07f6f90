package gateway

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
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

// TestAGrantExpiringCutsItsConnections: a grant's allowed_tcp entry (DESIGN §2.8) opens
// like the policy's own; when it expires (the view compiles the policy again, by its own
// clock) the pairs it opened leave the set and the connections only it allowed are cut,
// while those the VM's policy allows by itself stay.
func TestAGrantExpiringCutsItsConnections(t *testing.T) {
	w := newTCPWorld(t)
	a := w.tcpNode()
	name, addr := a.vm("t", "a", policy.Policy{AllowedTCP: []string{"db.example.test:5432"}})
	if _, err := w.st.CreateGrant(t.Context(), store.Grant{Tenant: "t", Scope: store.ScopeVM, ObjectID: "a",
		TCP: []string{"git.example.test:22"}, Domains: []string{}, CIDRs: []string{}}, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	a.enforced()
	must(t, a.answer(addr, "t", "a", "git.example.test", 60, "203.0.113.10"))
	must(t, a.answer(addr, "t", "a", "db.example.test", 60, "203.0.113.20"))
	for _, e := range []struct {
		ip   string
		port uint16
	}{{"203.0.113.10", 22}, {"203.0.113.20", 5432}} {
		if !a.fw.kernel.connect(name, e.ip, e.port) {
			t.Fatalf("%s:%d: no connection (the grant not in force?)", e.ip, e.port)
		}
	}
	eventually(t, "the grant's connection cut", func() bool {
		return slices.Equal(a.fw.kernel.open(name), []string{"203.0.113.20:5432"})
	})
	if got := a.fw.kernel.elements(name); len(got) != 1 || !strings.HasPrefix(got[0], "203.0.113.20 . 5432 ") {
		t.Errorf("set %v after the grant expired, want db's element only", got)
	}
	if err := a.answer(addr, "t", "a", "git.example.test", 60, "203.0.113.10"); err != nil {
		t.Fatal(err)
	}
	if a.fw.kernel.connect(name, "203.0.113.10", 22) {
		t.Error("a new lookup after the grant expired opened its entry")
	}
}

// TestASessionOpeningTightens: in transparent mode a VM's traffic is held to its policy
// AND every open session's (DESIGN §2.4). A session that opens with a narrower
// allowed_tcp removes the VM's pairs it does not allow and cuts their connections; a
// lookup then opens only what both layers allow.
func TestASessionOpeningTightens(t *testing.T) {
	w := newTCPWorld(t)
	a := w.tcpNode()
	both := policy.Policy{AllowedTCP: []string{"db.example.test:5432", "git.example.test:22"}}
	name, addr := a.vm("t", "a", both)
	must(t, a.answer(addr, "t", "a", "git.example.test", 60, "203.0.113.10"))
	must(t, a.answer(addr, "t", "a", "db.example.test", 60, "203.0.113.20"))
	if !a.fw.kernel.connect(name, "203.0.113.10", 22) || !a.fw.kernel.connect(name, "203.0.113.20", 5432) {
		t.Fatal("no connections")
	}
	if _, err := w.st.CreateSession(t.Context(), store.Session{Tenant: "t", ID: "s1", VMID: "a", TokenHash: make([]byte, 32)}); err != nil {
		t.Fatal(err)
	}
	np, _, err := policy.Policy{AllowedTCP: []string{"db.example.test:5432"}}.WithDefaults().NormalizeFor(tcpClassifier)
	must(t, err)
	if _, err := w.st.PutPolicy(t.Context(), store.PolicyRecord{Tenant: "t", Scope: store.ScopeSession, ID: "s1", Policy: np}); err != nil {
		t.Fatal(err)
	}
	a.enforced()
	if got := a.fw.kernel.open(name); !slices.Equal(got, []string{"203.0.113.20:5432"}) {
		t.Errorf("connections %v with the session open, want db's only", got)
	}
	if got := a.fw.kernel.elements(name); len(got) != 1 || !strings.HasPrefix(got[0], "203.0.113.20 . 5432 ") {
		t.Errorf("set %v with the session open, want db's element only", got)
	}
	must(t, a.answer(addr, "t", "a", "git.example.test", 60, "203.0.113.10"))
	if a.fw.kernel.connect(name, "203.0.113.10", 22) {
		t.Error("a lookup with the session open opened what only the VM layer allows")
	}
}

// TestMonitorToEnforceFlushesConntrack: a monitor sandbox's kernel lets everything through
// (its flows are tracked, unmarked). Switched to enforce, those flows' packets from the
// sandbox are dropped, but their conntrack entries would stay, and the forward chain
// passes what comes back on an established flow into the sandbox: a server the policy no
// longer allows could go on sending to it. The switch deletes the entries outside
// allowed_cidrs, as a tightening of allowed_cidrs does; staying in monitor flushes nothing.
func TestMonitorToEnforceFlushesConntrack(t *testing.T) {
	w := newTCPWorld(t)
	a := w.tcpNode()
	_, addr := a.vm("t", "a", policy.Policy{Mode: policy.Monitor, AllowedCIDRs: []string{"203.0.113.0/24"}})
	a.fw.Flushes()
	a.setTCPPolicy("t", "a", policy.Policy{Mode: policy.Monitor, AllowedCIDRs: []string{"203.0.113.0/24"}, AllowedTCP: []string{"x.example.test:1"}})
	if got := flushStrings(a.fw.Flushes()); len(got) != 0 {
		t.Errorf("a change within monitor flushed %q", got)
	}
	a.setTCPPolicy("t", "a", policy.Policy{AllowedCIDRs: []string{"203.0.113.0/24"}})
	if got, want := flushStrings(a.fw.Flushes()), []string{addr.String() + " keep 203.0.113.0/24"}; !slices.Equal(got, want) {
		t.Errorf("flushes after monitor → enforce: %q, want %q", got, want)
	}
}
