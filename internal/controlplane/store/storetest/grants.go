package storetest

import (
	"reflect"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
)

func mustGrant(t *testing.T, s store.Store, g store.Grant, ttl time.Duration) store.Grant {
	t.Helper()
	if g.Tenant == "" {
		g.Tenant = tenantA
	}
	out, err := s.CreateGrant(t.Context(), g, ttl)
	if err != nil {
		t.Fatalf("CreateGrant(%+v): %v", g, err)
	}
	return out
}

func grantIDs(gs []store.Grant) []string {
	out := []string{}
	for _, g := range gs {
		out = append(out, g.ID)
	}
	return out
}

// testGrants: a grant round-trips every field, is listed while active, oldest first, and
// each write takes a revision logged under its object's ID.
func testGrants(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustVM(t, s, tenantA, "vm-1")
	mustSession(t, s, tenantA, "vm-1", "se-1")
	before, _ := s.Revision(ctx)
	g := mustGrant(t, s, store.Grant{ID: "gr_1", Scope: store.ScopeSession, ObjectID: "se-1",
		Domains: []string{"example.com"}, TCP: []string{"github.com:22"}, CIDRs: []string{"198.51.100.0/24"}, Note: "ticket 7"}, time.Hour)
	if g.Revision <= before || g.CreatedAt.IsZero() || !g.ExpiresAt.Equal(g.CreatedAt.Add(time.Hour)) {
		t.Fatalf("CreateGrant = %+v (revision before %d)", g, before)
	}
	g2 := mustGrant(t, s, store.Grant{ID: "gr_2", Scope: store.ScopeSession, ObjectID: "se-1", CIDRs: []string{"203.0.113.0/24"}}, time.Minute)
	if g2.Domains == nil || g2.TCP == nil {
		t.Errorf("CreateGrant left nil lists: %+v", g2)
	}
	vg := mustGrant(t, s, store.Grant{ID: "gr_v", Scope: store.ScopeVM, ObjectID: "vm-1", TCP: []string{"db.test:5432"}}, time.Minute)

	list, err := s.ListGrants(ctx, tenantA, store.ScopeSession, "se-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || !reflect.DeepEqual(list[0], g) || !reflect.DeepEqual(list[1], g2) {
		t.Fatalf("ListGrants = %+v\nwant %+v, %+v", list, g, g2)
	}
	vl, err := s.ListGrants(ctx, tenantA, store.ScopeVM, "vm-1", time.Now())
	if err != nil || len(vl) != 1 || !reflect.DeepEqual(vl[0], vg) {
		t.Fatalf("ListGrants(vm) = %+v, %v", vl, err)
	}
	// The scope is part of the address: a VM's grants are not a session's.
	if l, err := s.ListGrants(ctx, tenantA, store.ScopeSession, "vm-1", time.Now()); err == nil {
		t.Errorf("ListGrants(session vm-1) = %+v, want not found", l)
	}

	// Readers ignore what expired by the time they ask.
	l, err := s.ListGrants(ctx, tenantA, store.ScopeSession, "se-1", g2.ExpiresAt)
	if err != nil || !reflect.DeepEqual(grantIDs(l), []string{"gr_1"}) {
		t.Errorf("ListGrants at gr_2's expiry = %v, %v; want only gr_1", grantIDs(l), err)
	}

	changes, err := s.ChangesSince(ctx, before, store.MaxChanges)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Change{{Kind: store.KindSessionGrant, ID: "se-1", Op: store.OpCreate}, {Kind: store.KindSessionGrant, ID: "se-1", Op: store.OpCreate},
		{Kind: store.KindVMGrant, ID: "vm-1", Op: store.OpCreate}}
	if len(changes) != len(want) {
		t.Fatalf("changes = %+v", changes)
	}
	for i, c := range changes {
		if c.Kind != want[i].Kind || c.ID != want[i].ID || c.Op != want[i].Op || c.Tenant != tenantA {
			t.Errorf("change %d = %+v, want %+v", i, c, want[i])
		}
	}

	// Revoke.
	rev, _ := s.Revision(ctx)
	wantErr(t, "DeleteGrant", s.DeleteGrant(ctx, tenantA, store.ScopeSession, "se-1", "gr_1"), nil)
	wantErr(t, "DeleteGrant again", s.DeleteGrant(ctx, tenantA, store.ScopeSession, "se-1", "gr_1"), store.ErrNotFound)
	wantErr(t, "DeleteGrant through the wrong object", s.DeleteGrant(ctx, tenantA, store.ScopeVM, "vm-1", "gr_2"), store.ErrNotFound)
	if after, _ := s.Revision(ctx); after != rev+1 {
		t.Errorf("revision after one revoke and two failures: %d, want %d", after, rev+1)
	}
	l, _ = s.ListGrants(ctx, tenantA, store.ScopeSession, "se-1", time.Now())
	if !reflect.DeepEqual(grantIDs(l), []string{"gr_2"}) {
		t.Errorf("after revoke: %v", grantIDs(l))
	}
}

