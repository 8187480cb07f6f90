package storetest

import (
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
)

func testVMs(t *testing.T, s store.Store) {
	ctx := t.Context()
	vms, err := s.ListVMs(ctx, tenantA)
	if err != nil || len(vms) != 0 {
		t.Fatalf("ListVMs on an empty store = %v, %v; want none", vms, err)
	}

	netns := store.Network{Mode: "netns", Netns: "egressd-vm-1", Path: "/run/netns/egressd-vm-1", Address: "100.96.0.2/30", Gateway: "100.96.0.1"}
	before := time.Now()
	created, err := s.CreateVM(ctx, store.VM{Tenant: tenantA, ID: "vm-1", Network: netns})
	after := time.Now()
	if err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	if created.Tenant != tenantA || created.ID != "vm-1" || created.Network != netns {
		t.Errorf("CreateVM = %+v, want tenant, ID and network as given", created)
	}
	if created.Revision <= 0 {
		t.Errorf("CreateVM: Revision = %d, want > 0", created.Revision)
	}
	checkTime(t, "CreatedAt", created.CreatedAt, before, after)

	got, err := s.GetVM(ctx, tenantA, "vm-1")
	if err != nil {
		t.Fatalf("GetVM: %v", err)
	}
	if !vmEqual(got, created) {
		t.Errorf("GetVM = %+v, want what CreateVM returned, %+v", got, created)
	}

	second := mustVM(t, s, tenantA, "vm-0") // an ID that sorts first, created second
	mustVM(t, s, tenantB, "vm-b")
	vms, err = s.ListVMs(ctx, tenantA)
	if err != nil {
		t.Fatalf("ListVMs: %v", err)
	}
	if len(vms) != 2 || !vmEqual(vms[0], created) || !vmEqual(vms[1], second) {
		t.Errorf("ListVMs(%s) = %+v, want [vm-1 vm-0], oldest first", tenantA, vms)
	}

	wantErr(t, "DeleteVM", s.DeleteVM(ctx, tenantA, "vm-1"), nil)
	_, err = s.GetVM(ctx, tenantA, "vm-1")
	wantErr(t, "GetVM of a deleted VM", err, store.ErrNotFound)
	wantErr(t, "DeleteVM again", s.DeleteVM(ctx, tenantA, "vm-1"), store.ErrNotFound)
	wantErr(t, "DeleteVM(unknown)", s.DeleteVM(ctx, tenantA, "vm-unknown"), store.ErrNotFound)
	_, err = s.GetVM(ctx, tenantA, "vm-unknown")
	wantErr(t, "GetVM(unknown)", err, store.ErrNotFound)
	vms, err = s.ListVMs(ctx, tenantA)
	if err != nil {
		t.Fatalf("ListVMs: %v", err)
	}
	if len(vms) != 1 || vms[0].ID != "vm-0" {
		t.Errorf("ListVMs after delete = %+v, want [vm-0]", vms)
	}

	// A deleted VM's ID can be used again.
	again := mustVM(t, s, tenantA, "vm-1")
	if again.Revision <= second.Revision {
		t.Errorf("re-created VM has revision %d, want > %d", again.Revision, second.Revision)
	}
}

func testVMConflicts(t *testing.T, s store.Store) {
	ctx := t.Context()
	first := mustVM(t, s, tenantA, "vm-1")
	for _, tc := range []struct {
		name   string
		tenant string
		want   error
	}{
		{"same tenant", tenantA, store.ErrConflict},
		{"other tenant", tenantB, nil}, // VM IDs are per tenant
		{"other tenant again", tenantB, store.ErrConflict},
	} {
		_, err := s.CreateVM(ctx, store.VM{Tenant: tc.tenant, ID: "vm-1", Network: store.Network{Mode: "netns"}})
		wantErr(t, "CreateVM "+tc.name, err, tc.want)
	}
	got, err := s.GetVM(ctx, tenantA, "vm-1")
	if err != nil || !vmEqual(got, first) {
		t.Errorf("GetVM after conflicts = %+v, %v; want the first VM unchanged, %+v", got, err, first)
	}
	b, err := s.GetVM(ctx, tenantB, "vm-1")
	if err != nil || b.Tenant != tenantB || b.Network.Mode != "netns" {
		t.Errorf("GetVM(%s) = %+v, %v; want its own VM", tenantB, b, err)
	}
}

