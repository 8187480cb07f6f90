package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/sqlstore"
)

type appliedMigration struct {
	Version   int
	Name      string
	AppliedAt int64
}

func applied(t *testing.T, db *sql.DB) []appliedMigration {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT version, name, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []appliedMigration
	for rows.Next() {
		var m appliedMigration
		if err := rows.Scan(&m.Version, &m.Name, &m.AppliedAt); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMigrationsFreshAndReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	first := applied(t, s.reader)
	steps := schema().Steps
	if len(first) != len(steps) {
		t.Fatalf("fresh database: %d migrations applied, want %d", len(first), len(steps))
	}
	for i, m := range first {
		if m.Version != steps[i].Version || m.Name != steps[i].Name || m.AppliedAt == 0 {
			t.Errorf("migration row %d = %+v, want version %d %q with a time", i, m, steps[i].Version, steps[i].Name)
		}
	}
	for _, table := range []string{"api_keys", "vms", "sessions", "policies", "changes", "nodes", "secrets", "key_check", "ca"} {
		var n int
		if err := s.reader.QueryRowContext(t.Context(), `SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?`, table).Scan(&n); err != nil || n != 1 {
			t.Errorf("table %s: count %d, %v", table, n, err)
		}
	}
	s.Close()

	// Reopening applies nothing again.
	s = openTest(t, dir)
	if again := applied(t, s.reader); !reflect.DeepEqual(again, first) {
		t.Errorf("after reopen: %+v, want unchanged %+v", again, first)
	}
}

func TestMigrationsRefuseNewerSchema(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	future := len(schema().Steps) + 1
	if _, err := s.writer.ExecContext(t.Context(), `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'from the future', 0)`, future); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = Open(t.Context(), dir)
	if err == nil {
		s.Close()
		t.Fatal("Open of a database with a newer schema succeeded")
	}
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("error %v does not match ErrSchemaTooNew", err)
	}
	for _, part := range []string{fmt.Sprintf("schema version %d", future), fmt.Sprintf("up to %d", future-1), "newer egressd"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not say %q", err, part)
		}
	}
}

