package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
)

func TestWithHookCallsAfterEachSuccessfulMutation(t *testing.T) {
	raw, err := sqlite.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	calls := 0
	s := store.WithHook(raw, func() { calls++ })
	ctx := context.Background()
	step := func(what string, want int, err error) {
		t.Helper()
		if calls != want {
			t.Errorf("%s: %d hook calls, want %d (err %v)", what, calls, want, err)
		}
	}
	_, err = s.CreateVM(ctx, store.VM{Tenant: "t", ID: "v", Network: store.Network{Mode: "none"}})
	step("create VM", 1, err)
	_, err = s.CreateVM(ctx, store.VM{Tenant: "t", ID: "v", Network: store.Network{Mode: "none"}})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate VM: %v", err)
	}
	step("failed create", 1, err)
	_, err = s.CreateSession(ctx, store.Session{Tenant: "t", ID: "s", VMID: "v", TokenHash: []byte("h")})
	step("create session", 2, err)
	_, err = s.GetSession(ctx, "t", "s")
	step("a read", 2, err)
	_, err = s.PutPolicy(ctx, store.PolicyRecord{Tenant: "t", Scope: store.ScopeVM, ID: "v"})
	step("put policy", 3, err)
	err = s.DeletePolicy(ctx, "t", store.ScopeVM, "v")
	step("delete policy", 4, err)
	err = s.DeleteSession(ctx, "t", "s")
	step("delete session", 5, err)
	err = s.DeleteVM(ctx, "t", "v")
	step("delete VM", 6, err)
	err = s.CreateAPIKey(ctx, store.APIKey{ID: "k", Tenant: "t", Hash: []byte("x")})
	step("create key", 7, err)
	err = s.DeleteAPIKey(ctx, "k")
	step("delete key", 8, err)
	// A heartbeat changes nothing a view enforces: waking it every second would be waste.
	err = s.PutNode(ctx, store.Node{ID: "gw"})
	step("put node", 8, err)
	_, err = s.CreateSecret(ctx, store.Secret{Tenant: "t", Name: "api", Domains: []string{"api.test"}, Placeholder: "p", Sealed: []byte("x")})
	step("create secret", 9, err)
	_, err = s.UpdateSecret(ctx, "t", "api", func(se store.Secret) (store.Secret, error) { return se, nil })
	step("update secret", 10, err)
	_, err = s.UpdateSecret(ctx, "t", "api", func(se store.Secret) (store.Secret, error) { return se, errors.New("no") })
	step("refused update", 10, err)
	err = s.DeleteSecret(ctx, "t", "api")
	step("delete secret", 11, err)
	// The values written once are read at start, before anything follows the store.
	_, err = s.InitKeyCheck(ctx, []byte("check"))
	step("init key check", 11, err)
	_, err = s.InitCA(ctx, store.CA{CertDER: []byte("c"), SealedKey: []byte("k")})
	step("init CA", 11, err)
	_, err = s.CreateVM(ctx, store.VM{Tenant: "t", ID: "g", Network: store.Network{Mode: "none"}})
	step("create VM", 12, err)
	g, err := s.CreateGrant(ctx, store.Grant{Tenant: "t", ID: "gr_1", Scope: store.ScopeVM, ObjectID: "g"}, time.Second)
	step("create grant", 13, err)
	_, err = s.CreateGrant(ctx, store.Grant{Tenant: "t", ID: "gr_2", Scope: store.ScopeVM, ObjectID: "nope"}, time.Second)
	step("refused grant", 13, err)
	_, err = s.SweepGrants(ctx, g.CreatedAt)
	step("a sweep that finds nothing", 13, err)
	_, err = s.SweepGrants(ctx, g.ExpiresAt)
	step("a sweep that deletes", 14, err)
	_, err = s.CreateGrant(ctx, store.Grant{Tenant: "t", ID: "gr_3", Scope: store.ScopeVM, ObjectID: "g"}, time.Second)
	step("create grant", 15, err)
	err = s.DeleteGrant(ctx, "t", store.ScopeVM, "g", "gr_3")
	step("revoke grant", 16, err)
}