// testGrantErrors: a grant needs its object, a TTL in range and a free ID; another tenant's
// objects and grants are not found.
func testGrantErrors(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustVM(t, s, tenantA, "vm-1")
	mustSession(t, s, tenantA, "vm-1", "se-1")
	mustGrant(t, s, store.Grant{ID: "gr_1", Scope: store.ScopeVM, ObjectID: "vm-1", TCP: []string{"a.test:1"}}, time.Hour)
	for _, tc := range []struct {
		name string
		g    store.Grant
		ttl  time.Duration
		want error
	}{
		{"missing session", store.Grant{Tenant: tenantA, ID: "gr_a", Scope: store.ScopeSession, ObjectID: "se-x"}, time.Hour, store.ErrNotFound},
		{"missing vm", store.Grant{Tenant: tenantA, ID: "gr_a", Scope: store.ScopeVM, ObjectID: "vm-x"}, time.Hour, store.ErrNotFound},
		{"session as vm", store.Grant{Tenant: tenantA, ID: "gr_a", Scope: store.ScopeVM, ObjectID: "se-1"}, time.Hour, store.ErrNotFound},
		{"another tenant's vm", store.Grant{Tenant: tenantB, ID: "gr_a", Scope: store.ScopeVM, ObjectID: "vm-1"}, time.Hour, store.ErrNotFound},
		{"another tenant's session", store.Grant{Tenant: tenantB, ID: "gr_a", Scope: store.ScopeSession, ObjectID: "se-1"}, time.Hour, store.ErrNotFound},
		{"taken id", store.Grant{Tenant: tenantA, ID: "gr_1", Scope: store.ScopeSession, ObjectID: "se-1"}, time.Hour, store.ErrConflict},
		{"ttl zero", store.Grant{Tenant: tenantA, ID: "gr_b", Scope: store.ScopeSession, ObjectID: "se-1"}, 0, nil},
		{"ttl too long", store.Grant{Tenant: tenantA, ID: "gr_b", Scope: store.ScopeSession, ObjectID: "se-1"}, store.MaxGrantTTL + time.Second, nil},
		{"bogus scope", store.Grant{Tenant: tenantA, ID: "gr_b", Scope: "tenant", ObjectID: "se-1"}, time.Hour, nil},
	} {
		_, err := s.CreateGrant(ctx, tc.g, tc.ttl)
		if tc.want == nil {
			if err == nil {
				t.Errorf("%s: CreateGrant succeeded", tc.name)
			}
			continue
		}
		wantErr(t, tc.name, err, tc.want)
	}
	if _, err := s.ListGrants(ctx, tenantB, store.ScopeVM, "vm-1", time.Now()); err == nil {
		t.Error("ListGrants of another tenant's VM succeeded")
	}
	// Another tenant's VM and session of the same IDs get none of tenant A's grants, and
	// their own are theirs.
	mustVM(t, s, tenantB, "vm-1")
	if l, err := s.ListGrants(ctx, tenantB, store.ScopeVM, "vm-1", time.Now()); err != nil || len(l) != 0 {
		t.Errorf("tenant B's vm-1 lists %+v, %v; want no grant", l, err)
	}
	mustGrant(t, s, store.Grant{Tenant: tenantB, ID: "gr_b", Scope: store.ScopeVM, ObjectID: "vm-1", TCP: []string{"b.test:2"}}, time.Hour)
	if l, _ := s.ListGrants(ctx, tenantA, store.ScopeVM, "vm-1", time.Now()); len(l) != 1 || l[0].ID != "gr_1" {
		t.Errorf("tenant A's vm-1 after tenant B's grant: %+v", l)
	}
	wantErr(t, "revoking tenant B's grant as tenant A", s.DeleteGrant(ctx, tenantA, store.ScopeVM, "vm-1", "gr_b"), store.ErrNotFound)
	wantErr(t, "DeleteGrant of another tenant", s.DeleteGrant(ctx, tenantB, store.ScopeVM, "vm-1", "gr_1"), store.ErrNotFound)
	if l, _ := s.ListGrants(ctx, tenantA, store.ScopeVM, "vm-1", time.Now()); len(l) != 1 {
		t.Errorf("the failed writes changed the grants: %+v", l)
	}

	// A VM being deleted or still being created takes no grant.
	for _, state := range []string{store.NetworkDeleting, store.NetworkCreating} {
		id := "vm-" + state
		if _, err := s.CreateVM(ctx, store.VM{Tenant: tenantA, ID: id, Network: store.Network{Mode: "netns", Node: "n1", State: state}}); err != nil {
			t.Fatal(err)
		}
		_, err := s.CreateGrant(ctx, store.Grant{Tenant: tenantA, ID: "gr_" + state, Scope: store.ScopeVM, ObjectID: id}, time.Hour)
		wantErr(t, "grant on a vm "+state, err, store.ErrNotFound)
	}

	// At most MaxGrantsPerObject active grants per object.
	mustSession(t, s, tenantA, "vm-1", "se-many")
	for i := range store.MaxGrantsPerObject {
		mustGrant(t, s, store.Grant{ID: "gr_many_" + string(rune('a'+i/26)) + string(rune('a'+i%26)), Scope: store.ScopeSession, ObjectID: "se-many"}, time.Hour)
	}
	_, err := s.CreateGrant(ctx, store.Grant{Tenant: tenantA, ID: "gr_one_more", Scope: store.ScopeSession, ObjectID: "se-many"}, time.Hour)
	wantErr(t, "one grant too many", err, store.ErrTooMany)
}

