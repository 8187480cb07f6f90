package sqlite

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/storetest"
	"github.com/egressd/egressd/policy"
)

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTest(t, t.TempDir()) })
}

// openTest opens a store in dir and closes it when the test ends.
func openTest(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(t.Context(), dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func sum(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "egressd")
	s := openTest(t, dir)
	if _, err := s.CreateVM(t.Context(), store.VM{Tenant: "t", ID: "vm"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want os.FileMode
	}{
		{dir, 0o700 | os.ModeDir},
		{filepath.Join(dir, FileName), 0o600},
		{filepath.Join(dir, FileName+"-wal"), 0o600}, // SQLite copies the database's mode
	} {
		fi, err := os.Stat(tc.path)
		if err != nil {
			t.Errorf("stat: %v", err)
			continue
		}
		if fi.Mode() != tc.want {
			t.Errorf("%s: mode %v, want %v", tc.path, fi.Mode(), tc.want)
		}
	}
}

func TestOpenPathNeedsEscaping(t *testing.T) {
	// Characters that mean something in a URI must reach the file system as they are.
	dir := filepath.Join(t.TempDir(), "a dir?with#odd%chars")
	s := openTest(t, dir)
	if _, err := s.CreateVM(t.Context(), store.VM{Tenant: "t", ID: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
		t.Errorf("database not where it should be: %v", err)
	}
}

func TestOpenSettings(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := t.Context()
	for _, tc := range []struct {
		pool   string
		pragma string
		want   string
	}{
		{"writer", "journal_mode", "wal"},
		{"writer", "synchronous", "2"}, // FULL
		{"writer", "foreign_keys", "1"},
		{"writer", "busy_timeout", "10000"},
		{"reader", "query_only", "1"},
		{"reader", "busy_timeout", "10000"},
	} {
		db := s.writer
		if tc.pool == "reader" {
			db = s.reader
		}
		var got string
		if err := db.QueryRowContext(ctx, "PRAGMA "+tc.pragma).Scan(&got); err != nil {
			t.Errorf("%s: PRAGMA %s: %v", tc.pool, tc.pragma, err)
		} else if got != tc.want {
			t.Errorf("%s: PRAGMA %s = %s, want %s", tc.pool, tc.pragma, got, tc.want)
		}
	}
	if _, err := s.reader.ExecContext(ctx, `DELETE FROM vms`); err == nil {
		t.Error("a write through the read pool succeeded")
	}
}

func TestOpenNotADatabase(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte(strings.Repeat("not a database\n", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), dir)
	if err == nil {
		s.Close()
		t.Fatal("Open of a file that is not a database succeeded")
	}
	if !strings.Contains(err.Error(), FileName) {
		t.Errorf("error %q does not name the file", err)
	}
}

func TestOpenNoDir(t *testing.T) {
	if _, err := Open(t.Context(), ""); err == nil {
		t.Error(`Open("") succeeded`)
	}
}

// TestPersistence: everything written before Close is there after Open, and revisions go on
// from where they were.
func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	s, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	key := store.APIKey{ID: "key", Tenant: "t", Admin: true, Hash: sum("secret")}
	if err := s.CreateAPIKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	vm, err := s.CreateVM(ctx, store.VM{Tenant: "t", ID: "vm", Network: store.Network{Mode: "netns", Netns: "n", Path: "/run/netns/n"}})
	if err != nil {
		t.Fatal(err)
	}
	se, err := s.CreateSession(ctx, store.Session{Tenant: "t", ID: "se", VMID: "vm", TokenHash: sum("token")})
	if err != nil {
		t.Fatal(err)
	}
	p := policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"example.com"}, AllowedCIDRs: []string{}, DeniedDomains: []string{}, Mode: policy.Enforce}
	rec, err := s.PutPolicy(ctx, store.PolicyRecord{Tenant: "t", Scope: store.ScopeSession, ID: "se", Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	s = openTest(t, dir)
	if got, err := s.APIKeyByHash(ctx, key.Hash); err != nil || got.ID != key.ID || !got.Admin {
		t.Errorf("APIKeyByHash after reopen = %+v, %v", got, err)
	}
	if got, err := s.GetVM(ctx, "t", "vm"); err != nil || !reflect.DeepEqual(got, vm) {
		t.Errorf("GetVM after reopen = %+v, %v; want %+v", got, err, vm)
	}
	if got, err := s.GetSession(ctx, "t", "se"); err != nil || !reflect.DeepEqual(got, se) {
		t.Errorf("GetSession after reopen = %+v, %v; want %+v", got, err, se)
	}
	if got, err := s.GetPolicy(ctx, "t", store.ScopeSession, "se"); err != nil || !reflect.DeepEqual(got, rec) {
		t.Errorf("GetPolicy after reopen = %+v, %v; want %+v", got, err, rec)
	}
	if got, err := s.Revision(ctx); err != nil || got != rev {
		t.Errorf("Revision after reopen = %d, %v; want %d", got, err, rev)
	}
	next, err := s.CreateVM(ctx, store.VM{Tenant: "t", ID: "vm-2"})
	if err != nil || next.Revision != rev+1 {
		t.Errorf("CreateVM after reopen: revision %d, %v; want %d", next.Revision, err, rev+1)
	}
}

// TestChangesSince: the log names every object that every mutation touched, cascades
// included, in revision order, and pages by revision.
func TestChangesSince(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := t.Context()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	put := func(scope store.Scope, id string) {
		t.Helper()
		_, err := s.PutPolicy(ctx, store.PolicyRecord{Tenant: "t", Scope: scope, ID: id, Policy: policy.Policy{}})
		must(err)
	}
	must(s.CreateAPIKey(ctx, store.APIKey{ID: "key", Tenant: "t", Hash: sum("k")}))
	_, err := s.CreateVM(ctx, store.VM{Tenant: "t", ID: "vm"})
	must(err)
	for _, id := range []string{"se-2", "se-1", "se-3"} {
		_, err := s.CreateSession(ctx, store.Session{Tenant: "t", ID: id, VMID: "vm", TokenHash: sum(id)})
		must(err)
	}
	put(store.ScopeVM, "vm")
	put(store.ScopeVM, "vm")
	put(store.ScopeSession, "se-1")
	put(store.ScopeSession, "se-2")
	must(s.DeleteSession(ctx, "t", "se-3"))
	must(s.DeleteSession(ctx, "t", "se-2"))
	must(s.DeleteVM(ctx, "t", "vm"))
	must(s.DeleteAPIKey(ctx, "key"))

	want := []string{
		"api_key key create",
		"vm vm create",
		"session se-2 create",
		"session se-1 create",
		"session se-3 create",
		"vm_policy vm create",
		"vm_policy vm replace",
		"session_policy se-1 create",
		"session_policy se-2 create",
		"session se-3 delete", // no policy: one change
		"session_policy se-2 delete",
		"session se-2 delete",
		"session_policy se-1 delete", // DeleteVM: session policies, sessions, VM policy, VM
		"session se-1 delete",
		"vm_policy vm delete",
		"vm vm delete",
		"api_key key delete",
	}
	all, err := s.ChangesSince(ctx, 0, MaxChanges)
	must(err)
	var got []string
	for i, c := range all {
		got = append(got, c.Kind+" "+c.ID+" "+c.Op)
		if c.Revision != int64(i+1) || c.Tenant != "t" || c.At.IsZero() {
			t.Errorf("change %d = %+v, want revision %d, tenant t, a time", i, c, i+1)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ChangesSince(0) =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if rev, err := s.Revision(ctx); err != nil || rev != int64(len(want)) {
		t.Errorf("Revision = %d, %v; want %d", rev, err, len(want))
	}

	// Paging: ask for 5 at a time from where the last page ended.
	var paged []store.Change
	for since := int64(0); ; {
		page, err := s.ChangesSince(ctx, since, 5)
		must(err)
		paged = append(paged, page...)
		if len(page) < 5 {
			break
		}
		since = page[len(page)-1].Revision
	}
	if !reflect.DeepEqual(paged, all) {
		t.Errorf("paged changes differ from one read:\n%+v\n%+v", paged, all)
	}
	for _, limit := range []int{0, -1, MaxChanges + 1} {
		if _, err := s.ChangesSince(ctx, 0, limit); err == nil {
			t.Errorf("ChangesSince with limit %d succeeded", limit)
		}
	}
}

// TestErrorsWrapped: errors carry the package's context and still match the store's errors.
func TestErrorsWrapped(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := t.Context()
	if _, err := s.CreateVM(ctx, store.VM{Tenant: "t", ID: "vm"}); err != nil {
		t.Fatal(err)
	}
	_, conflict := s.CreateVM(ctx, store.VM{Tenant: "t", ID: "vm"})
	_, notFound := s.GetVM(ctx, "t", "missing")
	noPolicy := s.DeletePolicy(ctx, "t", store.ScopeVM, "vm")
	canceledCtx, cancel := context.WithCancel(ctx)
	cancel()
	_, canceled := s.CreateVM(canceledCtx, store.VM{Tenant: "t", ID: "vm-2"})
	for _, tc := range []struct {
		err    error
		is     error
		prefix string
	}{
		{conflict, store.ErrConflict, "sqlite: create vm: "},
		{notFound, store.ErrNotFound, "sqlite: get vm "},
		{noPolicy, store.ErrNoPolicy, "sqlite: delete policy: "},
		{canceled, context.Canceled, "sqlite: create vm: "},
	} {
		if !errors.Is(tc.err, tc.is) || !strings.HasPrefix(tc.err.Error(), tc.prefix) {
			t.Errorf("error %q: want prefix %q and to match %v", tc.err, tc.prefix, tc.is)
		}
	}
}

// TestStoredPolicyWithUnknownField: a policy written by a newer egressd, with a field this one
// does not know, is an error on read rather than a policy with a restriction missing.
func TestStoredPolicyWithUnknownField(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := t.Context()
	if _, err := s.CreateVM(ctx, store.VM{Tenant: "t", ID: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutPolicy(ctx, store.PolicyRecord{Tenant: "t", Scope: store.ScopeVM, ID: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.writer.ExecContext(ctx, `UPDATE policies SET policy = '{"allow_https": true, "denied_ports": [22]}'`); err != nil {
		t.Fatal(err)
	}
	_, err := s.GetPolicy(ctx, "t", store.ScopeVM, "vm")
	if err == nil || errors.Is(err, store.ErrNoPolicy) || errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetPolicy of a policy with an unknown field: %v, want a decoding error", err)
	}
}

func TestSecondOpenRefused(t *testing.T) {
	dir := t.TempDir()
	first, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), dir); err == nil || !strings.Contains(err.Error(), "in use by another egressd") {
		t.Fatalf("second Open on a directory in use: %v", err)
	}
	// Closing releases it.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	again.Close()
}
