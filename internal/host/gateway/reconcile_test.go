package gateway

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/host/netns"
)

func TestPendingBecomesReady(t *testing.T) {
	w := newWorld(t)
	a := w.nodeA().run()
	name := netns.Name("t", "a")
	// When the namespace is made, the table in force names its interface already, and the
	// VM is still pending: it is ready only once its network is there.
	var mu sync.Mutex
	var inTable bool
	var state string
	a.nets.setOnCreate(func(at netns.Attachment) {
		vm, _ := w.raw.GetVM(context.Background(), "t", "a")
		allowed, ok := a.fw.allowed(at.Name)
		mu.Lock()
		defer mu.Unlock()
		inTable, state = ok && len(allowed) == 0, vm.Network.State
	})
	got := a.ready("t", "a", "203.0.113.0/24")
	want := store.Network{Mode: "netns", Node: nodeA, State: store.NetworkReady, Netns: name, Path: "/run/netns/" + name, Address: "100.96.0.2", Gateway: "100.96.0.1"}
	if got != want {
		t.Errorf("network %+v, want %+v", got, want)
	}
	mu.Lock()
	if !inTable || state != store.NetworkPending {
		t.Errorf("when the namespace was made: named in the table, denying everything: %v; state %q (want pending)", inTable, state)
	}
	mu.Unlock()
	if ops, want := a.nets.Ops(), []string{"forwarding on", "create " + name}; !slices.Equal(ops, want) {
		t.Errorf("namespace changes: %v, want %v", ops, want)
	}
	// Once the view shows it ready, its policy is in the table.
	if allowed, ok := a.fw.allowed(name); !ok || !slices.Equal(allowed, pfx("203.0.113.0/24")) {
		t.Errorf("the table allows %s %v (named: %v), want its policy's 203.0.113.0/24", name, allowed, ok)
	}
	if n := a.gw.VMs(); n != 1 {
		t.Errorf("VMs = %d, want 1", n)
	}
	if err := a.gw.Ready(); err != nil {
		t.Errorf("Ready = %v", err)
	}
}

func TestAddressesAreTheLowestFreeOfTheNodesRange(t *testing.T) {
	cases := []struct {
		name  string
		setup func(w *world, a *node)
		want  string // the next VM's address
	}{
		{"nothing in use", func(*world, *node) {}, "100.96.0.2"},
		{"a ready VM", func(_ *world, a *node) { a.ready("t", "a") }, "100.96.0.6"},
		{"a deleted VM", func(_ *world, a *node) {
			a.ready("t", "a")
			a.remove("t", "a")
		}, "100.96.0.2"},
		{"a gap between two VMs", func(_ *world, a *node) {
			a.ready("t", "a")
			a.ready("t", "b")
			a.ready("t", "c")
			a.remove("t", "b")
		}, "100.96.0.6"},
		{"a VM stored before nodes, whose namespace is on no host", func(w *world, _ *node) {
			w.put("t", "old", network(attachment(w.t, "t", "old", 0)))
		}, "100.96.0.6"},
		{"a VM that failed", func(w *world, a *node) {
			a.nets.Foreign(netns.Name("t", "a"))
			w.create(nodeA, "t", "a")
			w.await("t", "a", store.NetworkFailed)
		}, "100.96.0.2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			a := w.nodeA().run()
			tc.setup(w, a)
			if got := a.ready("t", "next"); got.Address != tc.want {
				t.Errorf("the next VM got %s, want %s", got.Address, tc.want)
			}
		})
	}
}

