package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrSchemaTooNew is returned by Open for a database that a newer egressd has migrated: this
// binary does not know the newer schema and must not write to it.
var ErrSchemaTooNew = errors.New("database schema is newer than this egressd")

// migration is one step of the schema's history. Steps are numbered from 1 without gaps and
// never edited once released: a change to the schema is a new step.
type migration struct {
	version int
	name    string
	up      func(ctx context.Context, tx *sql.Tx) error
}

// execSQL is a migration step that runs a fixed script.
func execSQL(script string) func(context.Context, *sql.Tx) error {
	return func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, script)
		return err
	}
}

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER NOT NULL PRIMARY KEY,
	name       TEXT    NOT NULL,
	applied_at INTEGER NOT NULL -- unix nanoseconds, UTC
) STRICT`

// migrate brings the database up to the last of steps. Each step runs in its own transaction
// together with its schema_migrations row, so a crash leaves the database at a step boundary
// and the next start resumes from there; a database that is up to date is not written to.
func migrate(ctx context.Context, db *sql.DB, steps []migration, now func() time.Time) error {
	for i, m := range steps {
		if m.version != i+1 {
			return fmt.Errorf("migrate: step %d (%s) has version %d; versions must run 1, 2, 3... without gaps", i, m.name, m.version)
		}
	}
	if _, err := db.ExecContext(ctx, createMigrationsTable); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	current, err := schemaVersion(ctx, db)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if current > len(steps) {
		return fmt.Errorf("migrate: the database has schema version %d but this egressd knows versions up to %d: %w; run a newer egressd, or use another data directory", current, len(steps), ErrSchemaTooNew)
	}
	for _, m := range steps[current:] {
		if err := apply(ctx, db, m, now()); err != nil {
			return fmt.Errorf("migrate: version %d (%s): %w", m.version, m.name, err)
		}
	}
	return nil
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func schemaVersion(ctx context.Context, q queryer) (int, error) {
	var v int
	err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

func apply(ctx context.Context, db *sql.DB, m migration, at time.Time) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // a no-op after Commit

	// Another process on the same file may have applied the step since we looked; the
	// transaction holds the write lock, so this answer stays true until we commit.
	current, err := schemaVersion(ctx, tx)
	if err != nil {
		return err
	}
	if current >= m.version {
		return nil
	}
	if err := m.up(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		m.version, m.name, at.UnixNano()); err != nil {
		return err
	}
	return tx.Commit()
}
