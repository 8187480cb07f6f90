package gateway

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/host/netns"
)

// Two VMs of different tenants whose namespace names collide: netns.Name keeps 40 bits of a
// hash, so such pairs are found in seconds (a birthday search), and a tenant that knows
// another's tenant and vm_id can search for one of its own.
const (
	collideTenantA, collideVMA = "tenant-a", "v75480"
	collideTenantB, collideVMB = "tenant-b", "w137327"
)

// TestANameInUseIsRefused: a pending VM whose namespace name is that of another VM of the
// node fails, naming neither that VM nor its tenant, and the other VM keeps its namespace,
// its address and its rules; the firewall stays ready.
func TestANameInUseIsRefused(t *testing.T) {
	if netns.Name(collideTenantA, collideVMA) != netns.Name(collideTenantB, collideVMB) {
		t.Fatal("the test's names do not collide")
	}
	w := newWorld(t)
	a := w.nodeA().run()
	first := a.ready(collideTenantA, collideVMA, "203.0.113.0/24")
	before := a.nets.Dump()
	a.nets.Ops()

	w.create(nodeA, collideTenantB, collideVMB, "198.51.100.0/24")
	n := w.await(collideTenantB, collideVMB, store.NetworkFailed)
	if n.Netns != "" || n.Address != "" || n.Error == "" {
		t.Errorf("the second VM's network: %+v; want failed with a reason and no attachment", n)
	}
	if strings.Contains(n.Error, collideTenantA) || strings.Contains(n.Error, collideVMA) {
		t.Errorf("the error %q names the other tenant's VM", n.Error)
	}
	a.enforced()
	if got := a.nets.Dump(); got != before {
		t.Errorf("the namespaces changed:\n%s\nwas:\n%s", got, before)
	}
	if ops := a.nets.Ops(); len(ops) != 0 {
		t.Errorf("namespace changes: %v, want none", ops)
	}
	if vm, _ := w.get(collideTenantA, collideVMA); vm.Network != first {
		t.Errorf("the first VM's network is %+v, was %+v", vm.Network, first)
	}
	if allowed, ok := a.fw.allowed(first.Netns); !ok || len(allowed) != 1 || allowed[0].String() != "203.0.113.0/24" {
		t.Errorf("the table allows the first VM %v (named: %v), want its own 203.0.113.0/24", allowed, ok)
	}
	if err := a.gw.Ready(); err != nil {
		t.Errorf("Ready = %v", err)
	}
	// The failed VM goes (as the API removes it), and the first one is untouched still.
	if err := w.st.DeleteVM(t.Context(), collideTenantB, collideVMB); err != nil {
		t.Fatal(err)
	}
	a.ready("t", "later")
	if !a.nets.has(first.Netns) {
		t.Error("the first VM's namespace was removed")
	}
}

// TestALegacyVMIsNotClaimedByAnotherVMsNamespace: a VM stored before nodes is claimed by the
// node on whose host its namespace is found; a namespace of that name that belongs to a VM
// of the node (a collision of the names) is not its namespace.
func TestALegacyVMIsNotClaimedByAnotherVMsNamespace(t *testing.T) {
	w := newWorld(t)
	a := w.nodeA().run()
	mine := a.ready(collideTenantB, collideVMB, "203.0.113.0/24")
	legacy := network(attachment(t, collideTenantA, collideVMA, 5))
	w.put(collideTenantA, collideVMA, legacy)
	before := a.nets.Dump()
	a.nets.Ops()
	a.ready("t", "later") // made by a round that saw the legacy VM
	if vm, _ := w.get(collideTenantA, collideVMA); vm.Network != legacy {
		t.Errorf("the VM stored before nodes is now %+v; want it unclaimed, %+v", vm.Network, legacy)
	}
	if ops, want := a.nets.Ops(), []string{"create " + netns.Name("t", "later")}; !slices.Equal(ops, want) {
		t.Errorf("namespace changes: %v, want %v", ops, want)
	}
	if vm, _ := w.get(collideTenantB, collideVMB); vm.Network != mine {
		t.Errorf("the node's VM is now %+v, was %+v", vm.Network, mine)
	}
	if !strings.Contains(a.nets.Dump(), mine.Netns+" "+mine.Path+": eg") || !strings.Contains(before, mine.Address) {
		t.Errorf("the node's namespace changed:\n%s", a.nets.Dump())
	}
	if allowed, ok := a.fw.allowed(mine.Netns); !ok || len(allowed) != 1 {
		t.Errorf("the table allows the node's VM %v (named: %v), want its policy", allowed, ok)
	}
}

// TestARangeChangedUnderItsVMs: a node restarted with another --sandbox-cidr still has VMs
// with addresses of the old one. They fail closed: the table does not name them (the
// firewall drops every packet of a sandbox interface it does not name), nothing else is held
// up, new VMs take addresses of the new range, and the old VMs can still be deleted.
func TestARangeChangedUnderItsVMs(t *testing.T) {
	w := newWorld(t)
	old := attachment(t, "t", "old", 0) // 100.96.0.0/30
	w.put("t", "old", on(network(old), nodeA, store.NetworkReady))
	w.policy("t", "old", "203.0.113.0/24")
	a := w.node(nodeA, netip.MustParsePrefix("100.96.128.0/24"), time.Hour)
	a.nets.Put(old)
	a.run()
	a.enforced()
	if a.fw.everNamed(old.Name) {
		t.Error("the table names a VM whose address is outside the node's range")
	}
	if err := a.gw.Ready(); err != nil {
		t.Errorf("Ready = %v", err)
	}
	if n := a.ready("t", "new", "203.0.113.0/24"); n.Address != "100.96.128.2" {
		t.Errorf("a new VM got %s, want the new range's first", n.Address)
	}
	if a.fw.everNamed(old.Name) || a.gw.VMs() != 1 {
		t.Errorf("after a new VM: old VM named %v, VMs %d (want 1)", a.fw.everNamed(old.Name), a.gw.VMs())
	}
	a.remove("t", "old")
	if a.nets.has(old.Name) {
		t.Error("the old VM's namespace stays after its deletion")
	}
}

// TestIDsThatDifferByCase: a node is its ID byte for byte: a VM placed on "GW-A" is not
// gw-a's. VMs whose tenants or IDs differ by case are distinct sandboxes: removing one
// leaves the others.
func TestIDsThatDifferByCase(t *testing.T) {
	w := newWorld(t)
	a := w.nodeA().run()
	w.create("GW-A", "t", "x")
	v := a.ready("t", "v", "203.0.113.0/24")
	upper := a.ready("t", "V")
	tenant := a.ready("T", "v")
	if vm, _ := w.get("t", "x"); vm.Network.State != store.NetworkPending || a.nets.has(netns.Name("t", "x")) || a.fw.everNamed(netns.Name("t", "x")) {
		t.Errorf("gw-a touched GW-A's VM: %+v", vm.Network)
	}
	names := []string{v.Netns, upper.Netns, tenant.Netns}
	if len(slices.Compact(sorted(names))) != 3 {
		t.Fatalf("names %v: want three", names)
	}
	a.remove("t", "V")
	for _, n := range []store.Network{v, tenant} {
		if !a.nets.has(n.Netns) {
			t.Errorf("%s went with t/V", n.Netns)
		}
	}
	if allowed, ok := a.fw.allowed(v.Netns); !ok || len(allowed) != 1 {
		t.Errorf("t/v's rules after t/V went: %v %v", allowed, ok)
	}
}