// TestTwoNodesShareAStore: each node makes only its own VMs, from its own range, and never
// names another node's in its table.
func TestTwoNodesShareAStore(t *testing.T) {
	w := newWorld(t)
	a := w.nodeA().run()
	b := w.node(nodeB, rangeB, time.Hour).run()
	a1 := a.ready("t", "a1", "203.0.113.0/24")
	a2 := a.ready("t", "a2")
	b1 := b.ready("t", "b1", "203.0.113.0/24")
	for _, c := range []struct {
		n          store.Network
		node, addr string
	}{{a1, nodeA, "100.96.0.2"}, {a2, nodeA, "100.96.0.6"}, {b1, nodeB, "100.97.0.2"}} {
		if c.n.Node != c.node || c.n.Address != c.addr {
			t.Errorf("%s: node %s, address %s; want %s, %s", c.n.Netns, c.n.Node, c.n.Address, c.node, c.addr)
		}
	}
	a.enforced()
	if got, want := listed(a), sorted([]string{a1.Netns, a2.Netns}); !slices.Equal(got, want) {
		t.Errorf("node A's namespaces: %v, want %v", got, want)
	}
	if got, want := listed(b), []string{b1.Netns}; !slices.Equal(got, want) {
		t.Errorf("node B's namespaces: %v, want %v", got, want)
	}
	if got, want := a.fw.Sandboxes(), sorted([]string{a1.Netns, a2.Netns}); !slices.Equal(got, want) {
		t.Errorf("node A's table names %v, want %v", got, want)
	}
	if a.gw.VMs() != 2 || b.gw.VMs() != 1 {
		t.Errorf("VMs: A %d, B %d; want 2 and 1", a.gw.VMs(), b.gw.VMs())
	}

	// B removes its VM; A, which sees the same changes, touches nothing.
	a.nets.Ops()
	b.remove("t", "b1")
	if b.nets.has(b1.Netns) {
		t.Error("B did not remove its VM's namespace")
	}
	// A VM of a node that is not running stays pending: no other node makes it.
	w.create("gw-c", "t", "c1")
	// A round of each node that makes a VM created after c1 has seen c1 and b1's deletion.
	a.ready("t", "a3")
	b.ready("t", "b2")
	if vm, _ := w.get("t", "c1"); vm.Network.State != store.NetworkPending {
		t.Errorf("gw-c's VM is %q, want pending", vm.Network.State)
	}
	if ops, want := a.nets.Ops(), []string{"create " + netns.Name("t", "a3")}; !slices.Equal(ops, want) {
		t.Errorf("node A's namespace changes: %v, want only a3's", ops)
	}
	for _, c := range []struct {
		n     *node
		names []string
	}{{a, []string{b1.Netns, netns.Name("t", "b2"), netns.Name("t", "c1")}}, {b, []string{a1.Netns, a2.Netns, netns.Name("t", "a3"), netns.Name("t", "c1")}}} {
		for _, name := range c.names {
			if c.n.fw.everNamed(name) {
				t.Errorf("node %s's table named %s, another node's VM", c.n.id, name)
			}
		}
	}
}

func TestARetiredVMIsRemoved(t *testing.T) {
	w := newWorld(t)
	a := w.nodeA().run()
	n := a.ready("t", "a", "203.0.113.0/24")
	b := a.ready("t", "b", "203.0.113.0/24")
	a.nets.Ops()
	// The row goes last: when it is gone (the API's sign that the deletion is done), the
	// namespace and the rules are gone too.
	var mu sync.Mutex
	var nsLeft, rulesLeft bool
	a.st.setBeforeDelete(func(string, string) {
		_, named := a.fw.allowed(n.Netns)
		mu.Lock()
		defer mu.Unlock()
		nsLeft, rulesLeft = a.nets.has(n.Netns), named
	})
	a.remove("t", "a")
	mu.Lock()
	if nsLeft || rulesLeft {
		t.Errorf("when the row was deleted: namespace left %v, rules left %v", nsLeft, rulesLeft)
	}
	mu.Unlock()
	if ops, want := a.nets.Ops(), []string{"delete " + n.Netns}; !slices.Equal(ops, want) {
		t.Errorf("namespace changes: %v, want %v", ops, want)
	}
	if got := a.fw.Sandboxes(); !slices.Equal(got, []string{b.Netns}) {
		t.Errorf("the table names %v, want only b", got)
	}
	if a.gw.VMs() != 1 {
		t.Errorf("VMs = %d, want 1", a.gw.VMs())
	}
}

