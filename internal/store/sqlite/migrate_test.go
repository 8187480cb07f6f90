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
	steps := migrations()
	if len(first) != len(steps) {
		t.Fatalf("fresh database: %d migrations applied, want %d", len(first), len(steps))
	}
	for i, m := range first {
		if m.Version != steps[i].version || m.Name != steps[i].name || m.AppliedAt == 0 {
			t.Errorf("migration row %d = %+v, want version %d %q with a time", i, m, steps[i].version, steps[i].name)
		}
	}
	for _, table := range []string{"api_keys", "vms", "sessions", "policies", "changes"} {
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
	future := len(migrations()) + 1
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

// rawDB opens a database with the writer's settings but no schema.
func rawDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", dsn(filepath.Join(t.TempDir(), FileName), false))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func tableExists(t *testing.T, db *sql.DB, name string) bool {
	t.Helper()
	ok, err := exists(t.Context(), db, `SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?)`, name)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestMigrateSteps: a database at version 1 gets only the steps after it; a failing step
// leaves no trace and is retried at the next start.
func TestMigrateSteps(t *testing.T) {
	ctx := t.Context()
	db := rawDB(t)
	now := func() time.Time { return time.Unix(1, 0) }
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
	one := migration{1, "one", step("one", false)}

	if err := migrate(ctx, db, []migration{one}, now); err != nil {
		t.Fatal(err)
	}
	err := migrate(ctx, db, []migration{one, {2, "two", step("two", true)}}, now)
	if err == nil || !strings.Contains(err.Error(), "version 2 (two)") {
		t.Fatalf("failing step: error %v, want one naming version 2 (two)", err)
	}
	if v, _ := schemaVersion(ctx, db); v != 1 || tableExists(t, db, "two") {
		t.Errorf("after a failed step: version %d, table two exists %v; want 1, false", v, tableExists(t, db, "two"))
	}
	if err := migrate(ctx, db, []migration{one, {2, "two", step("two", false)}}, now); err != nil {
		t.Fatal(err)
	}
	if v, _ := schemaVersion(ctx, db); v != 2 || !tableExists(t, db, "two") {
		t.Errorf("after retry: version %d, table two exists %v; want 2, true", v, tableExists(t, db, "two"))
	}
	if want := map[string]int{"one": 1, "two": 2}; !reflect.DeepEqual(runs, want) {
		t.Errorf("steps ran %v times, want %v", runs, want)
	}
}

func TestMigrateRejectsBadHistory(t *testing.T) {
	noop := execSQL(`SELECT 1`)
	for name, steps := range map[string][]migration{
		"gap":          {{1, "a", noop}, {3, "c", noop}},
		"not from 1":   {{2, "b", noop}},
		"out of order": {{2, "b", noop}, {1, "a", noop}},
	} {
		if err := migrate(t.Context(), rawDB(t), steps, time.Now); err == nil {
			t.Errorf("%s: migrate succeeded", name)
		}
	}
}

func TestMigrationsAreNumberedFromOne(t *testing.T) {
	for i, m := range migrations() {
		if m.version != i+1 || m.name == "" || m.up == nil {
			t.Errorf("migration %d = {%d %q}, want version %d with a name and a step", i, m.version, m.name, i+1)
		}
	}
}
