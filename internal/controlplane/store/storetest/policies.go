package storetest

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/policy"
)

func testPolicies(t *testing.T, s store.Store) {
	mustVM(t, s, tenantA, "vm-1")
	mustSession(t, s, tenantA, "vm-1", "se-1")
	for _, tc := range []struct {
		scope store.Scope
		id    string
	}{
		{store.ScopeVM, "vm-1"},
		{store.ScopeSession, "se-1"},
	} {
		t.Run(string(tc.scope), func(t *testing.T) {
			testPolicyLifecycle(t, s, tc.scope, tc.id)
		})
	}
}

// testPolicyLifecycle puts, reads, replaces and deletes the policy of one object.
func testPolicyLifecycle(t *testing.T, s store.Store, scope store.Scope, id string) {
	ctx := t.Context()
	_, err := s.GetPolicy(ctx, tenantA, scope, id)
	wantErr(t, "GetPolicy before any put", err, store.ErrNoPolicy)

	var last store.PolicyRecord
	for i, p := range []policy.Policy{fullPolicy(1), emptyPolicy(), fullPolicy(2)} {
		before := time.Now()
		put, err := s.PutPolicy(ctx, store.PolicyRecord{Tenant: tenantA, Scope: scope, ID: id, Policy: p})
		after := time.Now()
		if err != nil {
			t.Fatalf("PutPolicy #%d: %v", i, err)
		}
		if put.Tenant != tenantA || put.Scope != scope || put.ID != id || !reflect.DeepEqual(put.Policy, p) {
			t.Errorf("PutPolicy #%d = %+v, want the record as given", i, put)
		}
		if put.Revision <= last.Revision {
			t.Errorf("PutPolicy #%d: Revision = %d, want > %d", i, put.Revision, last.Revision)
		}
		checkTime(t, "UpdatedAt", put.UpdatedAt, before, after)

		got, err := s.GetPolicy(ctx, tenantA, scope, id)
		if err != nil {
			t.Fatalf("GetPolicy #%d: %v", i, err)
		}
		// Every field comes back, lists included: empty stays empty, order is kept.
		if !recordEqual(got, put) {
			t.Errorf("GetPolicy #%d = %+v, want what PutPolicy returned, %+v", i, got, put)
		}
		last = put
	}

	wantErr(t, "DeletePolicy", s.DeletePolicy(ctx, tenantA, scope, id), nil)
	_, err = s.GetPolicy(ctx, tenantA, scope, id)
	wantErr(t, "GetPolicy after delete", err, store.ErrNoPolicy)
	wantErr(t, "DeletePolicy again", s.DeletePolicy(ctx, tenantA, scope, id), store.ErrNoPolicy)

	// Deleting the policy does not delete the object.
	var objErr error
	if scope == store.ScopeVM {
		_, objErr = s.GetVM(ctx, tenantA, id)
	} else {
		_, objErr = s.GetSession(ctx, tenantA, id)
	}
	wantErr(t, "reading the object after DeletePolicy", objErr, nil)

	again := mustPolicy(t, s, tenantA, scope, id, fullPolicy(3))
	if again.Revision <= last.Revision {
		t.Errorf("PutPolicy after delete: Revision = %d, want > %d", again.Revision, last.Revision)
	}
}