func TestAFailedNetworkLeavesNothing(t *testing.T) {
	w := newWorld(t)
	a := w.nodeA().run()
	// The namespace's name is taken by another gateway's, in a shared directory.
	name := netns.Name("t", "a")
	a.nets.Foreign(name)
	before := a.nets.Dump()
	w.create(nodeA, "t", "a", "203.0.113.0/24")
	n := w.await("t", "a", store.NetworkFailed)
	if !strings.Contains(n.Error, "another gateway") || n.Netns != "" || n.Address != "" {
		t.Errorf("failed network %+v: want the reason, and no attachment", n)
	}
	a.enforced()
	if got := a.nets.Dump(); got != before {
		t.Errorf("the failure changed namespaces:\n%s\nwas:\n%s", got, before)
	}
	if got := a.fw.Sandboxes(); len(got) != 0 {
		t.Errorf("the failure left rules for %v", got)
	}
	// Nothing of it stays: its subnet is free, and the gateway ready.
	if got := a.ready("t", "b"); got.Address != "100.96.0.2" {
		t.Errorf("the next VM got %s, want the failed one's 100.96.0.2", got.Address)
	}
	if err := a.gw.Ready(); err != nil {
		t.Errorf("Ready = %v", err)
	}
}

// TestRetiredWhileBeingMade: a VM deleted while its node makes its network ends deleted,
// never ready, with nothing left.
func TestRetiredWhileBeingMade(t *testing.T) {
	w := newWorld(t)
	a := w.nodeA().run()
	name := netns.Name("t", "a")
	errc := make(chan error, 1)
	a.nets.setOnCreate(func(at netns.Attachment) {
		if at.Name == name {
			_, err := w.st.RetireVM(context.Background(), "t", "a")
			errc <- err
		}
	})
	w.create(nodeA, "t", "a", "203.0.113.0/24")
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	w.awaitGone("t", "a")
	a.enforced()
	if states := a.st.states(); slices.Contains(states, store.NetworkReady) {
		t.Errorf("the node wrote the states %v; the VM must never be ready", states)
	}
	if ops, want := a.nets.Ops(), []string{"forwarding on", "create " + name, "delete " + name}; !slices.Equal(ops, want) {
		t.Errorf("namespace changes: %v, want %v", ops, want)
	}
	if got := a.fw.Sandboxes(); len(got) != 0 {
		t.Errorf("the table names %v", got)
	}
}

// TestCreatingIsLeftAlone: a VM whose creator is still storing its policy is not made, and
// never named in the table, until it is pending.
func TestCreatingIsLeftAlone(t *testing.T) {
	w := newWorld(t)
	a := w.nodeA().run()
	name := netns.Name("t", "c")
	if _, err := w.st.CreateVM(context.Background(), store.VM{Tenant: "t", ID: "c", Network: store.Network{Mode: "netns", Node: nodeA, State: store.NetworkCreating}}); err != nil {
		t.Fatal(err)
	}
	a.ready("t", "later") // made by a round that saw c
	if vm, _ := w.get("t", "c"); vm.Network.State != store.NetworkCreating || a.nets.has(name) || a.fw.everNamed(name) {
		t.Fatalf("a creating VM was touched: %+v, namespace %v, named in the table %v", vm.Network, a.nets.has(name), a.fw.everNamed(name))
	}
	w.policy("t", "c", "203.0.113.0/24")
	w.setState("t", "c", store.NetworkCreating, store.NetworkPending)
	if n := w.await("t", "c", store.NetworkReady); n.Address != "100.96.0.6" {
		t.Errorf("c got %s, want 100.96.0.6", n.Address)
	}
}

func listed(n *node) []string {
	names, _ := n.nets.List()
	return names
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func (s *gwStore) setBeforeDelete(f func(tenant, id string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beforeDelete = f
}
