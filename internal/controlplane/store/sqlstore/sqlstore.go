// Package sqlstore is the SQL that both implementations of store.Store share: package sqlite
// (the embedded store) and package postgres (the fleet's) each open their database through
// database/sql, and wrap a Store of this package with what only their database needs:
// opening it, its schema, its write lock, and (PostgreSQL) notifications.
//
// The SQL is written once, in the syntax both databases accept (ON CONFLICT ... DO UPDATE,
// RETURNING, and placeholders $1, $2..., which modernc.org/sqlite binds by number as pgx
// does); a Dialect says what differs.
//
// Every mutation runs in a transaction that holds the database's write lock (Dialect.
// BeginWrite), so that writers run one at a time: the checks a mutation makes (does the VM
// exist?) still hold when it commits, and revisions become visible in the order they were
// handed out. It appends one row per object it touches to the change log, the changes table,
// whose key is the store-wide revision, in the same transaction.
//
// Its tests are the conformance suite (package storetest), which both stores run on their
// databases, and each store's own tests of what only it does.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
)

// Dialect is what the shared SQL needs to know about a database.
type Dialect interface {
	// Name starts every error of the store: "sqlite", "postgres".
	Name() string
	// Resolution is how finely a time column keeps an instant: a mutation's times are
	// truncated to it, so that what a write returns equals what a later read gives back.
	Resolution() time.Duration
	// TimeArg is the value written into a time column for t.
	TimeArg(t time.Time) any
	// IsConflict reports whether err is a UNIQUE or PRIMARY KEY violation.
	IsConflict(err error) bool
	// BeginWrite begins a transaction on db that holds the store's write lock until it ends.
	BeginWrite(ctx context.Context, db *sql.DB) (*sql.Tx, error)
	// WritableCTE reports whether a WITH clause may insert (PostgreSQL's data-modifying
	// WITH): then a mutation logs its change and writes its row in one statement, one round
	// trip less while it holds the write lock.
	WritableCTE() bool
	// Now is the store's clock for node heartbeats (store.Store.Now).
	Now(ctx context.Context, db *sql.DB) (time.Time, error)
	// NowSQL is Now as an SQL expression, for a statement that stamps a row with the store's
	// clock without a round trip of its own (a heartbeat); "" when the store's clock is this
	// process's, which the statement then takes as an argument.
	NowSQL() string
}

// Store is a store.Store over database/sql. New makes one; it is safe for concurrent use.
type Store struct {
	d      Dialect
	reader *sql.DB    // every read
	writer *sql.DB    // every write; the same pool as reader where the database allows
	reads  *readStmts // never nil: after Close its statements answer an error
	now    func() time.Time

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// New makes a Store on databases whose schema is up to date (see Migrate). Reads go to
// reader and writes to writer (which may be the same pool); now is the clock of mutations'
// times. Close closes both pools.
func New(ctx context.Context, d Dialect, reader, writer *sql.DB, now func() time.Time) (*Store, error) {
	reads, err := prepareReads(ctx, d, reader)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.Name(), err)
	}
	return &Store{d: d, reader: reader, writer: writer, reads: reads, now: now}, nil
}

// Close closes the prepared statements and both pools. Calling it again is harmless.
func (s *Store) Close() error {
	// A call racing Close gets "statement is closed" or "database is closed" from
	// database/sql, never a nil statement: Close changes no field.
	s.closeOnce.Do(func() {
		errs := []error{s.reads.close(), s.reader.Close()}
		if s.writer != s.reader {
			errs = append(errs, s.writer.Close())
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("%s: close: %w", s.d.Name(), err)
		}
	})
	return s.closeErr
}

// Ping reports whether the database answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.reader.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return s.wrap("ping", err)
	}
	return nil
}

// Revision is the newest revision of the change log. Writers commit one at a time, in
// revision order, so every revision up to it is visible too: a follower that loads everything
// and then follows ChangesSince(Revision) misses nothing. Changes are never deleted, so this
// is also the newest revision handed out; the primary key makes it an index lookup.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	var rev int64
	if err := s.reader.QueryRowContext(ctx, `SELECT COALESCE(MAX(revision), 0) FROM changes`).Scan(&rev); err != nil {
		return 0, s.wrap("revision", err)
	}
	return rev, nil
}

// Now is the store's clock (Dialect.Now), in UTC and at the resolution of its time columns.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	t, err := s.d.Now(ctx, s.writer)
	if err != nil {
		return time.Time{}, s.wrap("now", err)
	}
	return s.stamp(t), nil
}

// wrap gives err the store's context and maps the database's constraint errors onto the
// store's: a UNIQUE or PRIMARY KEY violation is store.ErrConflict. The database's error stays
// in the chain for a person reading the message.
func (s *Store) wrap(op string, err error) error {
	if s.d.IsConflict(err) {
		return fmt.Errorf("%s: %s: %w (%w)", s.d.Name(), op, store.ErrConflict, err)
	}
	return fmt.Errorf("%s: %s: %w", s.d.Name(), op, err)
}

