package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
)

// readyNetwork is a netns network as its node leaves it once made: every field set.
func readyNetwork(node string) store.Network {
	return store.Network{Mode: "netns", Node: node, State: store.NetworkReady, Netns: "egressd-vm-1",
		Path: "/run/netns/egressd-vm-1", Address: "100.96.0.2/30", Gateway: "100.96.0.1"}
}

// changeLine is a change as "kind op id", the part a test can predict.
func changeLine(c store.Change) string { return c.Kind + " " + c.Op + " " + c.ID }

// mustChanges lists the changes after rev as changeLines, checking that each has tenant.
func mustChanges(t *testing.T, s store.Store, rev int64, tenant string) []string {
	t.Helper()
	changes, err := s.ChangesSince(t.Context(), rev, store.MaxChanges)
	if err != nil {
		t.Fatalf("ChangesSince(%d): %v", rev, err)
	}
	out := []string{}
	for _, c := range changes {
		if c.Tenant != tenant {
			t.Errorf("change %+v: tenant %q, want %q", c, c.Tenant, tenant)
		}
		out = append(out, changeLine(c))
	}
	return out
}

// testNetworks: every field of a VM's network, the node's and its state included, reads back
// as it was written, through every read.
func testNetworks(t *testing.T, s store.Store) {
	ctx := t.Context()
	networks := map[string]store.Network{
		"vm-ready":    readyNetwork("gw-1"),
		"vm-failed":   {Mode: "netns", Node: "gw-2", State: store.NetworkFailed, Error: `netns: "ip" said: File exists`},
		"vm-creating": {Mode: "netns", Node: "gw-1", State: store.NetworkCreating},
		"vm-legacy":   {Mode: "netns", Netns: "egressd-old", Path: "/run/netns/egressd-old", Address: "100.96.0.6/30", Gateway: "100.96.0.5"},
		"vm-none":     {Mode: "none"},
	}
	order := []string{"vm-ready", "vm-failed", "vm-creating", "vm-legacy", "vm-none"}
	var created []store.VM
	for _, id := range order {
		vm, err := s.CreateVM(ctx, store.VM{Tenant: tenantA, ID: id, Network: networks[id]})
		if err != nil {
			t.Fatalf("CreateVM(%s): %v", id, err)
		}
		if vm.Network != networks[id] {
			t.Errorf("CreateVM(%s).Network = %+v, want %+v", id, vm.Network, networks[id])
		}
		created = append(created, vm)
	}
	for _, want := range created {
		got, err := s.GetVM(ctx, tenantA, want.ID)
		if err != nil || !vmEqual(got, want) {
			t.Errorf("GetVM(%s) = %+v, %v; want %+v", want.ID, got, err, want)
		}
	}
	listed, err := s.ListVMs(ctx, tenantA)
	if err != nil {
		t.Fatalf("ListVMs: %v", err)
	}
	all, err := s.AllVMs(ctx)
	if err != nil {
		t.Fatalf("AllVMs: %v", err)
	}
	for name, got := range map[string][]store.VM{"ListVMs": listed, "AllVMs": all} {
		if len(got) != len(created) {
			t.Errorf("%s = %+v, want %d VMs", name, got, len(created))
			continue
		}
		for i := range got {
			if !vmEqual(got[i], created[i]) {
				t.Errorf("%s[%d] = %+v, want %+v", name, i, got[i], created[i])
			}
		}
	}
}