// testPolicyErrors: ErrNotFound when the object is not there, ErrNoPolicy when it is there
// without a policy; never one for the other.
func testPolicyErrors(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustVM(t, s, tenantA, "vm-bare")
	mustSession(t, s, tenantA, "vm-bare", "se-bare")

	for _, tc := range []struct {
		name  string
		scope store.Scope
		id    string
		want  error
	}{
		{"VM without policy", store.ScopeVM, "vm-bare", store.ErrNoPolicy},
		{"session without policy", store.ScopeSession, "se-bare", store.ErrNoPolicy},
		{"missing VM", store.ScopeVM, "vm-missing", store.ErrNotFound},
		{"missing session", store.ScopeSession, "se-missing", store.ErrNotFound},
		{"session ID as a VM", store.ScopeVM, "se-bare", store.ErrNotFound},
		{"VM ID as a session", store.ScopeSession, "vm-bare", store.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.GetPolicy(ctx, tenantA, tc.scope, tc.id)
			wantOnly(t, "GetPolicy", err, tc.want)
			wantOnly(t, "DeletePolicy", s.DeletePolicy(ctx, tenantA, tc.scope, tc.id), tc.want)
			if tc.want == store.ErrNotFound {
				_, err := s.PutPolicy(ctx, store.PolicyRecord{Tenant: tenantA, Scope: tc.scope, ID: tc.id, Policy: fullPolicy(1)})
				wantErr(t, "PutPolicy", err, store.ErrNotFound)
			}
		})
	}

	// A scope that is neither "vm" nor "session" is refused, never stored.
	const bogus = store.Scope("tenant")
	if _, err := s.PutPolicy(ctx, store.PolicyRecord{Tenant: tenantA, Scope: bogus, ID: "vm-bare", Policy: fullPolicy(1)}); err == nil {
		t.Error("PutPolicy with an unknown scope succeeded")
	}
	if _, err := s.GetPolicy(ctx, tenantA, bogus, "vm-bare"); err == nil {
		t.Error("GetPolicy with an unknown scope succeeded")
	}
	if err := s.DeletePolicy(ctx, tenantA, bogus, "vm-bare"); err == nil {
		t.Error("DeletePolicy with an unknown scope succeeded")
	}
}

// testPolicyScopes: a VM and a session with the same ID have separate policies.
func testPolicyScopes(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustVM(t, s, tenantA, "same")
	mustSession(t, s, tenantA, "same", "same")
	vm := mustPolicy(t, s, tenantA, store.ScopeVM, "same", fullPolicy(1))
	se := mustPolicy(t, s, tenantA, store.ScopeSession, "same", fullPolicy(2))
	for _, want := range []store.PolicyRecord{vm, se} {
		got, err := s.GetPolicy(ctx, tenantA, want.Scope, want.ID)
		if err != nil || !recordEqual(got, want) {
			t.Errorf("GetPolicy(%s) = %+v, %v; want %+v", want.Scope, got, err, want)
		}
	}
	wantErr(t, "DeletePolicy(session)", s.DeletePolicy(ctx, tenantA, store.ScopeSession, "same"), nil)
	if got, err := s.GetPolicy(ctx, tenantA, store.ScopeVM, "same"); err != nil || !recordEqual(got, vm) {
		t.Errorf("GetPolicy(vm) after deleting the session's = %+v, %v; want it unchanged", got, err)
	}
}

// wantOnly fails unless err matches want, one of ErrNotFound and ErrNoPolicy, and not the other.
func wantOnly(t *testing.T, what string, err, want error) {
	t.Helper()
	wantErr(t, what, err, want)
	for _, other := range []error{store.ErrNotFound, store.ErrNoPolicy} {
		if other != want && errors.Is(err, other) {
			t.Errorf("%s: error %v matches %v too", what, err, other)
		}
	}
}

// recordEqual compares policy records, times by instant.
func recordEqual(a, b store.PolicyRecord) bool {
	return a.Tenant == b.Tenant && a.Scope == b.Scope && a.ID == b.ID && reflect.DeepEqual(a.Policy, b.Policy) &&
		a.Revision == b.Revision && a.UpdatedAt.Equal(b.UpdatedAt)
}

// testPolicyAllowedTCP: allowed_tcp comes back entry for entry, order kept, an empty list
// as an empty list, and a replacement that drops it leaves none of the old entries.
func testPolicyAllowedTCP(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustVM(t, s, tenantA, "vm-tcp")
	for _, tcp := range [][]string{
		{"github.com:22"},
		{"*.db.example.com:5432", "github.com:22", "xn--bcher-kva.example:2222", "one.example.com:1", "top.example.com:65535"},
		{},
		nil,
	} {
		p := emptyPolicy()
		p.AllowedTCP = tcp
		put := mustPolicy(t, s, tenantA, store.ScopeVM, "vm-tcp", p)
		got, err := s.GetPolicy(ctx, tenantA, store.ScopeVM, "vm-tcp")
		if err != nil {
			t.Fatalf("GetPolicy: %v", err)
		}
		if !recordEqual(got, put) || !reflect.DeepEqual(got.Policy.AllowedTCP, tcp) {
			t.Errorf("allowed_tcp %#v came back as %#v", tcp, got.Policy.AllowedTCP)
		}
	}
}
