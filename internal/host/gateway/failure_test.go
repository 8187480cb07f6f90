package gateway

import (
	"slices"
	"testing"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/host/netns"
)

// Failures and restarts that the lifecycle must survive.

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