// testUpdateVMNetwork: the update sees the stored network and replaces it whole; the VM keeps
// the revision and time of its creation, and the change log records one replacement.
func testUpdateVMNetwork(t *testing.T, s store.Store) {
	ctx := t.Context()
	pending := store.Network{Mode: "netns", Node: "gw-1", State: store.NetworkPending}
	created, err := s.CreateVM(ctx, store.VM{Tenant: tenantA, ID: "vm-1", Network: pending})
	if err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	other := mustVM(t, s, tenantA, "vm-2")
	before := mustRevision(t, s)

	ready := readyNetwork("gw-1")
	calls := 0
	got, err := s.UpdateVMNetwork(ctx, tenantA, "vm-1", func(n store.Network) (store.Network, error) {
		calls++
		if n != pending {
			t.Errorf("update was given %+v, want the stored network %+v", n, pending)
		}
		return ready, nil
	})
	if err != nil {
		t.Fatalf("UpdateVMNetwork: %v", err)
	}
	if calls != 1 {
		t.Errorf("update called %d times, want once", calls)
	}
	want := created
	want.Network = ready
	if !vmEqual(got, want) {
		t.Errorf("UpdateVMNetwork = %+v, want %+v (revision and creation time kept)", got, want)
	}
	if read, err := s.GetVM(ctx, tenantA, "vm-1"); err != nil || !vmEqual(read, want) {
		t.Errorf("GetVM after the update = %+v, %v; want %+v", read, err, want)
	}
	for name, list := range map[string]func(context.Context) ([]store.VM, error){
		"ListVMs": func(ctx context.Context) ([]store.VM, error) { return s.ListVMs(ctx, tenantA) },
		"AllVMs":  s.AllVMs,
	} {
		// Still first: the VM is as old as it was.
		vms, err := list(ctx)
		if err != nil || len(vms) != 2 || !vmEqual(vms[0], want) || !vmEqual(vms[1], other) {
			t.Errorf("%s after the update = %+v, %v; want [%+v %+v]", name, vms, err, want, other)
		}
	}

	after := mustRevision(t, s)
	if after <= before {
		t.Errorf("Revision after UpdateVMNetwork = %d, want > %d", after, before)
	}
	changes, err := s.ChangesSince(ctx, before, store.MaxChanges)
	if err != nil {
		t.Fatalf("ChangesSince: %v", err)
	}
	if len(changes) != 1 || changes[0].Tenant != tenantA || changeLine(changes[0]) != "vm replace vm-1" ||
		changes[0].Revision != after {
		t.Errorf("changes of UpdateVMNetwork = %+v, want one %q of %s at revision %d", changes, "vm replace vm-1", tenantA, after)
	}

	// A second update sees the first one's result, and may clear fields.
	failed := store.Network{Mode: "netns", Node: "gw-1", State: store.NetworkFailed, Error: "no addresses left"}
	got, err = s.UpdateVMNetwork(ctx, tenantA, "vm-1", func(n store.Network) (store.Network, error) {
		if n != ready {
			t.Errorf("second update was given %+v, want %+v", n, ready)
		}
		return failed, nil
	})
	if err != nil || got.Network != failed || got.Revision != created.Revision {
		t.Errorf("second UpdateVMNetwork = %+v, %v; want network %+v, revision %d", got, err, failed, created.Revision)
	}
	if read, err := s.GetVM(ctx, tenantA, "vm-1"); err != nil || read.Network != failed {
		t.Errorf("GetVM after the second update = %+v, %v; want network %+v", read, err, failed)
	}
}

// errRefused is what the suite's update functions refuse with.
var errRefused = errors.New("refused: not pending")

// testUpdateVMNetworkErrors: a missing VM, another tenant's VM or a refusing update changes
// nothing and logs nothing; a refusal is returned so that errors.Is finds it.
func testUpdateVMNetworkErrors(t *testing.T, s store.Store) {
	ctx := t.Context()
	pending := store.Network{Mode: "netns", Node: "gw-1", State: store.NetworkPending}
	vm, err := s.CreateVM(ctx, store.VM{Tenant: tenantA, ID: "vm-1", Network: pending})
	if err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	before := mustRevision(t, s)

	called := false
	never := func(n store.Network) (store.Network, error) {
		called = true
		return readyNetwork("gw-1"), nil
	}
	_, err = s.UpdateVMNetwork(ctx, tenantA, "vm-missing", never)
	wantErr(t, "UpdateVMNetwork of a missing VM", err, store.ErrNotFound)
	_, err = s.UpdateVMNetwork(ctx, tenantB, "vm-1", never)
	wantErr(t, "UpdateVMNetwork of another tenant's VM", err, store.ErrNotFound)
	if called {
		t.Error("update was called for a VM the tenant does not have")
	}

	_, err = s.UpdateVMNetwork(ctx, tenantA, "vm-1", func(n store.Network) (store.Network, error) {
		n.State = store.NetworkReady // a change that must not be stored
		return n, fmt.Errorf("vm-1: %w", errRefused)
	})
	if !errors.Is(err, errRefused) {
		t.Errorf("UpdateVMNetwork whose update refused: error %v, want one that is %v", err, errRefused)
	}
	if errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refusal was reported as ErrNotFound: %v", err)
	}

	if got, err := s.GetVM(ctx, tenantA, "vm-1"); err != nil || !vmEqual(got, vm) {
		t.Errorf("GetVM after failed updates = %+v, %v; want it unchanged, %+v", got, err, vm)
	}
	if vms, err := s.ListVMs(ctx, tenantB); err != nil || len(vms) != 0 {
		t.Errorf("ListVMs(%s) = %+v, %v; want none", tenantB, vms, err)
	}
	if rev := mustRevision(t, s); rev != before {
		t.Errorf("Revision after failed updates = %d, want %d", rev, before)
	}
	if changes := mustChanges(t, s, before, tenantA); len(changes) != 0 {
		t.Errorf("failed updates logged %v, want nothing", changes)
	}
	// The store still writes afterwards.
	if _, err := s.UpdateVMNetwork(ctx, tenantA, "vm-1", never); err != nil {
		t.Errorf("UpdateVMNetwork after failed ones: %v", err)
	}
}

