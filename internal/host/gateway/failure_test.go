package gateway

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/host/netns"
)

// Failures and restarts that the lifecycle must survive: an upgrade across a reboot, a host
// restarted under another node ID, a node stopped halfway through making a network.

// TestLegacyVMsOfARebootedHostAreClaimed: an egressd from before nodes re-made every stored
// sandbox network at start, as after a reboot (which loses every namespace). Upgraded across
// a reboot, a VM stored before nodes has no namespace left on any host; its address, from
// this node's sandbox range (which no other node's overlaps), says it is this node's: the
// node claims it and makes its network again, as the old one did. One whose address is
// another range's is not this node's, and is left alone.
func TestLegacyVMsOfARebootedHostAreClaimed(t *testing.T) {
	w := newWorld(t)
	mine := attachment(t, "t", "mine", 3)
	w.put("t", "mine", network(mine))
	w.policy("t", "mine", "203.0.113.0/24")
	theirs := store.Network{Mode: "netns", Netns: netns.Name("t", "theirs"), Path: "/run/netns/" + netns.Name("t", "theirs"),
		Address: "100.97.0.2", Gateway: "100.97.0.1"}
	w.put("t", "theirs", theirs)

	a := w.nodeA().run()
	if vm, _ := w.get("t", "mine"); vm.Network != on(network(mine), nodeA, store.NetworkReady) {
		t.Errorf("the VM stored before nodes, with an address of this node's range: %+v, want it claimed, ready", vm.Network)
	}
	if !a.nets.has(mine.Name) {
		t.Errorf("its namespace was not made again (namespace changes: %v)", a.nets.Ops())
	}
	a.enforced()
	if allowed, ok := a.fw.allowed(mine.Name); !ok || !slices.Equal(allowed, pfx("203.0.113.0/24")) {
		t.Errorf("the table allows it %v (named: %v), want its policy's 203.0.113.0/24", allowed, ok)
	}
	if vm, _ := w.get("t", "theirs"); vm.Network != theirs {
		t.Errorf("a VM stored before nodes with another range's address: %+v, want it untouched", vm.Network)
	}
	if a.nets.has(theirs.Netns) {
		t.Error("a VM of another range got a namespace here")
	}
}

// TestANewNodeIDLeavesTheOldIDsNetworks: a host restarted under another --node-id (a host
// name that changed, a flag edited) finds the namespaces of the VMs it ran under its old ID.
// They are not its own VMs, but they are not orphans either: the VMs exist, and their
// sandboxes may still hold the namespaces. Deleting them would cut those sandboxes off for
// good (a namespace made again later is a new one, which the sandbox is not in); left
// alone, they fail closed behind the new table, and the host started again under its old ID
// re-adopts them as they are.
func TestANewNodeIDLeavesTheOldIDsNetworks(t *testing.T) {
	w := newWorld(t)
	old := w.nodeA()
	ctx, stop := context.WithCancel(context.Background())
	if err := old.gw.Run(ctx); err != nil {
		t.Fatal(err)
	}
	v := old.ready("t", "v", "203.0.113.0/24")
	stop()
	old.gw.Wait() // the old gateway has stopped

	renamed := w.node("gw-renamed", netip.MustParsePrefix("100.98.0.0/24"), time.Hour)
	sameHost(renamed, old)
	renamed.run()
	renamed.ready("t", "new")
	if !renamed.nets.has(v.Netns) {
		t.Fatalf("the node under its new ID deleted the namespace of %s, a VM of its old ID (namespace changes: %v)", "t/v", renamed.nets.Ops())
	}
	if vm, _ := w.get("t", "v"); vm.Network.Node != nodeA || vm.Network.State != store.NetworkReady {
		t.Errorf("the old ID's VM: %+v, want it untouched", vm.Network)
	}
	if _, ok := renamed.fw.allowed(v.Netns); ok {
		t.Error("the new ID's table names the old ID's VM")
	}

	// Back under its old ID, the host re-adopts it as it is.
	back := w.nodeA()
	sameHost(back, renamed)
	back.run()
	back.enforced()
	if allowed, ok := back.fw.allowed(v.Netns); !ok || !slices.Equal(allowed, pfx("203.0.113.0/24")) {
		t.Errorf("back under its old ID, the table allows the VM %v (named: %v)", allowed, ok)
	}
}

