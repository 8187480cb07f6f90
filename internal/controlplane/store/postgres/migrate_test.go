package postgres

import (
	"context"
	"database/sql"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
	"github.com/egressd/egressd/internal/controlplane/store/sqlstore"
)

type appliedMigration struct {
	Version   int
	Name      string
	AppliedAt time.Time
}

func applied(t *testing.T, c *pgx.Conn) []appliedMigration {
	t.Helper()
	rows, err := c.Query(t.Context(), `SELECT version, name, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[appliedMigration])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMigrationsFreshAndReopen(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	s := openTest(t, url)
	c := connect(t, url)
	first := applied(t, c)
	steps := schema().Steps
	if len(first) != len(steps) {
		t.Fatalf("fresh database: %d migrations applied, want %d", len(first), len(steps))
	}
	for i, m := range first {
		if m.Version != steps[i].Version || m.Name != steps[i].Name || m.AppliedAt.IsZero() {
			t.Errorf("migration row %d = %+v, want version %d %q with a time", i, m, steps[i].Version, steps[i].Name)
		}
	}
	for _, table := range []string{"api_keys", "vms", "sessions", "policies", "changes", "nodes", "secrets", "key_check", "ca"} {
		var ok bool
		if err := c.QueryRow(t.Context(), `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&ok); err != nil || !ok {
			t.Errorf("table %s missing (%v)", table, err)
		}
	}
	s.Close()

	// Reopening an up-to-date database changes nothing.
	openTest(t, url).Close()
	if again := applied(t, c); !reflect.DeepEqual(again, first) {
		t.Errorf("after reopening: %+v, want %+v", again, first)
	}
}

// TestMigrationsRefuseNewerSchema: a database that a newer egressd migrated is refused, and
// left as it was.
func TestMigrationsRefuseNewerSchema(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	openTest(t, url).Close()
	c := connect(t, url)
	next := len(schema().Steps) + 1
	if _, err := c.Exec(t.Context(), `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'from the future', now())`, next); err != nil {
		t.Fatal(err)
	}
	before := applied(t, c)
	s, err := Open(t.Context(), url)
	if err == nil {
		s.Close()
		t.Fatal("Open of a newer schema succeeded")
	}
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("Open: %v, want ErrSchemaTooNew", err)
	}
	if after := applied(t, c); !reflect.DeepEqual(after, before) {
		t.Errorf("a refused Open changed schema_migrations: %+v, want %+v", after, before)
	}
}

