package storetest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
)

// testRevisions: every kind of mutation takes a revision greater than every earlier one, and
// the revision a mutation returns is the store's Revision right after it.
func testRevisions(t *testing.T, s store.Store) {
	ctx := t.Context()
	if rev := mustRevision(t, s); rev != 0 {
		t.Errorf("Revision of an empty store = %d, want 0", rev)
	}
	// Each step returns the revision it reports, or 0 for the calls that report none.
	steps := []struct {
		name string
		do   func() (int64, error)
	}{
		{"CreateAPIKey", func() (int64, error) {
			return 0, s.CreateAPIKey(ctx, store.APIKey{ID: "key-1", Tenant: tenantA, Hash: hash("secret")})
		}},
		{"CreateVM", func() (int64, error) {
			vm, err := s.CreateVM(ctx, store.VM{Tenant: tenantA, ID: "vm-1"})
			return vm.Revision, err
		}},
		{"CreateSession", func() (int64, error) {
			se, err := s.CreateSession(ctx, store.Session{Tenant: tenantA, ID: "se-1", VMID: "vm-1", TokenHash: hash("t")})
			return se.Revision, err
		}},
		{"PutPolicy vm", func() (int64, error) {
			r, err := s.PutPolicy(ctx, store.PolicyRecord{Tenant: tenantA, Scope: store.ScopeVM, ID: "vm-1", Policy: fullPolicy(1)})
			return r.Revision, err
		}},
		{"PutPolicy session", func() (int64, error) {
			r, err := s.PutPolicy(ctx, store.PolicyRecord{Tenant: tenantA, Scope: store.ScopeSession, ID: "se-1", Policy: fullPolicy(2)})
			return r.Revision, err
		}},
		{"PutPolicy session, replace", func() (int64, error) {
			r, err := s.PutPolicy(ctx, store.PolicyRecord{Tenant: tenantA, Scope: store.ScopeSession, ID: "se-1", Policy: emptyPolicy()})
			return r.Revision, err
		}},
		{"DeletePolicy session", func() (int64, error) {
			return 0, s.DeletePolicy(ctx, tenantA, store.ScopeSession, "se-1")
		}},
		{"DeleteSession", func() (int64, error) { return 0, s.DeleteSession(ctx, tenantA, "se-1") }},
		{"DeleteVM", func() (int64, error) { return 0, s.DeleteVM(ctx, tenantA, "vm-1") }},
		{"DeleteAPIKey", func() (int64, error) { return 0, s.DeleteAPIKey(ctx, "key-1") }},
	}
	var last int64
	for _, step := range steps {
		got, err := step.do()
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		rev := mustRevision(t, s)
		if rev <= last {
			t.Errorf("Revision after %s = %d, want > %d", step.name, rev, last)
		}
		if got != 0 && got != rev {
			t.Errorf("%s returned revision %d, but Revision() = %d", step.name, got, rev)
		}
		last = rev
	}

	// Reads do not take revisions.
	if _, err := s.ListVMs(ctx, tenantA); err != nil {
		t.Fatalf("ListVMs: %v", err)
	}
	if rev := mustRevision(t, s); rev != last {
		t.Errorf("Revision after a read = %d, want %d", rev, last)
	}
}

// testConcurrency: writers in parallel, with readers alongside, lose nothing and never share
// a revision.
func testConcurrency(t *testing.T, s store.Store) {
	const (
		writers = 8
		rounds  = 25 // each round is two writes: a session and its policy
		readers = 4
	)
	ctx := t.Context()
	mustVM(t, s, tenantA, "vm-1")
	mustPolicy(t, s, tenantA, store.ScopeVM, "vm-1", fullPolicy(0))

	type write struct {
		id       string
		revision int64
	}
	results := make(chan write, writers*rounds*2)
	done := make(chan struct{})
	var readersWG, writersWG sync.WaitGroup
	for r := range readers {
		readersWG.Go(func() {
			// Paced, so that on a machine with few CPUs the readers do not starve the writers
			// of CPU time; bounded, stopping when the writers are done or after this many reads.
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			var lastRev int64
			for i := 0; i < 1000; i++ {
				select {
				case <-done:
					return
				case <-tick.C:
				}
				var err error
				switch i % 3 {
				case 0:
					_, err = s.GetVM(ctx, tenantA, "vm-1")
				case 1:
					_, err = s.GetPolicy(ctx, tenantA, store.ScopeVM, "vm-1")
				case 2:
					var rev int64
					rev, err = s.Revision(ctx)
					if err == nil && rev < lastRev {
						err = fmt.Errorf("Revision went back from %d to %d", lastRev, rev)
					}
					lastRev = rev
				}
				if err != nil {
					t.Errorf("reader %d: %v", r, err)
					return
				}
			}
		})
	}
	for w := range writers {
		writersWG.Go(func() {
			for i := range rounds {
				id := fmt.Sprintf("se-%d-%d", w, i)
				se, err := s.CreateSession(ctx, store.Session{Tenant: tenantA, ID: id, VMID: "vm-1", TokenHash: hash(id)})
				if err != nil {
					t.Errorf("writer %d: CreateSession: %v", w, err)
					return
				}
				results <- write{"session " + id, se.Revision}
				r, err := s.PutPolicy(ctx, store.PolicyRecord{Tenant: tenantA, Scope: store.ScopeSession, ID: id, Policy: fullPolicy(i)})
				if err != nil {
					t.Errorf("writer %d: PutPolicy: %v", w, err)
					return
				}
				results <- write{"policy " + id, r.Revision}
			}
		})
	}
	writersWG.Wait()
	close(done)
	readersWG.Wait()
	close(results)
	if t.Failed() {
		return
	}

	seen := map[int64]string{}
	policies := map[string]int64{}
	for w := range results {
		if other, dup := seen[w.revision]; dup {
			t.Errorf("revision %d taken by both %s and %s", w.revision, other, w.id)
		}
		seen[w.revision] = w.id
		if id, ok := strings.CutPrefix(w.id, "policy "); ok {
			policies[id] = w.revision
		}
	}
	if len(seen) != writers*rounds*2 {
		t.Errorf("%d distinct revisions, want %d", len(seen), writers*rounds*2)
	}
	list, err := s.ListSessions(ctx, tenantA, "vm-1")
	if err != nil {
		t.Fatalf("ListSessions: %v", err)
	}
	if len(list) != writers*rounds {
		t.Errorf("ListSessions: %d sessions, want %d", len(list), writers*rounds)
	}
	for id, rev := range policies {
		r, err := s.GetPolicy(ctx, tenantA, store.ScopeSession, id)
		if err != nil || r.Revision != rev {
			t.Errorf("GetPolicy(%s) = revision %d, %v; want %d", id, r.Revision, err, rev)
		}
	}
	newest := int64(0)
	for rev := range seen {
		newest = max(newest, rev)
	}
	if rev := mustRevision(t, s); rev != newest {
		t.Errorf("Revision() = %d, want the newest write's, %d", rev, newest)
	}
}
