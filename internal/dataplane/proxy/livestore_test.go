package proxy

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/policy"
)

// liveStore is a real view over a real SQLite store holding tenant "t1"'s VM and one
// session on it, for the tests that run the proxy against what egressd really runs on.
type liveStore struct {
	t    testing.TB
	st   *sqlite.Store
	view *view.View
}

// newLiveStore stores vm and a session (sessionID, token) on it, with the two policies,
// and starts a view over them (polling every 20 ms, besides Kick).
func newLiveStore(t testing.TB, log *slog.Logger, vm store.VM, sessionID, token string, vmPolicy, sessionPolicy policy.Policy) *liveStore {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	l := &liveStore{t: t, st: st}
	vm.Tenant = "t1"
	if _, err := st.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256([]byte(token))
	if _, err := st.CreateSession(ctx, store.Session{Tenant: "t1", ID: sessionID, VMID: vm.ID, TokenHash: h[:]}); err != nil {
		t.Fatal(err)
	}
	l.put(store.ScopeVM, vm.ID, vmPolicy)
	l.put(store.ScopeSession, sessionID, sessionPolicy)
	env, err := policy.NewEnv(classifier, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.view, err = view.New(st, view.Config{Env: env, Poll: 20 * time.Millisecond, Logger: log}); err != nil {
		t.Fatal(err)
	}
	vctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	if err := l.view.Start(vctx); err != nil {
		t.Fatal(err)
	}
	return l
}

// put replaces a policy of tenant "t1".
func (l *liveStore) put(scope store.Scope, id string, p policy.Policy) {
	l.t.Helper()
	if _, err := l.st.PutPolicy(context.Background(), store.PolicyRecord{Tenant: "t1", Scope: scope, ID: id, Policy: p.WithDefaults()}); err != nil {
		l.t.Fatal(err)
	}
}