// rawDB opens a database in dir with the writer's settings but no schema.
func rawDB(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", dsn(filepath.Join(dir, FileName), false))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func tableExists(t *testing.T, db *sql.DB, name string) bool {
	t.Helper()
	var ok bool
	err := db.QueryRowContext(t.Context(), `SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?)`, name).Scan(&ok)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func schemaVersion(t *testing.T, db *sql.DB) int {
	t.Helper()
	var v int
	if err := db.QueryRowContext(t.Context(), `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// migrate runs steps with this package's dialect and migrations table.
func migrate(t *testing.T, db *sql.DB, steps ...sqlstore.Migration) error {
	now := func() time.Time { return time.Unix(1, 0) }
	return sqlstore.Migrate(t.Context(), dialect{now}, db, sqlstore.Schema{Table: schema().Table, Steps: steps}, now)
}

// TestMigrateSteps: a database at version 1 gets only the steps after it; a failing step
// leaves no trace and is retried at the next start.
func TestMigrateSteps(t *testing.T) {
	db := rawDB(t, t.TempDir())
	runs := map[string]int{}
	step := func(name string, fail bool) func(context.Context, *sql.Tx) error {
		return func(ctx context.Context, tx *sql.Tx) error {
			runs[name]++
			if _, err := tx.ExecContext(ctx, `CREATE TABLE `+name+` (x INTEGER)`); err != nil {
				return err
			}
			if fail {
				return errors.New("step failed")
			}
			return nil
		}
	}
	one := sqlstore.Migration{Version: 1, Name: "one", Up: step("one", false)}

	if err := migrate(t, db, one); err != nil {
		t.Fatal(err)
	}
	err := migrate(t, db, one, sqlstore.Migration{Version: 2, Name: "two", Up: step("two", true)})
	if err == nil || !strings.Contains(err.Error(), "version 2 (two)") {
		t.Fatalf("failing step: error %v, want one naming version 2 (two)", err)
	}
	if v := schemaVersion(t, db); v != 1 || tableExists(t, db, "two") {
		t.Errorf("after a failed step: version %d, table two exists %v; want 1, false", v, tableExists(t, db, "two"))
	}
	if err := migrate(t, db, one, sqlstore.Migration{Version: 2, Name: "two", Up: step("two", false)}); err != nil {
		t.Fatal(err)
	}
	if v := schemaVersion(t, db); v != 2 || !tableExists(t, db, "two") {
		t.Errorf("after retry: version %d, table two exists %v; want 2, true", v, tableExists(t, db, "two"))
	}
	if want := map[string]int{"one": 1, "two": 2}; !reflect.DeepEqual(runs, want) {
		t.Errorf("steps ran %v times, want %v", runs, want)
	}
}

func TestMigrateRejectsBadHistory(t *testing.T) {
	noop := sqlstore.ExecSQL(`SELECT 1`)
	for name, steps := range map[string][]sqlstore.Migration{
		"gap":          {{Version: 1, Name: "a", Up: noop}, {Version: 3, Name: "c", Up: noop}},
		"not from 1":   {{Version: 2, Name: "b", Up: noop}},
		"out of order": {{Version: 2, Name: "b", Up: noop}, {Version: 1, Name: "a", Up: noop}},
	} {
		if err := migrate(t, rawDB(t, t.TempDir()), steps...); err == nil {
			t.Errorf("%s: migrate succeeded", name)
		}
	}
}

func TestMigrationsAreNumberedFromOne(t *testing.T) {
	for i, m := range schema().Steps {
		if m.Version != i+1 || m.Name == "" || m.Up == nil {
			t.Errorf("migration %d = {%d %q}, want version %d with a name and a step", i, m.Version, m.Name, i+1)
		}
	}
}

// TestUpgradeFromVersion1: a database written by an egressd of schema version 1 opens, its
// keys take the revision of their creation from the change log (so keys created at the same
// instant still list in creation order), and it gets the nodes table.
func TestUpgradeFromVersion1(t *testing.T) {
	dir := t.TempDir()
	db := rawDB(t, dir)
	if err := migrate(t, db, schema().Steps[0]); err != nil {
		t.Fatal(err)
	}
	// What version 1 wrote for two keys created at one instant, the second one first.
	for _, stmt := range []string{
		`INSERT INTO changes (tenant, kind, id, op, at) VALUES ('t', 'vm', 'vm', 'create', 1)`,
		`INSERT INTO changes (tenant, kind, id, op, at) VALUES ('t', 'api_key', 'key-b', 'create', 2)`,
		`INSERT INTO api_keys (id, tenant, admin, hash, created_at) VALUES ('key-b', 't', 0, x'0b', 5)`,
		`INSERT INTO changes (tenant, kind, id, op, at) VALUES ('t', 'api_key', 'key-a', 'create', 3)`,
		`INSERT INTO api_keys (id, tenant, admin, hash, created_at) VALUES ('key-a', 't', 1, x'0a', 5)`,
	} {
		if _, err := db.ExecContext(t.Context(), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	db.Close()

	s := openTest(t, dir)
	if v := schemaVersion(t, s.reader); v != len(schema().Steps) {
		t.Errorf("schema version after Open = %d, want %d", v, len(schema().Steps))
	}
	keys, err := s.ListAPIKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].ID != "key-b" || keys[1].ID != "key-a" || !keys[1].Admin {
		t.Errorf("ListAPIKeys after the upgrade = %+v, want key-b then key-a (admin)", keys)
	}
	var revs []int64
	for _, id := range []string{"key-b", "key-a"} {
		var rev int64
		if err := s.reader.QueryRowContext(t.Context(), `SELECT revision FROM api_keys WHERE id = ?`, id).Scan(&rev); err != nil {
			t.Fatal(err)
		}
		revs = append(revs, rev)
	}
	if !reflect.DeepEqual(revs, []int64{2, 3}) {
		t.Errorf("the keys' revisions after the upgrade = %v, want those of their creation, [2 3]", revs)
	}
	if err := s.PutNode(t.Context(), store.Node{ID: "gw"}); err != nil {
		t.Errorf("PutNode after the upgrade: %v", err)
	}
}

// TestUpgradeFromVersion3: a database written before nodes recorded their sandbox ranges
// (version 3) opens; its nodes read back with no range and its VMs' networks with no node
// or state (live, as they were); and nodes can then record a range.
func TestUpgradeFromVersion3(t *testing.T) {
	dir := t.TempDir()
	db := rawDB(t, dir)
	if err := migrate(t, db, schema().Steps[:3]...); err != nil {
		t.Fatal(err)
	}
	legacy := store.Network{Mode: "netns", Netns: "egressd-old", Path: "/run/netns/egressd-old", Address: "100.96.0.2/30", Gateway: "100.96.0.1"}
	heartbeat := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	// What version 3 wrote.
	for _, stmt := range []string{
		`INSERT INTO changes (tenant, kind, id, op, at) VALUES ('t', 'vm', 'vm', 'create', 1)`,
		`INSERT INTO vms (tenant, id, network, revision, created_at) VALUES ('t', 'vm',
			'{"mode":"netns","netns":"egressd-old","path":"/run/netns/egressd-old","address":"100.96.0.2/30","gateway":"100.96.0.1"}', 1, 1)`,
		fmt.Sprintf(`INSERT INTO nodes (id, roles, address, labels, applied_revision, vms, heartbeat)
			VALUES ('gw-old', '["gateway"]', '198.51.100.7:8470', '{"zone":"a"}', 1, 1, %d)`, heartbeat.UnixNano()),
	} {
		if _, err := db.ExecContext(t.Context(), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	db.Close()

	s := openTest(t, dir)
	if v := schemaVersion(t, s.reader); v != len(schema().Steps) {
		t.Errorf("schema version after Open = %d, want %d", v, len(schema().Steps))
	}
	nodes, err := s.ListNodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := store.Node{ID: "gw-old", Roles: []string{"gateway"}, Address: "198.51.100.7:8470",
		Labels: map[string]string{"zone": "a"}, Revision: 1, VMs: 1, Heartbeat: heartbeat}
	if len(nodes) != 1 || !reflect.DeepEqual(nodes[0], want) {
		t.Errorf("ListNodes after the upgrade = %#v, want [%#v] (no sandbox range)", nodes, want)
	}
	vm, err := s.GetVM(t.Context(), "t", "vm")
	if err != nil || vm.Network != legacy || !vm.Network.Live() {
		t.Errorf("GetVM after the upgrade = %+v, %v; want the live network %+v", vm, err, legacy)
	}

	want.SandboxCIDR = "100.96.0.0/20"
	if err := s.PutNode(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	if nodes, err := s.ListNodes(t.Context()); err != nil || len(nodes) != 1 || nodes[0].SandboxCIDR != want.SandboxCIDR {
		t.Errorf("ListNodes after a PutNode with a range = %+v, %v; want range %s", nodes, err, want.SandboxCIDR)
	}
}
