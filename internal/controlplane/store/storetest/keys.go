package storetest

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
)

func testAPIKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	keys, err := s.ListAPIKeys(ctx)
	if err != nil || len(keys) != 0 {
		t.Fatalf("ListAPIKeys on an empty store = %v, %v; want none", keys, err)
	}

	t0 := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	want := []store.APIKey{
		{ID: "key-admin", Tenant: "default", Admin: true, Hash: hash("secret-admin"), CreatedAt: t0},
		{ID: "key-a", Tenant: tenantA, Hash: hash("secret-a"), CreatedAt: t0.Add(time.Second)},
		{ID: "key-b", Tenant: tenantB, Hash: hash("secret-b"), CreatedAt: t0.Add(2 * time.Second)},
	}
	// Created newest first, so that "oldest first" cannot pass by insertion order alone.
	for i := len(want) - 1; i >= 0; i-- {
		if err := s.CreateAPIKey(ctx, want[i]); err != nil {
			t.Fatalf("CreateAPIKey(%s): %v", want[i].ID, err)
		}
	}
	for _, k := range want {
		got, err := s.APIKeyByHash(ctx, k.Hash)
		if err != nil {
			t.Fatalf("APIKeyByHash(%s): %v", k.ID, err)
		}
		checkTime(t, "CreatedAt", got.CreatedAt, k.CreatedAt, k.CreatedAt)
		got.CreatedAt = k.CreatedAt
		if !reflect.DeepEqual(got, k) {
			t.Errorf("APIKeyByHash(%s) = %+v, want %+v", k.ID, got, k)
		}
	}
	if _, err := s.APIKeyByHash(ctx, hash("no such secret")); err == nil {
		t.Error("APIKeyByHash of an unknown hash succeeded")
	} else {
		wantErr(t, "APIKeyByHash(unknown)", err, store.ErrNotFound)
	}

	keys, err = s.ListAPIKeys(ctx)
	if err != nil {
		t.Fatalf("ListAPIKeys: %v", err)
	}
	if got := keyIDs(keys); !slices.Equal(got, []string{"key-admin", "key-a", "key-b"}) {
		t.Errorf("ListAPIKeys = %v, want oldest first [key-admin key-a key-b]", got)
	}

	wantErr(t, "DeleteAPIKey(key-a)", s.DeleteAPIKey(ctx, "key-a"), nil)
	wantErr(t, "DeleteAPIKey(key-a) again", s.DeleteAPIKey(ctx, "key-a"), store.ErrNotFound)
	wantErr(t, "DeleteAPIKey(unknown)", s.DeleteAPIKey(ctx, "key-unknown"), store.ErrNotFound)
	_, err = s.APIKeyByHash(ctx, hash("secret-a"))
	wantErr(t, "APIKeyByHash of a deleted key", err, store.ErrNotFound)
	keys, err = s.ListAPIKeys(ctx)
	if err != nil {
		t.Fatalf("ListAPIKeys: %v", err)
	}
	if got := keyIDs(keys); !slices.Equal(got, []string{"key-admin", "key-b"}) {
		t.Errorf("ListAPIKeys after delete = %v, want [key-admin key-b]", got)
	}

	// A zero CreatedAt is set by the store.
	before := time.Now()
	if err := s.CreateAPIKey(ctx, store.APIKey{ID: "key-now", Tenant: tenantA, Hash: hash("secret-now")}); err != nil {
		t.Fatalf("CreateAPIKey without CreatedAt: %v", err)
	}
	got, err := s.APIKeyByHash(ctx, hash("secret-now"))
	if err != nil {
		t.Fatalf("APIKeyByHash(key-now): %v", err)
	}
	checkTime(t, "CreatedAt set by the store", got.CreatedAt, before, time.Now())
}

func testAPIKeyConflicts(t *testing.T, s store.Store) {
	ctx := t.Context()
	first := store.APIKey{ID: "key-1", Tenant: tenantA, Hash: hash("secret-1"), CreatedAt: time.Now()}
	if err := s.CreateAPIKey(ctx, first); err != nil {
		t.Fatalf("CreateAPIKey: %v", err)
	}
	for _, tc := range []struct {
		name string
		key  store.APIKey
		want error
	}{
		{"same ID", store.APIKey{ID: "key-1", Tenant: tenantA, Hash: hash("secret-2")}, store.ErrConflict},
		{"same ID, other tenant", store.APIKey{ID: "key-1", Tenant: tenantB, Hash: hash("secret-3")}, store.ErrConflict},
		{"same hash", store.APIKey{ID: "key-4", Tenant: tenantB, Hash: hash("secret-1")}, store.ErrConflict},
		{"new ID and hash", store.APIKey{ID: "key-5", Tenant: tenantA, Hash: hash("secret-5")}, nil},
	} {
		wantErr(t, "CreateAPIKey "+tc.name, s.CreateAPIKey(ctx, tc.key), tc.want)
	}
	// The conflicting creations changed nothing.
	got, err := s.APIKeyByHash(ctx, hash("secret-1"))
	if err != nil || got.ID != "key-1" || got.Tenant != tenantA {
		t.Errorf("APIKeyByHash(secret-1) = %+v, %v; want key-1 of %s", got, err, tenantA)
	}
	keys, err := s.ListAPIKeys(ctx)
	if err != nil {
		t.Fatalf("ListAPIKeys: %v", err)
	}
	if got := keyIDs(keys); !slices.Equal(got, []string{"key-1", "key-5"}) {
		t.Errorf("ListAPIKeys = %v, want [key-1 key-5]", got)
	}
}

func keyIDs(keys []store.APIKey) []string {
	ids := []string{}
	for _, k := range keys {
		ids = append(ids, k.ID)
	}
	return ids
}

// testAPIKeyTies: keys created at the same instant list in the order of their creation.
func testAPIKeyTies(t *testing.T, s store.Store) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, id := range []string{"key-2", "key-3", "key-1"} {
		if err := s.CreateAPIKey(t.Context(), store.APIKey{ID: id, Tenant: tenantA, Hash: hash(id), CreatedAt: at}); err != nil {
			t.Fatalf("CreateAPIKey(%s): %v", id, err)
		}
	}
	keys, err := s.ListAPIKeys(t.Context())
	if err != nil {
		t.Fatalf("ListAPIKeys: %v", err)
	}
	if got := keyIDs(keys); !slices.Equal(got, []string{"key-2", "key-3", "key-1"}) {
		t.Errorf("ListAPIKeys = %v, want the order of creation [key-2 key-3 key-1]", got)
	}
}
