package view_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/view"
)

// TestLookupsFollowRevision: the lookups read an index that a sync replaces whole, and it is
// replaced before the view's revision moves. So once Revision reaches a write's revision, the
// lookups answer as of that write, with no wait: a new session authenticates and its VM is
// found by address; a deleted one is refused, ended, and its address is no VM's. Readers run
// all along, for the race detector.
func TestLookupsFollowRevision(t *testing.T) {
	f := newFixture(t, view.Config{})
	ctx := context.Background()
	addr := netip.MustParseAddr("100.96.0.10")
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				f.v.Authenticate("s-idx", "tok-idx")
				f.v.VMByAddr(addr)
				f.v.VMs()
			}
		}()
	}
	defer func() { close(stop); readers.Wait() }()

	// reached waits (bounded) until the view has applied everything written so far.
	reached := func(what string) {
		t.Helper()
		rev, err := f.st.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		f.eventually(what, func() bool { return f.v.Revision() >= rev })
	}
	if _, err := f.st.CreateVM(ctx, store.VM{Tenant: "t", ID: "vm-idx", Network: store.Network{Mode: "netns", Address: addr.String(), Gateway: "100.96.0.9"}}); err != nil {
		t.Fatal(err)
	}
	f.session("s-idx", "vm-idx", "tok-idx")
	reached("the new VM and session")
	s, err := f.v.Authenticate("s-idx", "tok-idx")
	if err != nil {
		t.Fatalf("a session the view's revision covers: %v", err)
	}
	if vm := f.v.VMByAddr(addr); vm == nil || vm.ID != "vm-idx" {
		t.Fatalf("VMByAddr(%s) = %+v, want vm-idx", addr, vm)
	}
	if f.v.VM("t", "vm-idx") == nil || f.v.Session("s-idx") != s {
		t.Fatal("VM or Session does not find what Authenticate and VMByAddr found")
	}

	if err := f.st.DeleteVM(ctx, "t", "vm-idx"); err != nil { // its session goes with it
		t.Fatal(err)
	}
	reached("the deletion")
	if _, err := f.v.Authenticate("s-idx", "tok-idx"); !errors.Is(err, view.ErrUnauthorized) {
		t.Errorf("a deleted session authenticates: %v", err)
	}
	if vm := f.v.VMByAddr(addr); vm != nil {
		t.Errorf("the deleted VM's address finds %+v", vm)
	}
	select {
	case <-s.Done():
	default:
		t.Error("the deleted session is not ended by the time the revision covers its deletion")
	}
	for _, vm := range f.v.VMs() {
		if vm.ID == "vm-idx" {
			t.Error("VMs lists the deleted VM")
		}
	}
}
