package view_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/policy"
)

// In transparent mode a VM's traffic is held to its policy AND every open session's.
func TestVMSetIsVMAndEverySession(t *testing.T) {
	f := newFixture(t, view.Config{})
	addr := netip.MustParseAddr("100.96.0.6")
	if _, err := f.st.CreateVM(context.Background(), store.VM{Tenant: "t", ID: "net", Network: store.Network{Mode: "netns", Address: addr.String(), Gateway: "100.96.0.5"}}); err != nil {
		t.Fatal(err)
	}
	var vm *view.VM
	f.eventually("the VM", func() bool { vm = f.v.VMByAddr(addr); return vm != nil })
	if vm.ID != "net" || vm.Tenant != "t" || vm.Network.Mode != "netns" {
		t.Fatalf("VM = %+v", vm)
	}
	if d := vm.Effective().Decide(https); d.Allow || d.Layer != policy.LayerDefault {
		t.Fatalf("nothing set: %+v", d)
	}
	if f.v.VMByAddr(netip.MustParseAddr("100.96.0.2")) != nil {
		t.Error("an address of no VM found one")
	}

	select { // drain earlier signals
	case <-f.v.Changed():
	default:
	}
	f.put(store.ScopeVM, "net", policy.Policy{AllowHTTPS: true})
	f.eventually("the VM policy", func() bool { return allows(vm, https) })
	select {
	case <-f.v.Changed():
	case <-time.After(time.Second):
		t.Error("no change signal for a VM policy")
	}

	// Two sessions share the VM: both must allow.
	f.session("a", "net", "ta")
	f.session("b", "net", "tb")
	f.put(store.ScopeSession, "a", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.com"}})
	f.eventually("caught up", f.caughtUp)
	if !allows(vm, https) {
		t.Fatal("session a allows api.example.com, b has no policy: the VM must allow it")
	}
	f.put(store.ScopeSession, "b", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"other.example.com"}})
	f.eventually("session b's policy to bind the VM", func() bool { return !allows(vm, https) })
	// Ending session b lifts its restriction.
	if err := f.st.DeleteSession(context.Background(), "t", "b"); err != nil {
		t.Fatal(err)
	}
	f.eventually("session b's end", func() bool { return allows(vm, https) })

	// Deleting the VM ends it and removes its address.
	if err := f.st.DeleteVM(context.Background(), "t", "net"); err != nil {
		t.Fatal(err)
	}
	f.eventually("the VM to end", func() bool { return f.v.VMByAddr(addr) == nil })
	select {
	case <-vm.Done():
	case <-time.After(time.Second):
		t.Error("VM Done not closed")
	}
}

