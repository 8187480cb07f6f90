package postgres

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
	"github.com/egressd/egressd/policy"
)

// TestFollowerMissesNothing: a follower that polls ChangesSince(the last revision it saw)
// while 8 writers write sees every change, in order. Without the write lock it would not:
// a transaction that took revision N but committed after one that took N+1 would be skipped.
func TestFollowerMissesNothing(t *testing.T) {
	t.Parallel()
	const (
		writers = 8
		rounds  = 40 // each round: a session, its policy, and the session's end (3 changes, 4 revisions)
	)
	s := openTest(t, pgtest.NewDatabase(t))
	ctx := t.Context()
	if _, err := s.CreateVM(ctx, store.VM{Tenant: "t", ID: "vm"}); err != nil {
		t.Fatal(err)
	}

	done := make(chan struct{})
	var seen []int64
	followed := make(chan error, 1)
	go func() {
		var last int64
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			// Once every writer is done, one more read that finds nothing ends it.
			writersDone := isClosed(done)
			changes, err := s.ChangesSince(ctx, last, 50) // small pages, so paging is exercised too
			if err != nil {
				followed <- err
				return
			}
			for _, c := range changes {
				if c.Revision <= last {
					followed <- fmt.Errorf("revision %d after %d", c.Revision, last)
					return
				}
				last = c.Revision
				seen = append(seen, c.Revision)
			}
			if writersDone && len(changes) == 0 {
				followed <- nil
				return
			}
		}
		followed <- fmt.Errorf("the follower did not finish in time")
	}()

	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range rounds {
				id := fmt.Sprintf("se-%d-%d", w, i)
				if _, err := s.CreateSession(ctx, store.Session{Tenant: "t", ID: id, VMID: "vm", TokenHash: sum(id)}); err != nil {
					t.Errorf("CreateSession: %v", err)
					return
				}
				if _, err := s.PutPolicy(ctx, store.PolicyRecord{Tenant: "t", Scope: store.ScopeSession, ID: id, Policy: policy.DenyAll()}); err != nil {
					t.Errorf("PutPolicy: %v", err)
					return
				}
				if err := s.DeleteSession(ctx, "t", id); err != nil {
					t.Errorf("DeleteSession: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	if err := <-followed; err != nil {
		t.Fatal(err)
	}

	all, err := s.ChangesSince(ctx, 0, store.MaxChanges)
	if err != nil {
		t.Fatal(err)
	}
	// The VM's creation came before the follower started reading from 0, so it is seen too.
	if len(seen) != len(all) {
		t.Fatalf("the follower saw %d changes, the log has %d: it missed some", len(seen), len(all))
	}
	for i := range all {
		if seen[i] != all[i].Revision {
			t.Fatalf("change %d: the follower saw revision %d, the log has %d", i, seen[i], all[i].Revision)
		}
	}
	if want := 1 + writers*rounds*4; len(all) != want {
		t.Errorf("the log has %d changes, want %d", len(all), want)
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// TestWriterWaitsForTheWriteLock: a store write waits for a transaction that holds the write
// lock, and takes a revision after the one that transaction took: revisions commit in order.
func TestWriterWaitsForTheWriteLock(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	s := openTest(t, url)
	ctx := t.Context()
	c := connect(t, url)

	// Another writer (as another node would be) in the middle of its transaction.
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, writeLockKey); err != nil {
		t.Fatal(err)
	}
	var held int64
	if err := tx.QueryRow(ctx, `INSERT INTO changes (tenant, kind, id, op, at) VALUES ('t', 'vm', 'other', 'create', now()) RETURNING revision`).Scan(&held); err != nil {
		t.Fatal(err)
	}

	type result struct {
		vm  store.VM
		err error
	}
	res := make(chan result, 1)
	go func() {
		vm, err := s.CreateVM(ctx, store.VM{Tenant: "t", ID: "vm"})
		res <- result{vm, err}
	}()
	select {
	case r := <-res:
		t.Fatalf("CreateVM returned (%+v, %v) while another writer held the lock", r.vm, r.err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.vm.Revision <= held {
		t.Errorf("CreateVM took revision %d, want more than the lock holder's %d", r.vm.Revision, held)
	}
}