// testRetireVM: retiring a VM removes its sessions and policies, logged as DeleteVM logs them,
// and keeps the VM, marked deleting, for its node; DeleteVM then removes it.
func testRetireVM(t *testing.T, s store.Store) {
	ctx := t.Context()
	ready := readyNetwork("gw-1")
	vm, err := s.CreateVM(ctx, store.VM{Tenant: tenantA, ID: "vm-1", Network: ready})
	if err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	mustPolicy(t, s, tenantA, store.ScopeVM, "vm-1", fullPolicy(1))
	mustSession(t, s, tenantA, "vm-1", "se-1")
	mustPolicy(t, s, tenantA, store.ScopeSession, "se-1", fullPolicy(2))
	mustSession(t, s, tenantA, "vm-1", "se-2") // without a policy
	// Another VM of the tenant, which must keep everything.
	mustVM(t, s, tenantA, "vm-2")
	keepVM := mustPolicy(t, s, tenantA, store.ScopeVM, "vm-2", fullPolicy(3))
	mustSession(t, s, tenantA, "vm-2", "se-3")
	keepSession := mustPolicy(t, s, tenantA, store.ScopeSession, "se-3", fullPolicy(4))
	before := mustRevision(t, s)

	_, err = s.RetireVM(ctx, tenantB, "vm-1")
	wantErr(t, "RetireVM of another tenant's VM", err, store.ErrNotFound)
	_, err = s.RetireVM(ctx, tenantA, "vm-missing")
	wantErr(t, "RetireVM of a missing VM", err, store.ErrNotFound)
	if rev := mustRevision(t, s); rev != before {
		t.Errorf("Revision after failed RetireVM calls = %d, want %d", rev, before)
	}
	if se, err := s.GetSession(ctx, tenantA, "se-1"); err != nil {
		t.Errorf("GetSession(se-1) after RetireVM of another tenant: %+v, %v; want it kept", se, err)
	}

	got, err := s.RetireVM(ctx, tenantA, "vm-1")
	if err != nil {
		t.Fatalf("RetireVM: %v", err)
	}
	want := vm
	want.Network.State = store.NetworkDeleting
	if !vmEqual(got, want) {
		t.Errorf("RetireVM = %+v, want %+v (state deleting, the rest kept)", got, want)
	}
	if read, err := s.GetVM(ctx, tenantA, "vm-1"); err != nil || !vmEqual(read, want) {
		t.Errorf("GetVM of the retired VM = %+v, %v; want %+v", read, err, want)
	}
	if got.Network.Live() {
		t.Errorf("a retired VM's network %+v is live", got.Network)
	}
	_, err = s.GetPolicy(ctx, tenantA, store.ScopeVM, "vm-1")
	wantErr(t, "GetPolicy of the retired VM", err, store.ErrNoPolicy)
	for _, id := range []string{"se-1", "se-2"} {
		_, err := s.GetSession(ctx, tenantA, id)
		wantErr(t, "GetSession("+id+") of the retired VM", err, store.ErrNotFound)
		_, err = s.GetPolicy(ctx, tenantA, store.ScopeSession, id)
		wantErr(t, "GetPolicy("+id+") of the retired VM", err, store.ErrNotFound)
	}
	if list, err := s.ListSessions(ctx, tenantA, "vm-1"); err != nil || len(list) != 0 {
		t.Errorf("ListSessions of the retired VM = %+v, %v; want none", list, err)
	}
	for _, keep := range []store.PolicyRecord{keepVM, keepSession} {
		if r, err := s.GetPolicy(ctx, tenantA, keep.Scope, keep.ID); err != nil || !recordEqual(r, keep) {
			t.Errorf("GetPolicy(%s %s) of the other VM = %+v, %v; want it unchanged", keep.Scope, keep.ID, r, err)
		}
	}

	// As DeleteVM logs them, with the VM's change last; the VM is replaced, not deleted.
	wantLog := []string{
		"session_policy delete se-1", "session delete se-1", "session delete se-2",
		"vm_policy delete vm-1", "vm replace vm-1",
	}
	retired := mustRevision(t, s)
	if log := mustChanges(t, s, before, tenantA); !reflect.DeepEqual(log, wantLog) {
		t.Errorf("RetireVM logged %v, want %v", log, wantLog)
	}

	// Retiring again (an API replica retrying) succeeds and changes nothing; it may log the
	// VM as replaced, but there is nothing left to delete.
	if again, err := s.RetireVM(ctx, tenantA, "vm-1"); err != nil || !vmEqual(again, want) {
		t.Errorf("RetireVM again = %+v, %v; want %+v", again, err, want)
	}
	if log := mustChanges(t, s, retired, tenantA); len(log) > 1 || (len(log) == 1 && log[0] != "vm replace vm-1") {
		t.Errorf("RetireVM again logged %v, want nothing or [vm replace vm-1]", log)
	}

	// The node, done with the network, removes the VM.
	retired = mustRevision(t, s)
	wantErr(t, "DeleteVM of the retired VM", s.DeleteVM(ctx, tenantA, "vm-1"), nil)
	_, err = s.GetVM(ctx, tenantA, "vm-1")
	wantErr(t, "GetVM after DeleteVM", err, store.ErrNotFound)
	if log := mustChanges(t, s, retired, tenantA); !reflect.DeepEqual(log, []string{"vm delete vm-1"}) {
		t.Errorf("DeleteVM of the retired VM logged %v, want [vm delete vm-1]", log)
	}
	_, err = s.RetireVM(ctx, tenantA, "vm-1")
	wantErr(t, "RetireVM of a deleted VM", err, store.ErrNotFound)
	if vms, err := s.ListVMs(ctx, tenantA); err != nil || len(vms) != 1 || vms[0].ID != "vm-2" {
		t.Errorf("ListVMs at the end = %+v, %v; want [vm-2]", vms, err)
	}
}

