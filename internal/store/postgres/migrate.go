package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrSchemaTooNew is returned by Open for a database that a newer egressd has migrated: this
// binary does not know the newer schema and must not write to it. (Nodes that were already
// running when a newer node migrated keep running; only their restart is refused. Released
// steps are additive so that this is safe: see docs/fleet.md on upgrades.)
var ErrSchemaTooNew = errors.New("database schema is newer than this egressd")

// migration is one step of the schema's history. Steps are numbered from 1 without gaps and
// never edited once released: a change to the schema is a new step.
type migration struct {
	version int
	name    string
	up      func(ctx context.Context, tx pgx.Tx) error
}

// execSQL is a migration step that runs a fixed script.
func execSQL(script string) func(context.Context, pgx.Tx) error {
	return func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, script)
		return err
	}
}

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    integer     NOT NULL PRIMARY KEY,
	name       text        NOT NULL,
	applied_at timestamptz NOT NULL
)`

// migrate brings the database up to the last of steps. Each step runs in its own transaction
// together with its schema_migrations row; PostgreSQL's DDL is transactional, so a crash
// leaves the database at a step boundary and the next start resumes from there. A database
// that is up to date is not written to.
//
// Every transaction here first takes the write lock: the nodes of a fleet often start
// together, and two of them must not run the same step (nor CREATE TABLE IF NOT EXISTS, which
// is not safe against a concurrent twin), nor migrate under a writer's feet.
func migrate(ctx context.Context, pool *pgxpool.Pool, steps []migration, now func() time.Time) error {
	for i, m := range steps {
		if m.version != i+1 {
			return fmt.Errorf("migrate: step %d (%s) has version %d; versions must run 1, 2, 3... without gaps", i, m.name, m.version)
		}
	}
	var current int
	err := locked(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, createMigrationsTable); err != nil {
			return err
		}
		var err error
		current, err = schemaVersion(ctx, tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if current > len(steps) {
		return fmt.Errorf("migrate: the database has schema version %d but this egressd knows versions up to %d: %w; run a newer egressd, or use another database", current, len(steps), ErrSchemaTooNew)
	}
	for _, m := range steps[current:] {
		err := locked(ctx, pool, func(tx pgx.Tx) error {
			// Another node may have applied the step since we looked; the lock keeps this
			// answer true until we commit.
			v, err := schemaVersion(ctx, tx)
			if err != nil || v >= m.version {
				return err
			}
			if err := m.up(ctx, tx); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
				m.version, m.name, micros(now()))
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate: version %d (%s): %w", m.version, m.name, err)
		}
	}
	return nil
}

// locked runs fn in a transaction that holds the write lock, and commits it.
func locked(ctx context.Context, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) // a no-op after Commit
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, writeLockKey); err != nil {
		return fmt.Errorf("take the write lock: %w", err)
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func schemaVersion(ctx context.Context, tx pgx.Tx) (int, error) {
	var v int
	err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}