// testTenantIsolation: every call on another tenant's VM or session answers ErrNotFound, as
// if the object did not exist, and changes nothing.
func testTenantIsolation(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustVM(t, s, tenantA, "vm-a")
	mustSession(t, s, tenantA, "vm-a", "se-a")
	vmPolicy := mustPolicy(t, s, tenantA, store.ScopeVM, "vm-a", fullPolicy(1))
	sePolicy := mustPolicy(t, s, tenantA, store.ScopeSession, "se-a", fullPolicy(2))

	put := func(scope store.Scope, id string) error {
		_, err := s.PutPolicy(ctx, store.PolicyRecord{Tenant: tenantB, Scope: scope, ID: id, Policy: fullPolicy(3)})
		return err
	}
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"GetVM", func() error { _, err := s.GetVM(ctx, tenantB, "vm-a"); return err }},
		{"DeleteVM", func() error { return s.DeleteVM(ctx, tenantB, "vm-a") }},
		{"CreateSession", func() error {
			_, err := s.CreateSession(ctx, store.Session{Tenant: tenantB, ID: "se-b", VMID: "vm-a", TokenHash: hash("t")})
			return err
		}},
		{"GetSession", func() error { _, err := s.GetSession(ctx, tenantB, "se-a"); return err }},
		{"DeleteSession", func() error { return s.DeleteSession(ctx, tenantB, "se-a") }},
		{"PutPolicy vm", func() error { return put(store.ScopeVM, "vm-a") }},
		{"PutPolicy session", func() error { return put(store.ScopeSession, "se-a") }},
		{"GetPolicy vm", func() error { _, err := s.GetPolicy(ctx, tenantB, store.ScopeVM, "vm-a"); return err }},
		{"GetPolicy session", func() error { _, err := s.GetPolicy(ctx, tenantB, store.ScopeSession, "se-a"); return err }},
		{"DeletePolicy vm", func() error { return s.DeletePolicy(ctx, tenantB, store.ScopeVM, "vm-a") }},
		{"DeletePolicy session", func() error { return s.DeletePolicy(ctx, tenantB, store.ScopeSession, "se-a") }},
	} {
		wantErr(t, tc.name+" of another tenant's object", tc.call(), store.ErrNotFound)
	}

	if vms, err := s.ListVMs(ctx, tenantB); err != nil || len(vms) != 0 {
		t.Errorf("ListVMs(%s) = %+v, %v; want none", tenantB, vms, err)
	}
	for _, vmID := range []string{"", "vm-a"} {
		if list, err := s.ListSessions(ctx, tenantB, vmID); err != nil || len(list) != 0 {
			t.Errorf("ListSessions(%s, %q) = %+v, %v; want none", tenantB, vmID, list, err)
		}
	}

	// Tenant A's objects are untouched.
	if _, err := s.GetVM(ctx, tenantA, "vm-a"); err != nil {
		t.Errorf("GetVM(vm-a): %v", err)
	}
	if _, err := s.GetSession(ctx, tenantA, "se-a"); err != nil {
		t.Errorf("GetSession(se-a): %v", err)
	}
	for _, want := range []store.PolicyRecord{vmPolicy, sePolicy} {
		got, err := s.GetPolicy(ctx, tenantA, want.Scope, want.ID)
		if err != nil || !recordEqual(got, want) {
			t.Errorf("GetPolicy(%s %s) = %+v, %v; want %+v", want.Scope, want.ID, got, err, want)
		}
	}
}