// testUpdateVMNetworkConcurrent: concurrent read-modify-writes of one VM's network lose
// nothing: each update sees the one before it. The updates dawdle while they hold the VM, so
// that a store that read outside the transaction's lock would lose some.
func testUpdateVMNetworkConcurrent(t *testing.T, s store.Store) {
	const (
		writers = 8
		rounds  = 5
	)
	ctx := t.Context()
	created, err := s.CreateVM(ctx, store.VM{Tenant: tenantA, ID: "vm-1", Network: store.Network{Mode: "netns", Node: "gw-1", State: store.NetworkFailed}})
	if err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	before := mustRevision(t, s)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range rounds {
				_, err := s.UpdateVMNetwork(ctx, tenantA, "vm-1", func(n store.Network) (store.Network, error) {
					time.Sleep(time.Millisecond)
					n.Error += fmt.Sprintf("[%d.%d]", w, i)
					return n, nil
				})
				if err != nil {
					t.Errorf("writer %d: UpdateVMNetwork: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()

	got, err := s.GetVM(ctx, tenantA, "vm-1")
	if err != nil {
		t.Fatalf("GetVM: %v", err)
	}
	if lost := lostMarkers(got.Network.Error, writers, rounds); len(lost) > 0 {
		t.Errorf("updates were lost: markers %v are not once each in %q", lost, got.Network.Error)
	}
	if got.Revision != created.Revision {
		t.Errorf("Revision after updates = %d, want that of the creation, %d", got.Revision, created.Revision)
	}
	if log := mustChanges(t, s, before, tenantA); len(log) != writers*rounds {
		t.Errorf("%d changes logged, want %d", len(log), writers*rounds)
	}
}

// lostMarkers lists the markers "[w.i]" of writers×rounds updates that doc does not hold
// exactly once, and "extra" if it holds more markers than that.
func lostMarkers(doc string, writers, rounds int) []string {
	var bad []string
	for w := range writers {
		for i := range rounds {
			if marker := fmt.Sprintf("[%d.%d]", w, i); strings.Count(doc, marker) != 1 {
				bad = append(bad, marker)
			}
		}
	}
	if strings.Count(doc, "[") > writers*rounds {
		bad = append(bad, "extra")
	}
	return bad
}