// testGrantCascades: ending a session deletes its grants, deleting or retiring a VM deletes
// its grants and its sessions', each logged; a new object of the same ID starts with none.
func testGrantCascades(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustVM(t, s, tenantA, "vm-1")
	mustSession(t, s, tenantA, "vm-1", "se-1")
	mustSession(t, s, tenantA, "vm-1", "se-2")
	mustVM(t, s, tenantA, "vm-other")
	mustSession(t, s, tenantA, "vm-other", "se-other")
	for _, g := range []store.Grant{
		{ID: "gr_s1a", Scope: store.ScopeSession, ObjectID: "se-1"},
		{ID: "gr_s1b", Scope: store.ScopeSession, ObjectID: "se-1"},
		{ID: "gr_s2", Scope: store.ScopeSession, ObjectID: "se-2"},
		{ID: "gr_v", Scope: store.ScopeVM, ObjectID: "vm-1"},
		{ID: "gr_o", Scope: store.ScopeSession, ObjectID: "se-other"},
	} {
		mustGrant(t, s, g, time.Hour)
	}
	rev, _ := s.Revision(ctx)
	wantErr(t, "DeleteSession", s.DeleteSession(ctx, tenantA, "se-1"), nil)
	changes, _ := s.ChangesSince(ctx, rev, store.MaxChanges)
	if len(changes) != 2 || changes[0].Kind != store.KindSessionGrant || changes[0].ID != "se-1" || changes[0].Op != store.OpDelete || changes[1].Kind != store.KindSession {
		t.Errorf("changes of DeleteSession = %+v", changes)
	}
	mustSession(t, s, tenantA, "vm-1", "se-1")
	if l, err := s.ListGrants(ctx, tenantA, store.ScopeSession, "se-1", time.Now()); err != nil || len(l) != 0 {
		t.Errorf("a new session se-1 inherited grants: %+v, %v", l, err)
	}

	rev, _ = s.Revision(ctx)
	wantErr(t, "DeleteVM", s.DeleteVM(ctx, tenantA, "vm-1"), nil)
	changes, _ = s.ChangesSince(ctx, rev, store.MaxChanges)
	kinds := map[string][]string{}
	for _, c := range changes {
		kinds[c.Kind] = append(kinds[c.Kind], c.ID)
	}
	if !reflect.DeepEqual(kinds[store.KindSessionGrant], []string{"se-2"}) || !reflect.DeepEqual(kinds[store.KindVMGrant], []string{"vm-1"}) {
		t.Errorf("grant changes of DeleteVM = %+v", kinds)
	}
	mustVM(t, s, tenantA, "vm-1")
	mustSession(t, s, tenantA, "vm-1", "se-2")
	for _, ref := range []struct {
		scope store.Scope
		id    string
	}{{store.ScopeVM, "vm-1"}, {store.ScopeSession, "se-2"}} {
		if l, err := s.ListGrants(ctx, tenantA, ref.scope, ref.id, time.Now()); err != nil || len(l) != 0 {
			t.Errorf("a new %s %s inherited grants: %+v, %v", ref.scope, ref.id, l, err)
		}
	}

	// Retiring a VM takes its grants too.
	mustGrant(t, s, store.Grant{ID: "gr_r", Scope: store.ScopeVM, ObjectID: "vm-other"}, time.Hour)
	if _, err := s.RetireVM(ctx, tenantA, "vm-other"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "DeleteGrant after RetireVM", s.DeleteGrant(ctx, tenantA, store.ScopeVM, "vm-other", "gr_r"), store.ErrNotFound)
	wantErr(t, "DeleteGrant of a retired VM's session", s.DeleteGrant(ctx, tenantA, store.ScopeSession, "se-other", "gr_o"), store.ErrNotFound)
}