// sameHost makes n's gateway run on the host of was: its namespaces and its firewall.
func sameHost(n, was *node) {
	n.w.t.Helper()
	n.nets, n.fw = was.nets, was.fw
	cfg := n.gw.cfg
	var err error
	if n.gw, err = New(n.st, FromView(n.view), n.nets, n.fw, cfg); err != nil {
		n.w.t.Fatal(err)
	}
	n.gw.firstRetry = time.Millisecond
}

// TestKilledWhileMakingANetwork: a node that stops after making a pending VM's namespace,
// before it could write the VM ready, finishes the VM when it starts again: ready, at the
// namespace it made, nothing left twice.
func TestKilledWhileMakingANetwork(t *testing.T) {
	w := newWorld(t)
	a := w.nodeA()
	ctx, kill := context.WithCancel(context.Background())
	name := netns.Name("t", "v")
	a.nets.setOnCreate(func(at netns.Attachment) {
		if at.Name == name {
			kill() // the ready write that follows fails: the process is gone
		}
	})
	if err := a.gw.Run(ctx); err != nil {
		t.Fatal(err)
	}
	w.create(nodeA, "t", "v", "203.0.113.0/24")
	eventually(t, "the namespace made", func() bool { return a.nets.has(name) })
	a.gw.Wait() // the stopped gateway has stopped
	if vm, _ := w.get("t", "v"); vm.Network.State != store.NetworkPending {
		t.Fatalf("after the kill: %+v, want still pending", vm.Network)
	}

	b := w.nodeA()
	sameHost(b, a)
	b.nets.setOnCreate(nil)
	b.run()
	n := w.await("t", "v", store.NetworkReady)
	b.enforced()
	if n.Netns != name || n.Address != "100.96.0.2" {
		t.Errorf("after the restart: %+v, want %s at 100.96.0.2", n, name)
	}
	if got := listed(b); !slices.Equal(got, []string{name}) {
		t.Errorf("namespaces %v, want only %s", got, name)
	}
	if allowed, ok := b.fw.allowed(name); !ok || !slices.Equal(allowed, pfx("203.0.113.0/24")) {
		t.Errorf("the table allows it %v (named: %v), want its policy", allowed, ok)
	}
}

// TestKilledWhileDeleting: a node that stops after removing a deleted VM's namespace, before
// it could delete the row, deletes the row when it starts again.
func TestKilledWhileDeleting(t *testing.T) {
	w := newWorld(t)
	a := w.nodeA()
	ctx, kill := context.WithCancel(context.Background())
	if err := a.gw.Run(ctx); err != nil {
		t.Fatal(err)
	}
	n := a.ready("t", "v")
	a.st.setBeforeDelete(func(string, string) { kill() })
	w.retire("t", "v")
	eventually(t, "the namespace removed", func() bool { return !a.nets.has(n.Netns) })
	a.gw.Wait() // the killed gateway has stopped
	if vm, ok := w.get("t", "v"); !ok || vm.Network.State != store.NetworkDeleting {
		t.Fatalf("after the kill: %+v (there: %v), want deleting", vm.Network, ok)
	}
	b := w.nodeA()
	sameHost(b, a)
	b.run()
	w.awaitGone("t", "v")
	if got := listed(b); len(got) != 0 {
		t.Errorf("namespaces %v left", got)
	}
}

// TestTheDatabaseLostWhileMakingAndDeleting: while the node cannot write to the store, a
// network it made cannot be recorded, nor a deletion finished; it keeps trying, and once
// the database is back the VM is ready (at the network made, no second one) and the other
// gone.
func TestTheDatabaseLostWhileMakingAndDeleting(t *testing.T) {
	w := newWorld(t)
	a := w.nodeA().run()
	old := a.ready("t", "old")
	a.st.lost.Store(true)
	w.create(nodeA, "t", "new")
	w.retire("t", "old")
	eventually(t, "the new namespace made and the old one removed", func() bool {
		return a.nets.has(netns.Name("t", "new")) && !a.nets.has(old.Netns)
	})
	time.Sleep(50 * time.Millisecond) // a few failed rounds
	if vm, _ := w.get("t", "new"); vm.Network.State != store.NetworkPending {
		t.Fatalf("with the database lost: %+v, want pending", vm.Network)
	}
	a.st.lost.Store(false)
	n := w.await("t", "new", store.NetworkReady)
	w.awaitGone("t", "old")
	if n.Address != "100.96.0.6" {
		t.Errorf("new is at %s, want 100.96.0.6 (old's 100.96.0.2 was still stored when it was made)", n.Address)
	}
	if got := listed(a); !slices.Equal(got, []string{n.Netns}) {
		t.Errorf("namespaces %v, want only %s", got, n.Netns)
	}
}
