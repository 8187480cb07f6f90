// Package storetest is the conformance suite of store.Store: every implementation (the
// embedded SQLite one, a PostgreSQL one) runs Run from its own tests and must pass it
// unchanged, so that the API and the gateway can rely on the contract whatever the store.
package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/policy"
)

// Run runs the suite. open must return a new, empty store each time it is called; Run calls
// it once per subtest and closes the store when the subtest ends. Subtests run one after the
// other, so open may reuse a resource (a database server) between them.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		run  func(t *testing.T, s store.Store)
	}{
		{"APIKeys", testAPIKeys},
		{"APIKeyConflicts", testAPIKeyConflicts},
		{"APIKeyTies", testAPIKeyTies},
		{"VMs", testVMs},
		{"VMConflicts", testVMConflicts},
		{"TenantIsolation", testTenantIsolation},
		{"IDsDifferByCase", testIDsDifferByCase},
		{"Sessions", testSessions},
		{"SessionConflicts", testSessionConflicts},
		{"DeleteSession", testDeleteSession},
		{"Policies", testPolicies},
		{"PolicyErrors", testPolicyErrors},
		{"PolicyScopes", testPolicyScopes},
		{"PolicyAllowedTCP", testPolicyAllowedTCP},
		{"DeleteVMCascades", testDeleteVMCascades},
		{"Networks", testNetworks},
		{"UpdateVMNetwork", testUpdateVMNetwork},
		{"UpdateVMNetworkErrors", testUpdateVMNetworkErrors},
		{"UpdateVMNetworkConcurrent", testUpdateVMNetworkConcurrent},
		{"RetireVM", testRetireVM},
		{"NoSessionOnAnUnfinishedVM", testNoSessionOnAnUnfinishedVM},
		{"Revisions", testRevisions},
		{"CanceledContext", testCanceledContext},
		{"Concurrency", testConcurrency},
		{"Ping", testPing},
		{"AllSessions", testAllSessions},
		{"ChangeLog", testChangeLog},
		{"Nodes", testNodes},
		{"NodeUpdates", testNodeUpdates},
		{"NodesTakeNoRevision", testNodesTakeNoRevision},
		{"Now", testNow},
		{"Secrets", testSecrets},
		{"SecretConflicts", testSecretConflicts},
		{"SecretTenantIsolation", testSecretTenantIsolation},
		{"UpdateSecret", testUpdateSecret},
		{"UpdateSecretConcurrent", testUpdateSecretConcurrent},
		{"AllSecrets", testAllSecrets},
		{"KeyCheck", testKeyCheck},
		{"CA", testCA},
		{"Grants", testGrants},
		{"GrantErrors", testGrantErrors},
		{"GrantCascades", testGrantCascades},
		{"SweepGrants", testSweepGrants},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.run(t, s)
		})
	}
}

// Tenants of the suite's objects.
const (
	tenantA = "tenant-a"
	tenantB = "tenant-b"
)

// hash is a SHA-256 of s, the form in which keys and tokens are stored.
func hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// fullPolicy sets every field to a value other than its default, so that a round trip that
// drops or confuses a field shows. i makes policies differ from each other.
func fullPolicy(i int) policy.Policy {
	return policy.Policy{
		AllowPackageManagers: true,
		AllowHTTP:            true,
		AllowHTTPS:           true,
		AllowedDomains:       []string{fmt.Sprintf("api%d.example.com", i), "*.pythonhosted.org"},
		AllowedCIDRs:         []string{"198.51.100.0/24", "2001:db8::/32"},
		DeniedDomains:        []string{"evil.example.com"},
		Mode:                 policy.Monitor,
		AllowedTCP:           []string{fmt.Sprintf("git%d.example.com:22", i), "*.db.example.com:5432", "top.example.com:65535"},
	}
}

// emptyPolicy is the deny-all policy in its normalised form: empty lists, not nil ones.
func emptyPolicy() policy.Policy {
	return policy.Policy{AllowedDomains: []string{}, AllowedCIDRs: []string{}, DeniedDomains: []string{}, Mode: policy.Enforce}
}

func mustVM(t *testing.T, s store.Store, tenant, id string) store.VM {
	t.Helper()
	vm, err := s.CreateVM(t.Context(), store.VM{Tenant: tenant, ID: id, Network: store.Network{Mode: "none"}})
	if err != nil {
		t.Fatalf("CreateVM(%s, %s): %v", tenant, id, err)
	}
	return vm
}

func mustSession(t *testing.T, s store.Store, tenant, vmID, id string) store.Session {
	t.Helper()
	se, err := s.CreateSession(t.Context(), store.Session{Tenant: tenant, ID: id, VMID: vmID, TokenHash: hash("token-" + id)})
	if err != nil {
		t.Fatalf("CreateSession(%s, %s, %s): %v", tenant, vmID, id, err)
	}
	return se
}

func mustPolicy(t *testing.T, s store.Store, tenant string, scope store.Scope, id string, p policy.Policy) store.PolicyRecord {
	t.Helper()
	r, err := s.PutPolicy(t.Context(), store.PolicyRecord{Tenant: tenant, Scope: scope, ID: id, Policy: p})
	if err != nil {
		t.Fatalf("PutPolicy(%s, %s, %s): %v", tenant, scope, id, err)
	}
	return r
}

func mustRevision(t *testing.T, s store.Store) int64 {
	t.Helper()
	rev, err := s.Revision(t.Context())
	if err != nil {
		t.Fatalf("Revision: %v", err)
	}
	return rev
}

// wantErr fails unless err matches want (nil meaning success).
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("%s: %v, want success", what, err)
	case want != nil && !errors.Is(err, want):
		t.Errorf("%s: error %v, want %v", what, err, want)
	}
}

// checkTime fails unless tm is in UTC and within [before, after].
func checkTime(t *testing.T, what string, tm, before, after time.Time) {
	t.Helper()
	if tm.Location() != time.UTC {
		t.Errorf("%s = %v: location %v, want UTC", what, tm, tm.Location())
	}
	if tm.Before(before.Truncate(time.Microsecond)) || tm.After(after.Add(time.Microsecond)) {
		t.Errorf("%s = %v, want between %v and %v", what, tm, before, after)
	}
}

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testCanceledContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.CreateVM(ctx, store.VM{Tenant: tenantA, ID: "vm-1"}); err == nil {
		t.Error("CreateVM with a canceled context succeeded")
	}
	// A call whose context is canceled before it starts must not change the store, and must
	// not break it for the calls that follow.
	_, err := s.GetVM(t.Context(), tenantA, "vm-1")
	wantErr(t, "GetVM after canceled CreateVM", err, store.ErrNotFound)
	mustVM(t, s, tenantA, "vm-1")
}
