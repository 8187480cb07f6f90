package sqlite

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/policy"
)

// benchPolicy is a policy of a typical size: a few dozen names and ranges.
func benchPolicy() policy.Policy {
	p := policy.Policy{AllowHTTPS: true, AllowPackageManagers: true, Mode: policy.Enforce, DeniedDomains: []string{}}
	for i := range 30 {
		p.AllowedDomains = append(p.AllowedDomains, fmt.Sprintf("api-%d.example.com", i))
	}
	for i := range 10 {
		p.AllowedCIDRs = append(p.AllowedCIDRs, fmt.Sprintf("198.51.%d.0/24", i))
	}
	return p
}

// benchVMs opens a store with n VMs, each with a policy.
func benchVMs(b *testing.B, n int) *Store {
	s := openTest(b, b.TempDir())
	for i := range n {
		id := fmt.Sprintf("vm-%d", i)
		if _, err := s.CreateVM(b.Context(), store.VM{Tenant: "t", ID: id}); err != nil {
			b.Fatal(err)
		}
		if _, err := s.PutPolicy(b.Context(), store.PolicyRecord{Tenant: "t", Scope: store.ScopeVM, ID: id, Policy: benchPolicy()}); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// BenchmarkPutPolicy is one writer replacing a policy: a transaction and an fsync per op.
func BenchmarkPutPolicy(b *testing.B) {
	s := benchVMs(b, 1)
	r := store.PolicyRecord{Tenant: "t", Scope: store.ScopeVM, ID: "vm-0", Policy: benchPolicy()}
	for b.Loop() {
		if _, err := s.PutPolicy(b.Context(), r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutPolicyParallel is many writers at once: they queue for the one writer
// connection, so this measures the write queue, not SQLITE_BUSY retries.
func BenchmarkPutPolicyParallel(b *testing.B) {
	const vms = 64
	s := benchVMs(b, vms)
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := store.PolicyRecord{Tenant: "t", Scope: store.ScopeVM, Policy: benchPolicy()}
		for pb.Next() {
			r.ID = fmt.Sprintf("vm-%d", next.Add(1)%vms)
			if _, err := s.PutPolicy(b.Context(), r); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGetPolicy is readers in parallel, as the gateway and the API read policies.
func BenchmarkGetPolicy(b *testing.B) {
	const vms = 64
	s := benchVMs(b, vms)
	ids := make([]string, vms)
	for i := range ids {
		ids[i] = fmt.Sprintf("vm-%d", i)
	}
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.GetPolicy(b.Context(), "t", store.ScopeVM, ids[next.Add(1)%vms]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