// write runs fn in a transaction that holds the write lock, and commits it. op names the
// operation in errors ("create vm"). Whatever fn returns aborts the transaction, so a failed
// mutation leaves no rows behind (at most a gap in the revisions).
func (s *Store) write(ctx context.Context, op string, fn func(tx *wtx) error) error {
	tx, err := s.d.BeginWrite(ctx, s.writer)
	if err != nil {
		return s.wrap(op, err)
	}
	defer tx.Rollback() // a no-op after Commit
	if err := fn(&wtx{Tx: tx, s: s}); err != nil {
		return s.wrap(op, err)
	}
	if err := tx.Commit(); err != nil {
		return s.wrap(op, err)
	}
	return nil
}

// timestamp is the time of a mutation. Mutations take it once they hold the write lock, so
// that times follow the order of revisions (as far as the clock does).
func (s *Store) timestamp() time.Time { return s.stamp(s.now()) }

// stamp is t as a time column gives it back: UTC, at the column's resolution, without a
// monotonic reading.
func (s *Store) stamp(t time.Time) time.Time { return t.Truncate(s.d.Resolution()).UTC() }

// list runs query on the read pool and scans every row with scan. The list is never nil, so
// that it encodes as [] and compares the same whatever the database.
func list[T any](ctx context.Context, s *Store, op, query string, scan func(scanner) (T, error), args ...any) ([]T, error) {
	rows, err := s.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, s.wrap(op, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(op, err)
	}
	return out, nil
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// wtx is a mutating transaction, holding the write lock.
type wtx struct {
	*sql.Tx
	s *Store
}

// exists reports whether query, a SELECT EXISTS (...), is true.
func (w *wtx) exists(ctx context.Context, query string, args ...any) (bool, error) {
	var ok bool
	err := w.QueryRowContext(ctx, query, args...).Scan(&ok)
	return ok, err
}

// deleted runs a DELETE and reports how many rows it removed.
func (w *wtx) deleted(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := w.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// ids runs query, which selects (or returns) one text column, and returns the values.
func (w *wtx) ids(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := w.QueryContext(ctx, query, args...)
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

// change is one entry of the change log, as a mutation writes it.
type change struct {
	tenant, kind, id, op string
	at                   time.Time
}

const logChangeSQL = `INSERT INTO changes (tenant, kind, id, op, at) VALUES ($1, $2, $3, $4, $5)`

// log appends c to the change log and returns the revision it took.
func (w *wtx) log(ctx context.Context, c change) (int64, error) {
	var rev int64
	err := w.QueryRowContext(ctx, logChangeSQL+` RETURNING revision`, c.tenant, c.kind, c.id, c.op, w.s.d.TimeArg(c.at)).Scan(&rev)
	if err != nil {
		return 0, fmt.Errorf("log change: %w", err)
	}
	return rev, nil
}

// logDeletes logs the deletion of each of ids.
func (w *wtx) logDeletes(ctx context.Context, tenant, kind string, ids []string, at time.Time) error {
	for _, id := range ids {
		if _, err := w.log(ctx, change{tenant, kind, id, store.OpDelete, at}); err != nil {
			return err
		}
	}
	return nil
}

// row is one row that a mutation inserts (or, with onConflict, upserts), whose revision
// column takes the revision of the mutation's change.
type row struct {
	table      string
	columns    []string // without revision
	values     []any
	onConflict string // "" or an ON CONFLICT clause
}

// insertSQL is the row's INSERT, with its values at placeholders $first on and revision, an
// SQL expression, as the revision column's value.
func (r row) insertSQL(first int, revision string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "INSERT INTO %s (%s, revision) VALUES (", r.table, strings.Join(r.columns, ", "))
	for i := range r.columns {
		fmt.Fprintf(&b, "$%d, ", first+i)
	}
	b.WriteString(revision + ")")
	if r.onConflict != "" {
		b.WriteString(" " + r.onConflict)
	}
	return b.String()
}

// insert appends c to the change log and writes r with the revision c took, which it
// returns.
func (w *wtx) insert(ctx context.Context, c change, r row) (int64, error) {
	at := w.s.d.TimeArg(c.at)
	if !w.s.d.WritableCTE() {
		rev, err := w.log(ctx, c)
		if err != nil {
			return 0, err
		}
		_, err = w.ExecContext(ctx, r.insertSQL(1, fmt.Sprintf("$%d", len(r.values)+1)), append(r.values, rev)...)
		return rev, err
	}
	var rev int64
	query := `WITH c AS (` + logChangeSQL + ` RETURNING revision) ` +
		r.insertSQL(6, `(SELECT revision FROM c)`) + ` RETURNING revision`
	err := w.QueryRowContext(ctx, query, append([]any{c.tenant, c.kind, c.id, c.op, at}, r.values...)...).Scan(&rev)
	return rev, err
}
