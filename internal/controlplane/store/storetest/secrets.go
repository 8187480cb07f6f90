package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
)

func mustSecret(t *testing.T, s store.Store, tenant, name string, domains ...string) store.Secret {
	t.Helper()
	se, err := s.CreateSecret(t.Context(), store.Secret{
		Tenant: tenant, Name: name, Domains: domains,
		Placeholder: "egressd-secret-" + name + "-" + tenant, Sealed: []byte("sealed " + tenant + "/" + name),
	})
	if err != nil {
		t.Fatalf("CreateSecret(%s, %s): %v", tenant, name, err)
	}
	return se
}

func secretNames(list []store.Secret) []string {
	out := []string{}
	for _, se := range list {
		out = append(out, se.Tenant+"/"+se.Name)
	}
	return out
}

func testSecrets(t *testing.T, s store.Store) {
	ctx := t.Context()
	if list, err := s.ListSecrets(ctx, tenantA); err != nil || list == nil || len(list) != 0 {
		t.Fatalf("ListSecrets on an empty store = %#v, %v; want an empty list", list, err)
	}
	before := time.Now()
	want := store.Secret{
		Tenant: tenantA, Name: "openai", Domains: []string{"*.openai.test", "api.openai.test"},
		Placeholder: "egressd-secret-openai-aaaa", Sealed: []byte{0, 1, 2, 0xff},
	}
	got, err := s.CreateSecret(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	checkTime(t, "CreatedAt", got.CreatedAt, before, time.Now())
	if got.UpdatedAt != got.CreatedAt || got.Revision == 0 || got.Revision != mustRevision(t, s) {
		t.Errorf("created %+v: want UpdatedAt = CreatedAt and the store's newest revision %d", got, mustRevision(t, s))
	}
	want.Revision, want.CreatedAt, want.UpdatedAt = got.Revision, got.CreatedAt, got.UpdatedAt
	if !reflect.DeepEqual(got, want) {
		t.Errorf("CreateSecret = %+v, want %+v", got, want)
	}
	read, err := s.GetSecret(ctx, tenantA, "openai")
	if err != nil || !reflect.DeepEqual(read, want) {
		t.Errorf("GetSecret = %+v, %v; want %+v", read, err, want)
	}

	// Listed by name, whatever the order of creation.
	mustSecret(t, s, tenantA, "zeta", "z.test")
	mustSecret(t, s, tenantA, "Alpha", "a.test")
	mustSecret(t, s, tenantA, "beta", "b.test")
	list, err := s.ListSecrets(ctx, tenantA)
	if err != nil {
		t.Fatal(err)
	}
	if names := secretNames(list); !slices.Equal(names, []string{tenantA + "/Alpha", tenantA + "/beta", tenantA + "/openai", tenantA + "/zeta"}) {
		t.Errorf("ListSecrets = %v, want byte order of names", names)
	}
	if !reflect.DeepEqual(list[2], want) {
		t.Errorf("listed %+v, want %+v", list[2], want)
	}

	// A secret without domains reads back with an empty list, not nil.
	if se, err := s.CreateSecret(ctx, store.Secret{Tenant: tenantA, Name: "nodomains", Placeholder: "p-none", Sealed: []byte("x")}); err != nil {
		t.Fatal(err)
	} else if got, _ := s.GetSecret(ctx, tenantA, se.Name); got.Domains == nil || len(got.Domains) != 0 {
		t.Errorf("Domains = %#v, want []", got.Domains)
	}

	wantErr(t, "DeleteSecret", s.DeleteSecret(ctx, tenantA, "openai"), nil)
	wantErr(t, "DeleteSecret again", s.DeleteSecret(ctx, tenantA, "openai"), store.ErrNotFound)
	_, err = s.GetSecret(ctx, tenantA, "openai")
	wantErr(t, "GetSecret of a deleted secret", err, store.ErrNotFound)
	// The name may be used again, with a new placeholder.
	again, err := s.CreateSecret(ctx, store.Secret{Tenant: tenantA, Name: "openai", Placeholder: "p-again", Sealed: []byte("y")})
	if err != nil || again.Revision <= want.Revision {
		t.Errorf("CreateSecret of a deleted name: %+v, %v", again, err)
	}
}

func testSecretConflicts(t *testing.T, s store.Store) {
	ctx := t.Context()
	first := mustSecret(t, s, tenantA, "key", "a.test")
	rev := mustRevision(t, s)
	for _, tc := range []struct {
		name string
		se   store.Secret
		want error
	}{
		{"same tenant and name", store.Secret{Tenant: tenantA, Name: "key", Placeholder: "p-2", Sealed: []byte("x")}, store.ErrConflict},
		{"same placeholder, other tenant", store.Secret{Tenant: tenantB, Name: "other", Placeholder: first.Placeholder, Sealed: []byte("x")}, store.ErrConflict},
		{"same name, other tenant", store.Secret{Tenant: tenantB, Name: "key", Placeholder: "p-3", Sealed: []byte("x")}, nil},
	} {
		_, err := s.CreateSecret(ctx, tc.se)
		wantErr(t, "CreateSecret "+tc.name, err, tc.want)
	}
	got, err := s.GetSecret(ctx, tenantA, "key")
	if err != nil || !bytes.Equal(got.Sealed, first.Sealed) || got.Placeholder != first.Placeholder {
		t.Errorf("after the conflicts: %+v, %v; want it unchanged", got, err)
	}
	// The refused creations logged nothing; the accepted one logged one change.
	if changes := mustChanges(t, s, rev, tenantB); !slices.Equal(changes, []string{"secret create key"}) {
		t.Errorf("changes = %v, want [secret create key]", changes)
	}
}

// testSecretTenantIsolation: another tenant's secret is ErrNotFound for every call, as if it
// did not exist, and is neither listed nor changed.
func testSecretTenantIsolation(t *testing.T, s store.Store) {
	ctx := t.Context()
	theirs := mustSecret(t, s, tenantB, "shared-name", "b.test")
	mustSecret(t, s, tenantA, "mine", "a.test")

	_, err := s.GetSecret(ctx, tenantA, "shared-name")
	wantErr(t, "GetSecret of another tenant's secret", err, store.ErrNotFound)
	called := false
	_, err = s.UpdateSecret(ctx, tenantA, "shared-name", func(se store.Secret) (store.Secret, error) {
		called = true
		se.Sealed = []byte("stolen")
		return se, nil
	})
	wantErr(t, "UpdateSecret of another tenant's secret", err, store.ErrNotFound)
	if called {
		t.Error("UpdateSecret showed another tenant's secret to update")
	}
	wantErr(t, "DeleteSecret of another tenant's secret", s.DeleteSecret(ctx, tenantA, "shared-name"), store.ErrNotFound)
	list, err := s.ListSecrets(ctx, tenantA)
	if err != nil || !slices.Equal(secretNames(list), []string{tenantA + "/mine"}) {
		t.Errorf("ListSecrets(%s) = %v, %v; want only its own", tenantA, secretNames(list), err)
	}
	got, err := s.GetSecret(ctx, tenantB, "shared-name")
	if err != nil || !reflect.DeepEqual(got, theirs) {
		t.Errorf("the other tenant's secret changed: %+v, %v", got, err)
	}
}

func testUpdateSecret(t *testing.T, s store.Store) {
	ctx := t.Context()
	orig := mustSecret(t, s, tenantA, "api", "a.test")
	rev := mustRevision(t, s)
	before := time.Now()
	got, err := s.UpdateSecret(ctx, tenantA, "api", func(se store.Secret) (store.Secret, error) {
		if !reflect.DeepEqual(se, orig) {
			t.Errorf("update saw %+v, want %+v", se, orig)
		}
		// Only Domains and Sealed are taken; the rest is the stored secret's.
		return store.Secret{Tenant: tenantB, Name: "renamed", Placeholder: "changed", Domains: []string{"b.test", "*.c.test"},
			Sealed: []byte("rotated"), CreatedAt: time.Unix(1, 0)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkTime(t, "UpdatedAt", got.UpdatedAt, before, time.Now())
	want := orig
	want.Domains, want.Sealed, want.Revision, want.UpdatedAt = []string{"b.test", "*.c.test"}, []byte("rotated"), got.Revision, got.UpdatedAt
	if !reflect.DeepEqual(got, want) || got.Revision <= rev {
		t.Errorf("UpdateSecret = %+v, want %+v with a new revision", got, want)
	}
	if read, err := s.GetSecret(ctx, tenantA, "api"); err != nil || !reflect.DeepEqual(read, want) {
		t.Errorf("GetSecret after update = %+v, %v; want %+v", read, err, want)
	}
	if changes := mustChanges(t, s, rev, tenantA); !slices.Equal(changes, []string{"secret replace api"}) {
		t.Errorf("changes = %v, want [secret replace api]", changes)
	}

	// A refusal changes nothing and logs nothing.
	rev = mustRevision(t, s)
	refuse := errors.New("refused")
	_, err = s.UpdateSecret(ctx, tenantA, "api", func(se store.Secret) (store.Secret, error) {
		se.Sealed = []byte("never")
		return se, refuse
	})
	wantErr(t, "a refused update", err, refuse)
	if read, _ := s.GetSecret(ctx, tenantA, "api"); !reflect.DeepEqual(read, want) {
		t.Errorf("a refused update changed the secret: %+v", read)
	}
	if changes := mustChanges(t, s, rev, tenantA); len(changes) != 0 {
		t.Errorf("a refused update logged %v", changes)
	}
	_, err = s.UpdateSecret(ctx, tenantA, "missing", func(se store.Secret) (store.Secret, error) { return se, nil })
	wantErr(t, "UpdateSecret of a missing secret", err, store.ErrNotFound)
}

// testUpdateSecretConcurrent: updates of one secret run one at a time, each on what the one
// before wrote, so that none is lost.
func testUpdateSecretConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustSecret(t, s, tenantA, "counter")
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, err := s.UpdateSecret(ctx, tenantA, "counter", func(se store.Secret) (store.Secret, error) {
				se.Domains = append(se.Domains, fmt.Sprintf("h%d.test", i))
				return se, nil
			})
			if err != nil {
				t.Errorf("UpdateSecret %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	got, err := s.GetSecret(ctx, tenantA, "counter")
	if err != nil || len(got.Domains) != n {
		t.Errorf("after %d concurrent updates: %d domains, %v", n, len(got.Domains), err)
	}
}

// testAllSecrets: the gateway's listing spans tenants, and its changes are in the log.
func testAllSecrets(t *testing.T, s store.Store) {
	ctx := t.Context()
	start := mustRevision(t, s)
	mustSecret(t, s, tenantB, "b1", "b.test")
	mustSecret(t, s, tenantA, "a2", "a.test")
	mustSecret(t, s, tenantA, "a1", "a.test")
	wantErr(t, "DeleteSecret", s.DeleteSecret(ctx, tenantA, "a2"), nil)
	all, err := s.AllSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if names := secretNames(all); !slices.Equal(names, []string{tenantA + "/a1", tenantB + "/b1"}) {
		t.Errorf("AllSecrets = %v, want [%s/a1 %s/b1]", names, tenantA, tenantB)
	}
	changes, err := s.ChangesSince(ctx, start, store.MaxChanges)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range changes {
		got = append(got, c.Tenant+" "+c.Kind+" "+c.Op+" "+c.ID)
	}
	want := []string{
		tenantB + " secret create b1", tenantA + " secret create a2", tenantA + " secret create a1", tenantA + " secret delete a2",
	}
	if !slices.Equal(got, want) {
		t.Errorf("changes = %v, want %v", got, want)
	}
}

// testKeyCheck: the first check value stays; later ones read it back.
func testKeyCheck(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.KeyCheck(ctx)
	wantErr(t, "KeyCheck of a new store", err, store.ErrNotFound)
	rev := mustRevision(t, s)
	got, err := s.InitKeyCheck(ctx, []byte("first"))
	if err != nil || string(got) != "first" {
		t.Fatalf("InitKeyCheck(first) = %q, %v", got, err)
	}
	got, err = s.InitKeyCheck(ctx, []byte("second"))
	if err != nil || string(got) != "first" {
		t.Errorf("InitKeyCheck(second) = %q, %v; want the first", got, err)
	}
	if got, err := s.KeyCheck(ctx); err != nil || string(got) != "first" {
		t.Errorf("KeyCheck = %q, %v; want first", got, err)
	}
	if mustRevision(t, s) != rev {
		t.Error("the key check took a revision")
	}
}

// testCA: the first CA stays, also when nodes store theirs at once: every one of them gets
// the one that won.
func testCA(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.GetCA(ctx)
	wantErr(t, "GetCA of a new store", err, store.ErrNotFound)
	rev := mustRevision(t, s)
	const n = 8
	got := make([]store.CA, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var err error
			got[i], err = s.InitCA(ctx, store.CA{CertDER: fmt.Appendf(nil, "cert %d", i), SealedKey: fmt.Appendf(nil, "key %d", i)})
			if err != nil {
				t.Errorf("InitCA %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	for i := range got {
		if !reflect.DeepEqual(got[i], got[0]) {
			t.Errorf("InitCA %d got %+v, InitCA 0 got %+v: want one CA for all", i, got[i], got[0])
		}
	}
	if !bytes.HasPrefix(got[0].CertDER, []byte("cert ")) || got[0].CreatedAt.IsZero() {
		t.Errorf("stored CA %+v", got[0])
	}
	// The key is the certificate's: they were stored together.
	if string(got[0].SealedKey[4:]) != string(got[0].CertDER[5:]) {
		t.Errorf("the stored key %q is not the stored certificate's %q", got[0].SealedKey, got[0].CertDER)
	}
	read, err := s.GetCA(ctx)
	if err != nil || !reflect.DeepEqual(read, got[0]) {
		t.Errorf("GetCA = %+v, %v; want %+v", read, err, got[0])
	}
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	if again, err := s.InitCA(ctx, store.CA{CertDER: []byte("late"), SealedKey: []byte("late"), CreatedAt: at}); err != nil || !reflect.DeepEqual(again, got[0]) {
		t.Errorf("a later InitCA = %+v, %v; want the first CA", again, err)
	}
	if mustRevision(t, s) != rev {
		t.Error("the CA took a revision")
	}
}
