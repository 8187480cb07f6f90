package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/egressd/egressd/internal/store"
)

// PostgreSQL error codes the store maps onto its own errors.
const (
	codeUniqueViolation = "23505"
)

// wtx is a mutating transaction, holding the write lock.
type wtx struct{ pgx.Tx }

// write runs fn in a transaction that holds the write lock (see the package comment), and
// commits it. op names the operation in errors ("create vm"). Whatever fn returns aborts the
// transaction, so a failed mutation leaves no rows behind (only a gap in the revisions).
//
// READ COMMITTED is enough: each statement sees every transaction committed before it
// started, and since the lock is taken first, every earlier writer has committed before fn's
// first statement runs. (PostgreSQL releases a transaction's locks only after its commit is
// visible.)
//
// The lock is held until the commit, so the round trips made under it bound the write rate:
// mutations log their change and write their row in one statement (logged), and the
// notification is sent by a trigger on the change log rather than by one more statement.
func (s *Store) write(ctx context.Context, op string, fn func(tx *wtx) error) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return wrap(op, err)
	}
	// A no-op after Commit. With ctx already canceled pgx closes the connection instead,
	// which aborts the transaction just as well.
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, writeLockKey); err != nil {
		return wrap(op, fmt.Errorf("take the write lock: %w", err))
	}
	if err := fn(&wtx{tx}); err != nil {
		return wrap(op, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return wrap(op, err)
	}
	return nil
}

// wrap gives err the package's context and maps the server's constraint errors onto the
// store's: a UNIQUE or PRIMARY KEY violation is store.ErrConflict. The server's error stays in
// the chain for a person reading the message.
func wrap(op string, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == codeUniqueViolation {
		return fmt.Errorf("postgres: %s: %w (%w)", op, store.ErrConflict, err)
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// change is one entry of the change log, as a mutation writes it.
type change struct {
	tenant, kind, id, op string
	at                   time.Time
}

// logChange appends one change to the log and returns the revision it took.
func (tx *wtx) logChange(ctx context.Context, tenant, kind, id, op string, at time.Time) (int64, error) {
	var rev int64
	err := tx.QueryRow(ctx, `INSERT INTO changes (tenant, kind, id, op, at) VALUES ($1, $2, $3, $4, $5) RETURNING revision`,
		tenant, kind, id, op, at).Scan(&rev)
	if err != nil {
		return 0, fmt.Errorf("log change: %w", err)
	}
	return rev, nil
}

// logged appends c to the change log and runs stmt, in one statement (one round trip under
// the write lock), and returns the revision c took. stmt is an INSERT ... SELECT ... FROM c:
// it reads the revision as c.revision, the change's fields as $1 to $5 (tenant, kind, id,
// op, at) and its own arguments, args, as $6 on.
func (tx *wtx) logged(ctx context.Context, c change, stmt string, args ...any) (int64, error) {
	var rev int64
	all := append([]any{c.tenant, c.kind, c.id, c.op, c.at}, args...)
	err := tx.QueryRow(ctx, `WITH c AS (INSERT INTO changes (tenant, kind, id, op, at) VALUES ($1, $2, $3, $4, $5) RETURNING revision) `+
		stmt+` RETURNING (SELECT revision FROM c)`, all...).Scan(&rev)
	return rev, err
}

// logDeletes logs the deletion of each of ids.
func (tx *wtx) logDeletes(ctx context.Context, tenant, kind string, ids []string, at time.Time) error {
	for _, id := range ids {
		if _, err := tx.logChange(ctx, tenant, kind, id, store.OpDelete, at); err != nil {
			return err
		}
	}
	return nil
}

// exists reports whether query, a SELECT EXISTS (...), is true.
func (tx *wtx) exists(ctx context.Context, query string, args ...any) (bool, error) {
	var ok bool
	err := tx.QueryRow(ctx, query, args...).Scan(&ok)
	return ok, err
}

// ids runs query, which selects one text column, and returns the values.
func (tx *wtx) ids(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := tx.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// timestamp is the time of a mutation: UTC and truncated to microseconds, PostgreSQL's
// resolution, so that the value a Create returns equals the value a later Get returns.
// Mutations take it once they hold the write lock, so that times follow the order of
// revisions (as far as the clock does).
func (s *Store) timestamp() time.Time { return micros(s.now()) }

// micros is t as PostgreSQL stores it: UTC, whole microseconds, no monotonic reading.
func micros(t time.Time) time.Time { return time.UnixMicro(t.UnixMicro()).UTC() }

// scanner is a pgx.Row or pgx.Rows.
type scanner interface{ Scan(dest ...any) error }
