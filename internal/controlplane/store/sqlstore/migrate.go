package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrSchemaTooNew is returned by Migrate (and so by the stores' Open) for a database that a
// newer egressd has migrated: this binary does not know the newer schema and must not write
// to it. (In a fleet, nodes that were already running when a newer node migrated keep
// running; only their restart is refused. Released steps only add, so that this is safe: see
// docs/fleet.md on upgrades.)
var ErrSchemaTooNew = errors.New("database schema is newer than this egressd")

// Migration is one step of a schema's history. Steps are numbered from 1 without gaps and
// never edited once released: a change to the schema is a new step.
type Migration struct {
	Version int
	Name    string
	Up      func(ctx context.Context, tx *sql.Tx) error
}

// ExecSQL is a migration step that runs a fixed script.
func ExecSQL(script string) func(context.Context, *sql.Tx) error {
	return func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, script)
		return err
	}
}

// Schema is a database's schema history.
type Schema struct {
	// Table creates the schema_migrations table if it does not exist: columns version,
	// name and applied_at (a time column of the dialect).
	Table string
	Steps []Migration
}

// Migrate brings db up to the last of the schema's steps. Each step runs in its own
// transaction, holding the write lock (Dialect.BeginWrite), together with its
// schema_migrations row: a crash leaves the database at a step boundary and the next start
// resumes from there; processes that start together on one database apply each step exactly
// once. A database that is up to date is not written to.
func Migrate(ctx context.Context, d Dialect, db *sql.DB, schema Schema, now func() time.Time) error {
	for i, m := range schema.Steps {
		if m.Version != i+1 {
			return fmt.Errorf("migrate: step %d (%s) has version %d; versions must run 1, 2, 3... without gaps", i, m.Name, m.Version)
		}
	}
	var current int
	err := locked(ctx, d, db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, schema.Table); err != nil {
			return err
		}
		var err error
		current, err = SchemaVersion(ctx, tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if current > len(schema.Steps) {
		return fmt.Errorf("migrate: the database has schema version %d but this egressd knows versions up to %d: %w; run a newer egressd, or give this one another database", current, len(schema.Steps), ErrSchemaTooNew)
	}
	for _, m := range schema.Steps[current:] {
		err := locked(ctx, d, db, func(tx *sql.Tx) error {
			// Another process may have applied the step since we looked; the lock keeps this
			// answer true until we commit.
			v, err := SchemaVersion(ctx, tx)
			if err != nil || v >= m.Version {
				return err
			}
			if err := m.Up(ctx, tx); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
				m.Version, m.Name, d.TimeArg(now().Truncate(d.Resolution()).UTC()))
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate: version %d (%s): %w", m.Version, m.Name, err)
		}
	}
	return nil
}

// locked runs fn in a transaction that holds the write lock, and commits it.
func locked(ctx context.Context, d Dialect, db *sql.DB, fn func(tx *sql.Tx) error) error {
	tx, err := d.BeginWrite(ctx, db)
	if err != nil {
		return err
	}
	defer tx.Rollback() // a no-op after Commit
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// SchemaVersion is the newest step applied to the database q reads.
func SchemaVersion(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}) (int, error) {
	var v int
	err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}
