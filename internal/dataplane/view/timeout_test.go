package view_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/policy"
)

// hangingStore is a store whose change log stops answering (without failing) while hang is
// set, as a database whose host vanished without closing the connection would.
type hangingStore struct {
	*sqlite.Store
	hang atomic.Bool
}

func (h *hangingStore) ChangesSince(ctx context.Context, rev int64, limit int) ([]store.Change, error) {
	if h.hang.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return h.Store.ChangesSince(ctx, rev, limit)
}

// TestHangingStoreMakesTheViewNotReady: a sync that hangs is cut by SyncTimeout, so the view
// reports not ready (and keeps its last policies) instead of freezing, and recovers when the
// store answers again.
func TestHangingStoreMakesTheViewNotReady(t *testing.T) {
	f := newFixture(t, view.Config{Poll: time.Hour})
	h := &hangingStore{Store: f.st}
	v, err := view.New(h, view.Config{Poll: 10 * time.Millisecond, SyncTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.put(store.ScopeVM, "vm1", policy.Policy{AllowHTTPS: true})
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := v.Authenticate("early", "early-token")
	if err != nil || !allows(s, https) {
		t.Fatalf("Authenticate = %v; want the session with its policy", err)
	}

	h.hang.Store(true)
	waitFor(t, "not ready while the store hangs", func() bool { return !v.Ready() })
	f.put(store.ScopeVM, "vm1", policy.Policy{}) // deny all, unseen while the store hangs
	if !allows(s, https) {
		t.Error("the last known policy was dropped while the store hung")
	}

	h.hang.Store(false)
	waitFor(t, "ready and caught up", func() bool { return v.Ready() && !allows(s, https) })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting: %s", what)
}
