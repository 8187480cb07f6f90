package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	sqlitedriver "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// dialect is how SQLite differs under the shared SQL (sqlstore.Dialect).
type dialect struct {
	now func() time.Time // the process's clock, the store's
}

func (dialect) Name() string { return "sqlite" }

// Time columns are INTEGER unix nanoseconds in UTC.
func (dialect) Resolution() time.Duration { return time.Nanosecond }
func (dialect) TimeArg(t time.Time) any   { return t.UnixNano() }

func (dialect) IsConflict(err error) bool {
	var e *sqlitedriver.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return true
	}
	return false
}

// BeginWrite begins on the writer pool, whose one connection is the write queue and whose
// BEGIN is IMMEDIATE (see dsn): the transaction holds SQLite's write lock from its start.
func (dialect) BeginWrite(ctx context.Context, db *sql.DB) (*sql.Tx, error) {
	return db.BeginTx(ctx, nil)
}

// No INSERT inside WITH in SQLite; nor is a round trip worth saving in-process.
func (dialect) WritableCTE() bool { return false }

// Now is the process's clock: one process uses a data directory at a time (lockDir), so the
// writer of heartbeats and their reader share it.
func (d dialect) Now(context.Context, *sql.DB) (time.Time, error) { return d.now(), nil }

// NowSQL is empty: the clock is the process's, which a statement takes as an argument at no
// cost.
func (dialect) NowSQL() string { return "" }
