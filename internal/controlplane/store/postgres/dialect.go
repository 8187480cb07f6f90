package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// codeUniqueViolation is PostgreSQL's error code for a UNIQUE or PRIMARY KEY violation.
const codeUniqueViolation = "23505"

// dialect is how PostgreSQL differs under the shared SQL (sqlstore.Dialect).
type dialect struct{}

func (dialect) Name() string { return "postgres" }

// Time columns are timestamptz, which keeps microseconds.
func (dialect) Resolution() time.Duration { return time.Microsecond }
func (dialect) TimeArg(t time.Time) any   { return t }

func (dialect) IsConflict(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == codeUniqueViolation
}

// BeginWrite begins a transaction and takes the write lock (see the package comment), held
// until it commits or aborts.
//
// READ COMMITTED is enough: each statement sees every transaction committed before it
// started, and since the lock is taken first, every earlier writer has committed before the
// mutation's first statement runs. (PostgreSQL releases a transaction's locks only after its
// commit is visible.)
//
// The lock is held until the commit, so the round trips made under it bound the write rate:
// mutations log their change and write their row in one statement (WritableCTE), and the
// notification is sent by a trigger on the change log rather than by one more statement.
func (dialect) BeginWrite(ctx context.Context, db *sql.DB) (*sql.Tx, error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, writeLockKey); err != nil {
		tx.Rollback()
		return nil, fmt.Errorf("take the write lock: %w", err)
	}
	return tx, nil
}

func (dialect) WritableCTE() bool { return true }

// Now is the database server's clock, which every node of a fleet shares.
func (d dialect) Now(ctx context.Context, db *sql.DB) (time.Time, error) {
	var now time.Time
	err := db.QueryRowContext(ctx, `SELECT `+d.NowSQL()).Scan(&now)
	return now, err
}

// NowSQL is the server's clock: the start of the statement's transaction, which for a
// statement on its own (a heartbeat) is the statement's start. timestamptz keeps
// microseconds, the store's Resolution.
func (dialect) NowSQL() string { return "now()" }
