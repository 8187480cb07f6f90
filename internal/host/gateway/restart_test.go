package gateway

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/host/netns"
)

// attachment is the network of a tenant's VM on the i-th /30 of node A's range.
func attachment(t *testing.T, tenant, id string, i int) netns.Attachment {
	t.Helper()
	alloc, err := netns.NewAllocator(sandboxRange)
	if err != nil {
		t.Fatal(err)
	}
	subnet, err := alloc.Subnet(i)
	if err != nil {
		t.Fatal(err)
	}
	a, err := netns.NewAttachment(tenant, id, subnet, "")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// network is the stored network of attachment a, as an egressd from before nodes stored it:
// no node, no state.
func network(a netns.Attachment) store.Network {
	return store.Network{Mode: "netns", Netns: a.Name, Path: a.Path, Address: a.Addr.String(), Gateway: a.Gateway.String()}
}

// on is n as node id stores it in state.
func on(n store.Network, id, state string) store.Network {
	n.Node, n.State = id, state
	return n
}

// restarted is the store and the host that node A finds when it starts again:
//
//   - a, b: ready; a's namespace survived, b's did not (a reboot);
//   - d: deleted while A was down, its namespace still there;
//   - old, gone: stored before nodes; old's namespace is on this host, gone's on none, and
//     its address is of another node's range (TestLegacyVMsOfARebootedHostAreClaimed has
//     one of this node's range);
//   - x: ready on node B, whose namespace is in the directory this host shares with B;
//   - p: pending, created while A was down;
//   - c: creating; f: failed;
//   - an orphan namespace, whose VM was deleted while A was down, and one of another
//     gateway that shares the namespace directory.
func restarted(t *testing.T) (w *world, orphan, foreign string) {
	w = newWorld(t)
	w.put("t", "a", on(network(attachment(t, "t", "a", 0)), nodeA, store.NetworkReady))
	w.put("t", "b", on(network(attachment(t, "t", "b", 1)), nodeA, store.NetworkReady))
	w.put("t", "d", on(network(attachment(t, "t", "d", 2)), nodeA, store.NetworkDeleting))
	w.put("t", "old", network(attachment(t, "t", "old", 3)))
	w.put("t", "gone", gone())
	w.put("t", "x", store.Network{Mode: "netns", Node: nodeB, State: store.NetworkReady, Netns: netns.Name("t", "x"),
		Path: "/run/netns/" + netns.Name("t", "x"), Address: "100.97.0.2", Gateway: "100.97.0.1"})
	w.put("t", "p", store.Network{Mode: "netns", Node: nodeA, State: store.NetworkPending})
	w.put("t", "c", store.Network{Mode: "netns", Node: nodeA, State: store.NetworkCreating})
	w.put("t", "f", store.Network{Mode: "netns", Node: nodeA, State: store.NetworkFailed, Error: "earlier"})
	w.put("t", "plain", store.Network{Mode: "none"})
	w.policy("t", "a", "203.0.113.0/24")
	w.policy("t", "b", "203.0.113.0/24")
	o := attachment(t, "t", "o", 6)
	return w, o.Name, netns.Name("other", "f")
}

// gone is the network of the VM "gone" of restarted, stored before nodes on node B's range.
func gone() store.Network {
	name := netns.Name("t", "gone")
	return store.Network{Mode: "netns", Netns: name, Path: "/run/netns/" + name, Address: "100.97.0.6", Gateway: "100.97.0.5"}
}

// host puts on a's host what survived of the last run: see restarted.
func host(t *testing.T, a *node, foreign string) {
	a.nets.Put(attachment(t, "t", "a", 0))
	a.nets.Put(attachment(t, "t", "d", 2))
	a.nets.Put(attachment(t, "t", "old", 3))
	a.nets.Put(attachment(t, "t", "o", 6))
	a.nets.Foreign(foreign)
	a.nets.Foreign(netns.Name("t", "x"))
}

func TestRestartReconcilesTheNodesVMs(t *testing.T) {
	w, orphan, foreign := restarted(t)
	a := w.nodeA()
	host(t, a, foreign)
	a.run() // the first round is done when Run returns
	want := []string{
		"forwarding on",
		"repair " + netns.Name("t", "a"),
		"create " + netns.Name("t", "b"),
		"delete " + netns.Name("t", "d"),
		"repair " + netns.Name("t", "old"),
		"create " + netns.Name("t", "p"),
		"delete " + orphan,
	}
	if ops := a.nets.Ops(); !slices.Equal(ops, want) {
		t.Errorf("namespace changes:\n%s\nwant:\n%s", strings.Join(ops, "\n"), strings.Join(want, "\n"))
	}
	if _, ok := w.get("t", "d"); ok {
		t.Error("the deleted VM's row is still there")
	}
	if old, _ := w.get("t", "old"); old.Network != on(network(attachment(t, "t", "old", 3)), nodeA, store.NetworkReady) {
		t.Errorf("the VM stored before nodes whose namespace is here: %+v, want it claimed, ready", old.Network)
	}
	for id, want := range map[string]store.Network{
		"gone": gone(),
		"c":    {Mode: "netns", Node: nodeA, State: store.NetworkCreating},
		"f":    {Mode: "netns", Node: nodeA, State: store.NetworkFailed, Error: "earlier"},
	} {
		if vm, _ := w.get("t", id); vm.Network != want {
			t.Errorf("%s: %+v, want it untouched: %+v", id, vm.Network, want)
		}
	}
	// p takes the lowest subnet free when the round read the store: d's was not yet.
	if p := w.await("t", "p", store.NetworkReady); p.Address != "100.96.0.18" {
		t.Errorf("p got %s, want 100.96.0.18", p.Address)
	}
	a.enforced()
	golden(t, "adopted.netns", a.nets.Dump())
	golden(t, "adopted.nft", a.fw.Dump())
	for _, id := range []string{"x", "gone", "c", "f", "d"} {
		if name := netns.Name("t", id); a.fw.everNamed(name) {
			t.Errorf("the table named %s, which is not a live VM of this node", id)
		}
	}
	if a.gw.VMs() != 4 {
		t.Errorf("VMs = %d, want 4 (a, b, old, p)", a.gw.VMs())
	}
	if err := a.gw.Ready(); err != nil {
		t.Errorf("Ready = %v", err)
	}
}

// TestRestartGoesOnPastAVMItCannotRepair: a ready VM whose namespace's name is taken by
// another gateway's does not keep the node from starting, nor the other VMs from being
// adopted; its repair is tried again, and the other gateway's namespace is left alone.
func TestRestartGoesOnPastAVMItCannotRepair(t *testing.T) {
	w, _, foreign := restarted(t)
	w.put("t", "taken", on(network(attachment(t, "t", "taken", 7)), nodeA, store.NetworkReady))
	a := w.nodeA()
	host(t, a, foreign)
	taken := netns.Name("t", "taken")
	a.nets.Foreign(taken)
	tries := make(chan struct{}, 10)
	a.nets.setOnCreate(func(at netns.Attachment) {
		if at.Name == taken {
			select {
			case tries <- struct{}{}:
			default:
			}
		}
	})
	a.run()
	for i := range 2 {
		select {
		case <-tries:
		case <-time.After(bound):
			t.Fatalf("%d attempts to repair %s, want at least 2", i, taken)
		}
	}
	if n := strings.Count(a.nets.Dump(), "another gateway's"); n != 3 {
		t.Errorf("%d namespaces of another gateway left, want all 3:\n%s", n, a.nets.Dump())
	}
	if p := w.await("t", "p", store.NetworkReady); p.Address == "" {
		t.Error("p was not made")
	}
	if !a.nets.has(netns.Name("t", "b")) {
		t.Error("b was not re-adopted")
	}
}