// testSweepGrants: SweepGrants deletes exactly the expired grants and logs one change per
// object that lost some.
func testSweepGrants(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustVM(t, s, tenantA, "vm-1")
	mustSession(t, s, tenantA, "vm-1", "se-1")
	short := mustGrant(t, s, store.Grant{ID: "gr_short", Scope: store.ScopeSession, ObjectID: "se-1"}, time.Second)
	mustGrant(t, s, store.Grant{ID: "gr_short2", Scope: store.ScopeSession, ObjectID: "se-1"}, time.Second)
	mustGrant(t, s, store.Grant{ID: "gr_long", Scope: store.ScopeSession, ObjectID: "se-1"}, time.Hour)
	if n, err := s.SweepGrants(ctx, short.CreatedAt); err != nil || n != 0 {
		t.Fatalf("SweepGrants before any expiry = %d, %v", n, err)
	}
	rev, _ := s.Revision(ctx)
	n, err := s.SweepGrants(ctx, short.ExpiresAt.Add(time.Second))
	if err != nil || n != 2 {
		t.Fatalf("SweepGrants = %d, %v; want 2", n, err)
	}
	changes, _ := s.ChangesSince(ctx, rev, store.MaxChanges)
	if len(changes) != 1 || changes[0].Kind != store.KindSessionGrant || changes[0].ID != "se-1" || changes[0].Op != store.OpDelete {
		t.Errorf("changes of the sweep = %+v", changes)
	}
	// Listed at a time before their expiry, swept grants are gone all the same.
	l, _ := s.ListGrants(ctx, tenantA, store.ScopeSession, "se-1", short.CreatedAt)
	if !reflect.DeepEqual(grantIDs(l), []string{"gr_long"}) {
		t.Errorf("after the sweep: %v", grantIDs(l))
	}
}