// testDB opens url through the driver the store uses, without a store.
func testDB(t *testing.T, url string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestMigrationsStepByStep: a later step applies on top of the earlier ones, and a step that
// fails leaves the database at the previous step, with nothing of the failed one.
func TestMigrationsStepByStep(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	db := testDB(t, url)
	c := connect(t, url)
	now := func() time.Time { return time.Unix(1700000000, 0) }
	ctx := t.Context()
	migrate := func(steps ...sqlstore.Migration) error {
		return sqlstore.Migrate(ctx, dialect{}, db, sqlstore.Schema{Table: schema().Table, Steps: steps}, now)
	}

	v1 := schema().Steps[0]
	if err := migrate(v1); err != nil {
		t.Fatal(err)
	}
	if err := migrate(v1, sqlstore.Migration{Version: 2, Name: "half broken", Up: sqlstore.ExecSQL(`CREATE TABLE extra (x int); SELECT no_such_function()`)}); err == nil {
		t.Fatal("a failing step succeeded")
	}
	if got := applied(t, c); len(got) != 1 {
		t.Errorf("after a failed step: %+v, want version 1 only", got)
	}
	var exists bool
	if err := c.QueryRow(ctx, `SELECT to_regclass('extra') IS NOT NULL`).Scan(&exists); err != nil || exists {
		t.Errorf("the failed step's table exists (%v): DDL must roll back with the step", err)
	}

	if err := migrate(v1, sqlstore.Migration{Version: 2, Name: "extra table", Up: sqlstore.ExecSQL(`CREATE TABLE extra (x int)`)}); err != nil {
		t.Fatal(err)
	}
	if got := applied(t, c); len(got) != 2 || got[1].Name != "extra table" {
		t.Errorf("after step 2: %+v", got)
	}

	if err := migrate(v1, sqlstore.Migration{Version: 3, Name: "gap", Up: sqlstore.ExecSQL(`SELECT 1`)}); err == nil {
		t.Error("steps with a gap in their versions were accepted")
	}
}

// TestMigrationsConcurrentOpens: the nodes of a fleet often start together; each step is
// applied exactly once and every node opens.
func TestMigrationsConcurrentOpens(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	const nodes = 6
	var wg sync.WaitGroup
	errs := make(chan error, nodes)
	for range nodes {
		wg.Go(func() {
			s, err := Open(context.Background(), url)
			if err == nil {
				s.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Open: %v", err)
		}
	}
	if got := applied(t, connect(t, url)); len(got) != len(schema().Steps) {
		t.Errorf("schema_migrations = %+v, want each step once", got)
	}
}

// TestUpgradeFromVersion2: a database written before nodes recorded their sandbox ranges
// (version 2) opens; its nodes read back with no range and its VMs' networks with no node
// or state (live, as they were); and nodes can then record a range.
func TestUpgradeFromVersion2(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	db := testDB(t, url)
	ctx := t.Context()
	now := func() time.Time { return time.Unix(1700000000, 0) }
	if err := sqlstore.Migrate(ctx, dialect{}, db, sqlstore.Schema{Table: schema().Table, Steps: schema().Steps[:2]}, now); err != nil {
		t.Fatal(err)
	}
	legacy := store.Network{Mode: "netns", Netns: "egressd-old", Path: "/run/netns/egressd-old", Address: "100.96.0.2/30", Gateway: "100.96.0.1"}
	heartbeat := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	// What version 2 wrote.
	for _, stmt := range []string{
		`INSERT INTO changes (tenant, kind, id, op, at) VALUES ('t', 'vm', 'vm', 'create', now())`,
		`INSERT INTO vms (tenant, id, network, revision, created_at) VALUES ('t', 'vm',
			'{"mode": "netns", "netns": "egressd-old", "path": "/run/netns/egressd-old", "address": "100.96.0.2/30", "gateway": "100.96.0.1"}', 1, now())`,
		`INSERT INTO nodes (id, roles, address, labels, applied_revision, vms, heartbeat)
			VALUES ('gw-old', '["gateway"]', '198.51.100.7:8470', '{"zone": "a"}', 1, 1, '2030-01-02 03:04:05+00')`,
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}

	s := openTest(t, url)
	if got := applied(t, connect(t, url)); len(got) != len(schema().Steps) {
		t.Errorf("after Open: %+v, want every step", got)
	}
	nodes, err := s.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Node{ID: "gw-old", Roles: []string{"gateway"}, Address: "198.51.100.7:8470",
		Labels: map[string]string{"zone": "a"}, Revision: 1, VMs: 1, Heartbeat: heartbeat}
	if len(nodes) != 1 || !reflect.DeepEqual(nodes[0], want) {
		t.Errorf("ListNodes after the upgrade = %#v, want [%#v] (no sandbox range)", nodes, want)
	}
	vm, err := s.GetVM(ctx, "t", "vm")
	if err != nil || vm.Network != legacy || !vm.Network.Live() {
		t.Errorf("GetVM after the upgrade = %+v, %v; want the live network %+v", vm, err, legacy)
	}

	want.SandboxCIDR = "100.96.0.0/20"
	if err := s.PutNode(ctx, want); err != nil {
		t.Fatal(err)
	}
	if nodes, err := s.ListNodes(ctx); err != nil || len(nodes) != 1 || nodes[0].SandboxCIDR != want.SandboxCIDR {
		t.Errorf("ListNodes after a PutNode with a range = %+v, %v; want range %s", nodes, err, want.SandboxCIDR)
	}
}
