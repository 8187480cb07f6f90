package storetest

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
)

func testSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.CreateSession(ctx, store.Session{Tenant: tenantA, ID: "se-0", VMID: "vm-missing", TokenHash: hash("t")})
	wantErr(t, "CreateSession on a missing VM", err, store.ErrNotFound)

	vm1 := mustVM(t, s, tenantA, "vm-1")
	mustVM(t, s, tenantA, "vm-2")
	before := time.Now()
	created, err := s.CreateSession(ctx, store.Session{Tenant: tenantA, ID: "se-1", VMID: "vm-1", TokenHash: hash("token-1")})
	after := time.Now()
	if err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	if created.Tenant != tenantA || created.ID != "se-1" || created.VMID != "vm-1" || !bytes.Equal(created.TokenHash, hash("token-1")) {
		t.Errorf("CreateSession = %+v, want the fields as given", created)
	}
	if created.Revision <= vm1.Revision {
		t.Errorf("CreateSession: Revision = %d, want > the VM's %d", created.Revision, vm1.Revision)
	}
	checkTime(t, "CreatedAt", created.CreatedAt, before, after)

	got, err := s.GetSession(ctx, tenantA, "se-1")
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	if !sessionEqual(got, created) {
		t.Errorf("GetSession = %+v, want what CreateSession returned, %+v", got, created)
	}
	_, err = s.GetSession(ctx, tenantA, "se-unknown")
	wantErr(t, "GetSession(unknown)", err, store.ErrNotFound)

	// Created in an order that differs from the IDs' order.
	mustSession(t, s, tenantA, "vm-2", "se-0")
	mustSession(t, s, tenantA, "vm-1", "se-3")
	mustSession(t, s, tenantA, "vm-1", "se-2")
	mustVM(t, s, tenantB, "vm-1")
	mustSession(t, s, tenantB, "vm-1", "se-b")
	for _, tc := range []struct {
		tenant, vmID string
		want         []string
	}{
		{tenantA, "vm-1", []string{"se-1", "se-3", "se-2"}},
		{tenantA, "vm-2", []string{"se-0"}},
		{tenantA, "", []string{"se-1", "se-0", "se-3", "se-2"}},
		{tenantA, "vm-unknown", []string{}},
		{tenantB, "vm-1", []string{"se-b"}},
		{tenantB, "", []string{"se-b"}},
	} {
		list, err := s.ListSessions(ctx, tc.tenant, tc.vmID)
		if err != nil {
			t.Errorf("ListSessions(%s, %q): %v", tc.tenant, tc.vmID, err)
			continue
		}
		if got := sessionIDs(list); !slices.Equal(got, tc.want) {
			t.Errorf("ListSessions(%s, %q) = %v, want %v (oldest first)", tc.tenant, tc.vmID, got, tc.want)
		}
	}
}

func testSessionConflicts(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustVM(t, s, tenantA, "vm-1")
	mustVM(t, s, tenantA, "vm-2")
	mustVM(t, s, tenantB, "vm-1")
	first := mustSession(t, s, tenantA, "vm-1", "se-1")
	for _, tc := range []struct {
		name, tenant, vmID string
	}{
		{"same VM", tenantA, "vm-1"},
		{"other VM", tenantA, "vm-2"},
		{"other tenant", tenantB, "vm-1"}, // session IDs are unique store-wide
	} {
		_, err := s.CreateSession(ctx, store.Session{Tenant: tc.tenant, ID: "se-1", VMID: tc.vmID, TokenHash: hash("other")})
		wantErr(t, "CreateSession "+tc.name, err, store.ErrConflict)
	}
	got, err := s.GetSession(ctx, tenantA, "se-1")
	if err != nil || !sessionEqual(got, first) {
		t.Errorf("GetSession after conflicts = %+v, %v; want the first session unchanged", got, err)
	}
	_, err = s.GetSession(ctx, tenantB, "se-1")
	wantErr(t, "GetSession of the other tenant's conflicting ID", err, store.ErrNotFound)
}

func testDeleteSession(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustVM(t, s, tenantA, "vm-1")
	mustSession(t, s, tenantA, "vm-1", "se-1")
	keep := mustSession(t, s, tenantA, "vm-1", "se-2")
	mustPolicy(t, s, tenantA, store.ScopeSession, "se-1", fullPolicy(1))
	keepPolicy := mustPolicy(t, s, tenantA, store.ScopeSession, "se-2", fullPolicy(2))
	vmPolicy := mustPolicy(t, s, tenantA, store.ScopeVM, "vm-1", fullPolicy(3))

	wantErr(t, "DeleteSession", s.DeleteSession(ctx, tenantA, "se-1"), nil)
	wantErr(t, "DeleteSession again", s.DeleteSession(ctx, tenantA, "se-1"), store.ErrNotFound)
	wantErr(t, "DeleteSession(unknown)", s.DeleteSession(ctx, tenantA, "se-unknown"), store.ErrNotFound)
	_, err := s.GetSession(ctx, tenantA, "se-1")
	wantErr(t, "GetSession of a deleted session", err, store.ErrNotFound)
	_, err = s.GetPolicy(ctx, tenantA, store.ScopeSession, "se-1")
	wantErr(t, "GetPolicy of a deleted session", err, store.ErrNotFound)

	// The VM, its policy and the other session are untouched.
	if list, err := s.ListSessions(ctx, tenantA, "vm-1"); err != nil || len(list) != 1 || !sessionEqual(list[0], keep) {
		t.Errorf("ListSessions = %+v, %v; want [se-2]", list, err)
	}
	for _, want := range []store.PolicyRecord{keepPolicy, vmPolicy} {
		got, err := s.GetPolicy(ctx, tenantA, want.Scope, want.ID)
		if err != nil || !recordEqual(got, want) {
			t.Errorf("GetPolicy(%s %s) = %+v, %v; want it unchanged", want.Scope, want.ID, got, err)
		}
	}

	// A new session with the old ID starts without the old policy.
	mustSession(t, s, tenantA, "vm-1", "se-1")
	_, err = s.GetPolicy(ctx, tenantA, store.ScopeSession, "se-1")
	wantErr(t, "GetPolicy of a re-created session", err, store.ErrNoPolicy)
}

// sessionEqual compares sessions, times by instant.
func sessionEqual(a, b store.Session) bool {
	return a.Tenant == b.Tenant && a.ID == b.ID && a.VMID == b.VMID && bytes.Equal(a.TokenHash, b.TokenHash) &&
		a.Revision == b.Revision && a.CreatedAt.Equal(b.CreatedAt)
}

func sessionIDs(list []store.Session) []string {
	ids := []string{}
	for _, se := range list {
		ids = append(ids, se.ID)
	}
	return ids
}
