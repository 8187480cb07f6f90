package view_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/policy"
)

// TestWaitRevisionAppliesTheWrite: once WaitRevision(the write's revision) returns, the view
// decides on the write, without anyone else kicking it and with a poll that never comes.
func TestWaitRevisionAppliesTheWrite(t *testing.T) {
	f := newFixture(t, view.Config{Poll: time.Hour})
	s, err := f.v.Authenticate("early", "early-token")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		p := policy.Policy{AllowHTTPS: i%2 == 0}
		rec, err := f.st.PutPolicy(context.Background(), store.PolicyRecord{Tenant: "t", Scope: store.ScopeSession, ID: "early", Policy: p.WithDefaults()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = f.v.WaitRevision(ctx, rec.Revision)
		cancel()
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if allows(s, https) != p.AllowHTTPS {
			t.Fatalf("write %d (allow_https %v) returned before the view applied it", i, p.AllowHTTPS)
		}
	}
}

// TestWaitRevisionWakesOnSync: waiters for a revision the store has not handed out yet
// sleep until a sync applies it, and are all woken by that one sync; a waiter whose context
// ends first gets its error.
func TestWaitRevisionWakesOnSync(t *testing.T) {
	f := newFixture(t, view.Config{Poll: time.Hour})
	next := f.v.Revision() + 1

	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := f.v.WaitRevision(short, next); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitRevision of a revision that does not exist = %v, want the deadline", err)
	}

	const waiters = 5
	done := make(chan error, waiters)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range waiters {
		go func() { done <- f.v.WaitRevision(ctx, next) }()
	}
	f.put(store.ScopeVM, "vm1", policy.Policy{AllowHTTP: true})
	f.v.Kick() // as the API's store hook does after a write
	for range waiters {
		if err := <-done; err != nil {
			t.Fatalf("a waiter was not woken by the sync that applied revision %d: %v", next, err)
		}
	}
	if got := f.v.Revision(); got < next {
		t.Errorf("view at revision %d after the waiters returned, want %d", got, next)
	}
}

// TestWaitRevisionOnAHangingStore: while the store does not answer, the view cannot apply a
// write and WaitRevision ends with the caller's deadline rather than claiming it.
func TestWaitRevisionOnAHangingStore(t *testing.T) {
	f := newFixture(t, view.Config{Poll: time.Hour})
	h := &hangingStore{Store: f.st}
	v, err := view.New(h, view.Config{Poll: time.Hour, SyncTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	h.hang.Store(true)
	rec, err := f.st.PutPolicy(context.Background(), store.PolicyRecord{Tenant: "t", Scope: store.ScopeVM, ID: "vm1", Policy: policy.DenyAll()})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer wcancel()
	if err := v.WaitRevision(wctx, rec.Revision); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitRevision on a hanging store = %v, want the deadline", err)
	}
	h.hang.Store(false)
	wctx, wcancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if err := v.WaitRevision(wctx, rec.Revision); err != nil {
		t.Fatalf("WaitRevision once the store answers: %v", err)
	}
}
