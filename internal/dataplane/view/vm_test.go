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