// testDeleteVMCascades: deleting a VM deletes its policy, its sessions and their policies,
// and nothing of another VM.
func testDeleteVMCascades(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustVM(t, s, tenantA, "vm-1")
	mustVM(t, s, tenantA, "vm-2")
	mustPolicy(t, s, tenantA, store.ScopeVM, "vm-1", fullPolicy(1))
	keep := mustPolicy(t, s, tenantA, store.ScopeVM, "vm-2", fullPolicy(2))
	sessions := []string{"se-1", "se-2", "se-3"}
	for i, id := range sessions {
		mustSession(t, s, tenantA, "vm-1", id)
		if i < 2 { // one session without a policy
			mustPolicy(t, s, tenantA, store.ScopeSession, id, fullPolicy(i))
		}
	}
	mustSession(t, s, tenantA, "vm-2", "se-other")
	keepSession := mustPolicy(t, s, tenantA, store.ScopeSession, "se-other", fullPolicy(9))
	before := mustRevision(t, s)

	wantErr(t, "DeleteVM", s.DeleteVM(ctx, tenantA, "vm-1"), nil)

	if rev := mustRevision(t, s); rev <= before {
		t.Errorf("Revision after DeleteVM = %d, want > %d", rev, before)
	}
	_, err := s.GetPolicy(ctx, tenantA, store.ScopeVM, "vm-1")
	wantErr(t, "GetPolicy of the deleted VM", err, store.ErrNotFound)
	for _, id := range sessions {
		_, err := s.GetSession(ctx, tenantA, id)
		wantErr(t, "GetSession("+id+") of the deleted VM", err, store.ErrNotFound)
		_, err = s.GetPolicy(ctx, tenantA, store.ScopeSession, id)
		wantErr(t, "GetPolicy("+id+") of the deleted VM", err, store.ErrNotFound)
	}
	if list, err := s.ListSessions(ctx, tenantA, "vm-1"); err != nil || len(list) != 0 {
		t.Errorf("ListSessions(vm-1) = %+v, %v; want none", list, err)
	}
	if list, err := s.ListSessions(ctx, tenantA, ""); err != nil || len(list) != 1 || list[0].ID != "se-other" {
		t.Errorf("ListSessions(all) = %+v, %v; want [se-other]", list, err)
	}
	for _, want := range []store.PolicyRecord{keep, keepSession} {
		got, err := s.GetPolicy(ctx, tenantA, want.Scope, want.ID)
		if err != nil || !recordEqual(got, want) {
			t.Errorf("GetPolicy(%s %s) of the other VM = %+v, %v; want it unchanged", want.Scope, want.ID, got, err)
		}
	}

	// Nothing of the old VM comes back with a new VM, or a new session, of the same ID.
	mustVM(t, s, tenantA, "vm-1")
	_, err = s.GetPolicy(ctx, tenantA, store.ScopeVM, "vm-1")
	wantErr(t, "GetPolicy of the re-created VM", err, store.ErrNoPolicy)
	if list, err := s.ListSessions(ctx, tenantA, "vm-1"); err != nil || len(list) != 0 {
		t.Errorf("ListSessions of the re-created VM = %+v, %v; want none", list, err)
	}
	mustSession(t, s, tenantA, "vm-1", "se-1")
	_, err = s.GetPolicy(ctx, tenantA, store.ScopeSession, "se-1")
	wantErr(t, "GetPolicy of the re-created session", err, store.ErrNoPolicy)
}

// vmEqual compares VMs, times by instant.
func vmEqual(a, b store.VM) bool {
	return a.Tenant == b.Tenant && a.ID == b.ID && a.Network == b.Network &&
		a.Revision == b.Revision && a.CreatedAt.Equal(b.CreatedAt)
}

// testIDsDifferByCase: IDs, tenants and node IDs are compared byte for byte, as the API and
// the gateways compare them: "V" and "v" are two VMs, "T" and "t" two tenants, "GW-1" and
// "gw-1" two nodes. A store that folded case would let one tenant's VM or one node's
// registration stand for another's.
func testIDsDifferByCase(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, k := range [][2]string{{"t", "v"}, {"t", "V"}, {"T", "v"}} {
		if _, err := s.CreateVM(ctx, store.VM{Tenant: k[0], ID: k[1], Network: store.Network{Mode: "netns", Node: "gw-1", State: store.NetworkPending}}); err != nil {
			t.Fatalf("CreateVM(%s/%s): %v", k[0], k[1], err)
		}
	}
	mustPolicy(t, s, "t", store.ScopeVM, "V", fullPolicy(1))
	_, err := s.GetPolicy(ctx, "t", store.ScopeVM, "v")
	wantErr(t, "GetPolicy of t/v after t/V's was set", err, store.ErrNoPolicy)
	_, err = s.GetVM(ctx, "T", "V")
	wantErr(t, "GetVM(T/V)", err, store.ErrNotFound)
	if err := s.DeleteVM(ctx, "t", "V"); err != nil {
		t.Fatalf("DeleteVM(t/V): %v", err)
	}
	for _, k := range [][2]string{{"t", "v"}, {"T", "v"}} {
		if _, err := s.GetVM(ctx, k[0], k[1]); err != nil {
			t.Errorf("GetVM(%s/%s) after t/V was deleted: %v", k[0], k[1], err)
		}
	}
	for _, id := range []string{"gw-1", "GW-1"} {
		if err := s.PutNode(ctx, store.Node{ID: id, SandboxCIDR: "100.96.0.0/24"}); err != nil {
			t.Fatalf("PutNode(%s): %v", id, err)
		}
	}
	if nodes := mustNodes(t, s); len(nodes) != 2 {
		t.Errorf("nodes %+v, want gw-1 and GW-1", nodes)
	}
}
