package postgres

import (
	"context"
	"crypto/sha256"
	"errors"
	neturl "net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
	"github.com/egressd/egressd/internal/controlplane/store/storetest"
)

// TestStore runs the conformance suite that the embedded store passes too, each subtest on
// a database of its own.
func TestStore(t *testing.T) {
	t.Parallel()
	pgtest.Require(t)
	storetest.Run(t, func(t *testing.T) store.Store { return openTest(t, pgtest.NewDatabase(t)) })
}

// openTest opens a store on url and closes it when the test ends.
func openTest(t testing.TB, url string) *Store {
	t.Helper()
	s, err := Open(context.Background(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openWithVM opens a store on a new database with one VM, t/vm; it returns the database's
// URL too.
func openWithVM(t *testing.T) (*Store, string) {
	t.Helper()
	url := pgtest.NewDatabase(t)
	s := openTest(t, url)
	if _, err := s.CreateVM(t.Context(), store.VM{Tenant: "t", ID: "vm"}); err != nil {
		t.Fatal(err)
	}
	return s, url
}

// connect opens a plain connection to url, for looking behind the store's back.
func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// withParams adds query parameters (name, value, ...) to a URL.
func withParams(t testing.TB, raw string, kv ...string) string {
	t.Helper()
	u, err := neturl.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func sum(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// TestOpenSettings: every connection has the settings the store relies on, unless the URL
// asks for its own.
func TestOpenSettings(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	for _, tc := range []struct {
		name   string
		params []string // name, value, ... added to the URL
		want   map[string]string
	}{
		{"defaults", nil, map[string]string{
			"synchronous_commit":    "on", // an acknowledged write is flushed
			"application_name":      "egressd",
			"TimeZone":              "UTC",
			"transaction_isolation": "read committed",
		}},
		{"the URL's", []string{"synchronous_commit", "remote_apply", "application_name", "gw-7"}, map[string]string{
			"synchronous_commit": "remote_apply",
			"application_name":   "gw-7",
		}},
	} {
		s := openTest(t, withParams(t, url, tc.params...))
		for name, want := range tc.want {
			var got string
			if err := s.db.QueryRowContext(t.Context(), "SELECT current_setting($1)", name).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("%s: %s = %q, want %q", tc.name, name, got, want)
			}
		}
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name, url, want string
	}{
		{"not a URL", "postgres://%zz", "postgres: open"},
		// Nothing listens on port 1; the password must not be in the message.
		{"no server", "postgres://u:s3cret@127.0.0.1:1/db?sslmode=disable&connect_timeout=2", "127.0.0.1"},
	} {
		_, err := Open(ctx, tc.url)
		if err == nil {
			t.Errorf("%s: Open succeeded", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: Open error %q, want it to mention %q and not the password", tc.name, err, tc.want)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:pw@db:5432/egressd":              "postgres://u:xxxxx@db:5432/egressd",
		"postgres://db/egressd?password=pw&sslmode=on": "postgres://db/egressd?password=xxxxx&sslmode=on",
		"host=db password=pw":                          "(connection string)",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestTimestampsAreMicroseconds: what a mutation returns equals what a read gives back,
// although the clock has nanoseconds and PostgreSQL keeps microseconds.
func TestTimestampsAreMicroseconds(t *testing.T) {
	t.Parallel()
	clock := func() time.Time { return time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.FixedZone("X", 3600)) }
	s, err := open(t.Context(), pgtest.NewDatabase(t), clock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	vm, err := s.CreateVM(t.Context(), store.VM{Tenant: "t", ID: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2031, 5, 6, 6, 8, 9, 123456000, time.UTC)
	if !vm.CreatedAt.Equal(want) || vm.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt = %v, want %v", vm.CreatedAt, want)
	}
	got, err := s.GetVM(t.Context(), "t", "vm")
	if err != nil || got != vm {
		t.Errorf("GetVM = %+v, %v; want exactly %+v", got, err, vm)
	}
}

// TestFailedWriteLeavesNothing: a write that fails (here on a conflict) commits neither
// rows nor a change, and sends no notification; the next write works.
func TestFailedWriteLeavesNothing(t *testing.T) {
	t.Parallel()
	s, _ := openWithVM(t)
	ctx := t.Context()
	before := mustRevision(t, s)
	if _, err := s.CreateVM(ctx, store.VM{Tenant: "t", ID: "vm"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CreateVM twice: %v, want ErrConflict", err)
	}
	if rev := mustRevision(t, s); rev != before {
		t.Errorf("Revision after a failed write = %d, want %d", rev, before)
	}
	changes, err := s.ChangesSince(ctx, before, 10)
	if err != nil || len(changes) != 0 {
		t.Errorf("ChangesSince after a failed write = %+v, %v; want none", changes, err)
	}
	if _, err := s.CreateVM(ctx, store.VM{Tenant: "t", ID: "vm-2"}); err != nil {
		t.Errorf("CreateVM after a failed write: %v", err)
	}
}

// TestStrictPolicyDecoding: a stored policy with a field this binary does not know is an
// error, never a policy with the field ignored.
func TestStrictPolicyDecoding(t *testing.T) {
	t.Parallel()
	s, url := openWithVM(t)
	ctx := t.Context()
	c := connect(t, url)
	if _, err := c.Exec(ctx, `INSERT INTO policies (tenant, scope, id, policy, revision, updated_at)
		VALUES ('t', 'vm', 'vm', '{"allow_https": true, "deny_everything_else": true}', 99, now())`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPolicy(ctx, "t", store.ScopeVM, "vm"); err == nil || !strings.Contains(err.Error(), "deny_everything_else") {
		t.Errorf("GetPolicy of a policy with an unknown field: %v, want a decoding error", err)
	}
}

func mustRevision(t *testing.T, s *Store) int64 {
	t.Helper()
	rev, err := s.Revision(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// TestHeartbeatIsTheServersClock: a heartbeat is stamped by the database server's clock,
// whatever the clock of the process that sends it says, so that the nodes of a fleet judge
// each other by one clock.
func TestHeartbeatIsTheServersClock(t *testing.T) {
	t.Parallel()
	wrong := func() time.Time { return time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC) }
	s, err := open(t.Context(), pgtest.NewDatabase(t), wrong)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	before, err := s.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutNode(ctx, store.Node{ID: "gw"}); err != nil {
		t.Fatal(err)
	}
	after, err := s.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := s.ListNodes(ctx)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("ListNodes = %+v, %v; want the node", nodes, err)
	}
	if hb := nodes[0].Heartbeat; hb.Before(before) || hb.After(after) || hb.Location() != time.UTC {
		t.Errorf("Heartbeat = %v, want the server's time, between %v and %v (the process's clock says %v)", hb, before, after, wrong())
	}
	if off := time.Since(before).Abs(); off > time.Minute {
		t.Errorf("Now = %v, %v from this machine's clock: it is not the server's", before, off)
	}
}