// TestOnlyLiveNetworksAreFoundByAddress: the transparent proxy and the DNS filter find a
// sandbox by its source address, and must find only a sandbox its node runs. A VM whose
// network is not made yet has no address to find; one being deleted has lost its policies
// (RetireVM), and serving it would serve it the default policy instead of its own: it is
// not found, and its connections end. A VM's network change shows in the view.
func TestOnlyLiveNetworksAreFoundByAddress(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, view.Config{})
	addr := netip.MustParseAddr("100.96.0.2")
	update := func(id string, change func(*store.Network)) {
		t.Helper()
		if _, err := f.st.UpdateVMNetwork(ctx, "t", id, func(n store.Network) (store.Network, error) {
			change(&n)
			return n, nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	if _, err := f.st.CreateVM(ctx, store.VM{Tenant: "t", ID: "x", Network: store.Network{Mode: "netns", Node: "gw-a", State: store.NetworkPending}}); err != nil {
		t.Fatal(err)
	}
	f.eventually("the pending VM", func() bool { return f.v.VM("t", "x") != nil })
	update("x", func(n *store.Network) {
		n.State, n.Netns, n.Path, n.Address, n.Gateway = store.NetworkReady, "egressd-0123456789", "/run/netns/egressd-0123456789", addr.String(), "100.96.0.1"
	})
	var ready *view.VM
	f.eventually("the ready VM by its address", func() bool { ready = f.v.VMByAddr(addr); return ready != nil })
	if ready.ID != "x" || ready.Network.State != store.NetworkReady || f.v.VM("t", "x") != ready {
		t.Fatalf("found %+v, want x as it is stored now", ready)
	}
	f.put(store.ScopeVM, "x", policy.Policy{AllowHTTPS: true})
	f.eventually("x's policy", func() bool { return allows(ready, https) })
	cut := make(chan string, 1)
	ready.Track(https, func(reason string) { cut <- reason })

	if _, err := f.st.RetireVM(ctx, "t", "x"); err != nil {
		t.Fatal(err)
	}
	f.eventually("x to be deleting", func() bool {
		vm := f.v.VM("t", "x")
		return vm != nil && vm.Network.State == store.NetworkDeleting
	})
	if vm := f.v.VMByAddr(addr); vm != nil {
		t.Errorf("a VM being deleted is found by its address: %+v", vm.Network)
	}
	select {
	case reason := <-cut:
		if reason != view.CancelSessionEnded {
			t.Errorf("x's connection was cut for %q, want %q", reason, view.CancelSessionEnded)
		}
	case <-time.After(time.Second):
		t.Error("x's connection stays open while x is being deleted")
	}

	// A network in any state but ready (or stored before states) is not found, whatever
	// address it names.
	for _, state := range []string{store.NetworkCreating, store.NetworkPending, store.NetworkFailed} {
		id := "in-" + state
		if _, err := f.st.CreateVM(ctx, store.VM{Tenant: "t", ID: id, Network: store.Network{Mode: "netns", Node: "gw-a", State: state, Address: "100.96.0.6"}}); err != nil {
			t.Fatal(err)
		}
		f.eventually(id, func() bool { return f.v.VM("t", id) != nil })
	}
	if vm := f.v.VMByAddr(netip.MustParseAddr("100.96.0.6")); vm != nil {
		t.Errorf("a %s network is found by its address", vm.Network.State)
	}

	// A node claiming a VM stored before nodes changes its network, not its sandbox: it is
	// still found, and its connections carry on.
	legacy := netip.MustParseAddr("100.96.0.10")
	if _, err := f.st.CreateVM(ctx, store.VM{Tenant: "t", ID: "old", Network: store.Network{Mode: "netns", Address: legacy.String(), Gateway: "100.96.0.9"}}); err != nil {
		t.Fatal(err)
	}
	var old *view.VM
	f.eventually("the VM stored before nodes", func() bool { old = f.v.VMByAddr(legacy); return old != nil })
	update("old", func(n *store.Network) { n.Node, n.State = "gw-a", store.NetworkReady })
	f.eventually("the claim", func() bool {
		vm := f.v.VMByAddr(legacy)
		return vm != nil && vm.Network.Node == "gw-a"
	})
	select {
	case <-old.Done():
		t.Error("claiming a VM ended its connections")
	default:
	}
}

// TestOnlyThisNodesSandboxesAreFoundByAddress: a transparent node's data path serves the
// sandboxes of its own VMs, those its firewall names (package gateway), and finds no other
// node's by address: one address held by VMs of two nodes (ranges that overlapped, a second
// process with a node's ID) must never give one node's sandbox another's VM and policy.
func TestOnlyThisNodesSandboxesAreFoundByAddress(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, view.Config{Node: "gw-a"})
	addr := netip.MustParseAddr("100.96.0.2")
	ready := func(node string) store.Network {
		return store.Network{Mode: "netns", Node: node, State: store.NetworkReady, Address: addr.String(), Gateway: "100.96.0.1"}
	}
	if _, err := f.st.CreateVM(ctx, store.VM{Tenant: "t", ID: "mine", Network: ready("gw-a")}); err != nil {
		t.Fatal(err)
	}
	f.eventually("gw-a's VM", func() bool { return f.v.VMByAddr(addr) != nil })
	if _, err := f.st.CreateVM(ctx, store.VM{Tenant: "other", ID: "theirs", Network: ready("gw-b")}); err != nil {
		t.Fatal(err)
	}
	f.eventually("gw-b's VM in the view", func() bool { return f.v.VM("other", "theirs") != nil })
	if vm := f.v.VMByAddr(addr); vm == nil || vm.ID != "mine" {
		t.Errorf("gw-a finds %+v by its sandbox's address, want its own VM", vm)
	}
	// Another node's VM going does not take this node's out of the index.
	if err := f.st.DeleteVM(ctx, "other", "theirs"); err != nil {
		t.Fatal(err)
	}
	f.eventually("gw-b's VM gone", func() bool { return f.v.VM("other", "theirs") == nil })
	if vm := f.v.VMByAddr(addr); vm == nil || vm.ID != "mine" {
		t.Errorf("after gw-b's VM went, gw-a finds %+v", vm)
	}
	// A VM stored before nodes is found once its node claims it.
	legacy := netip.MustParseAddr("100.96.0.6")
	if _, err := f.st.CreateVM(ctx, store.VM{Tenant: "t", ID: "old", Network: store.Network{Mode: "netns", Address: legacy.String(), Gateway: "100.96.0.5"}}); err != nil {
		t.Fatal(err)
	}
	f.eventually("the VM stored before nodes", func() bool { return f.v.VM("t", "old") != nil })
	if vm := f.v.VMByAddr(legacy); vm != nil {
		t.Errorf("a VM no node has claimed is found: %+v", vm.Network)
	}
	if _, err := f.st.UpdateVMNetwork(ctx, "t", "old", func(n store.Network) (store.Network, error) {
		n.Node, n.State = "gw-a", store.NetworkReady
		return n, nil
	}); err != nil {
		t.Fatal(err)
	}
	f.eventually("the claimed VM by its address", func() bool { return f.v.VMByAddr(legacy) != nil })
}
