package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	sqlitedriver "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/egressd/egressd/internal/store"
)

// write runs fn in a transaction on the writer connection and commits it. op names the
// operation in errors ("create vm"). Whatever fn returns aborts the transaction, so a failed
// mutation leaves neither rows nor revisions behind.
func (s *Store) write(ctx context.Context, op string, fn func(tx *sql.Tx) error) error {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return wrap(op, err)
	}
	defer tx.Rollback() // a no-op after Commit
	if err := fn(tx); err != nil {
		return wrap(op, err)
	}
	if err := tx.Commit(); err != nil {
		return wrap(op, err)
	}
	return nil
}

// wrap gives err the package's context and maps the driver's constraint errors onto the
// store's: a UNIQUE or PRIMARY KEY violation is store.ErrConflict. The driver's error stays in
// the chain for a person reading the message.
func wrap(op string, err error) error {
	var e *sqlitedriver.Error
	if errors.As(err, &e) {
		switch e.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("sqlite: %s: %w (%w)", op, store.ErrConflict, err)
		}
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

// logChange appends one change to the log and returns the revision it took.
func logChange(ctx context.Context, tx *sql.Tx, tenant, kind, id, op string, at time.Time) (int64, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO changes (tenant, kind, id, op, at) VALUES (?, ?, ?, ?, ?)`,
		tenant, kind, id, op, at.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("log change: %w", err)
	}
	return res.LastInsertId()
}

// logDeletes logs the deletion of each of ids.
func logDeletes(ctx context.Context, tx *sql.Tx, tenant, kind string, ids []string, at time.Time) error {
	for _, id := range ids {
		if _, err := logChange(ctx, tx, tenant, kind, id, store.OpDelete, at); err != nil {
			return err
		}
	}
	return nil
}

// deleteRows runs a DELETE and reports how many rows it removed.
func deleteRows(ctx context.Context, tx *sql.Tx, query string, args ...any) (int64, error) {
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// exists reports whether query, a SELECT EXISTS (...), is true.
func exists(ctx context.Context, q queryer, query string, args ...any) (bool, error) {
	var ok bool
	err := q.QueryRowContext(ctx, query, args...).Scan(&ok)
	return ok, err
}

// ids runs query, which selects one text column, and returns the values.
func ids(ctx context.Context, tx *sql.Tx, query string, args ...any) ([]string, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// timestamp is the time of a mutation: UTC, and exactly what a read of its unix nanoseconds
// gives back, so the value a Create returns equals the value a later Get returns. Mutations
// take it inside their transaction, once they hold the write lock, so that times follow the
// order of revisions (as far as the clock does).
func (s *Store) timestamp() time.Time { return fromNanos(s.now().UnixNano()) }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }
