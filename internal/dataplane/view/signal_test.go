package view_test

import (
	"context"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/view"
)

// TestChangesOfNoVMAreSignalled: a change that touches no VM (a secret, an API key) still
// signals Changed once the view has its revision, so that the gateway reports that revision
// as enforced at once instead of at its next resync (a write waits for it).
func TestChangesOfNoVMAreSignalled(t *testing.T) {
	f := newFixture(t, view.Config{})
	ctx := context.Background()
	drain := func() {
		select {
		case <-f.v.Changed():
		default:
		}
	}
	for name, write := range map[string]func() error{
		"a secret": func() error {
			_, err := f.st.CreateSecret(ctx, store.Secret{Tenant: "t", Name: "s", Domains: []string{"a.test"}, Placeholder: "p", Sealed: []byte("x")})
			return err
		},
		"an API key": func() error {
			return f.st.CreateAPIKey(ctx, store.APIKey{ID: "k", Tenant: "t", Hash: []byte("h")})
		},
	} {
		drain()
		if err := write(); err != nil {
			t.Fatal(err)
		}
		rev, _ := f.st.Revision(ctx)
		f.v.Kick()
		select {
		case <-f.v.Changed():
			if got := f.v.Revision(); got < rev {
				t.Errorf("%s: signalled at revision %d, before the write's %d", name, got, rev)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s: no change signal", name)
		}
	}
}
