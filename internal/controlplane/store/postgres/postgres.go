// Package postgres is the fleet implementation of store.Store: one PostgreSQL database shared
// by every egressd of a fleet (API replicas and gateway nodes), through jackc/pgx's
// database/sql driver (DESIGN §5). Its SQL is package sqlstore's, shared with the embedded
// store, package sqlite; both run the same conformance suite, package storetest. This package
// opens the database, keeps its schema, says how PostgreSQL differs (dialect.go: the write
// lock below), and listens for changes (listen.go).
//
// Durability: every session runs with synchronous_commit=on (unless the URL asks for a
// stronger setting such as remote_apply), so a COMMIT returns only once its WAL is flushed
// (and, with synchronous standbys, replicated): an acknowledged write survives a crash of the
// database server.
//
// Revisions and the order of commits: every mutation appends rows to the changes table, whose
// IDENTITY column is the store-wide revision, in the same transaction as the mutation. A
// sequence alone would not be enough for a follower: values are handed out when a
// transaction asks for them, not when it commits, so a transaction holding revision 7 may
// commit after one holding revision 8. A follower that read "revision > 6" in between would
// see 8, move on, and never look at 7 again. So every mutating transaction first takes one
// transaction-level advisory lock (pg_advisory_xact_lock), which is held until it commits or
// aborts: writers run one at a time, each takes its revisions while no other writer is in
// flight, and revisions become visible in the order they were handed out. That is the same
// one-writer-at-a-time model as SQLite, so the checks a mutation makes (does the VM exist?)
// still hold when it commits. It costs write throughput (concurrent commits cannot share a WAL
// flush; docs/fleet.md has figures), so mutations make few round trips while they hold it.
// Readers never take it, nor do node heartbeats, which take no revision.
//
// A transaction that aborts has still consumed its sequence values, so revisions can have
// gaps; readers never rely on them being dense. Revision is the highest committed one.
//
// Propagation: a trigger on the changes table sends pg_notify on Channel with the newest
// revision each statement logged, delivered by PostgreSQL when (and only if) the transaction
// commits. Listen turns those into kicks of the gateway's view, which then reads ChangesSince
// its revision: a notification that is lost (a dropped connection) costs only latency, never
// a change.
package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/sqlstore"
)

// Channel is the LISTEN/NOTIFY channel on which every committed mutation announces its
// revision (the payload, in decimal).
const Channel = "egressd_changes"

// writeLockKey is the advisory lock that serialises writers (and migrations): "egressd" in
// ASCII. Advisory locks are per database, so two egressd deployments that share a database
// through different schemas share it too; that only serialises them, it breaks nothing.
const writeLockKey int64 = 0x65677265737364

// connectTimeout bounds a connection attempt when the URL does not set connect_timeout: a
// database that does not answer must turn into an error (and a node that is not ready), not
// a hang.
const connectTimeout = 10 * time.Second

// ErrSchemaTooNew is returned by Open for a database that a newer egressd has migrated (see
// sqlstore.ErrSchemaTooNew).
var ErrSchemaTooNew = sqlstore.ErrSchemaTooNew

// Store is a store.Store on one PostgreSQL database. Open makes one; it is safe for
// concurrent use.
type Store struct {
	*sqlstore.Store
	db   *sql.DB
	conn *pgx.ConnConfig // the pool's connection settings, for Listen's own connection
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at url (a postgres:// URL or a key=value connection string),
// and brings its schema up to date. It refuses a database whose schema is newer than this
// binary (ErrSchemaTooNew). The database must exist; egressd creates only its tables.
func Open(ctx context.Context, url string) (*Store, error) { return open(ctx, url, time.Now) }

// open is Open with the clock of mutations' times.
func open(ctx context.Context, url string, now func() time.Time) (*Store, error) {
	// pgxpool's parser, for its pool_max_conns (and other pool_*) parameters and defaults;
	// the pool itself is database/sql's.
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors keep the password out of the message.
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	cc := cfg.ConnConfig
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = connectTimeout
	}
	if _, ok := cc.RuntimeParams["synchronous_commit"]; !ok {
		// The server's default is on, but a server (or a role) may be set to off, which
		// would acknowledge writes that a crash then loses.
		cc.RuntimeParams["synchronous_commit"] = "on"
	}
	if _, ok := cc.RuntimeParams["application_name"]; !ok {
		cc.RuntimeParams["application_name"] = "egressd"
	}
	// The store's timestamps are written and read as instants; the session's zone must not
	// matter, but a fixed one makes what an operator sees in psql predictable.
	cc.RuntimeParams["timezone"] = "UTC"

	db := stdlib.OpenDB(*cc.Copy())
	db.SetMaxOpenConns(int(cfg.MaxConns))
	db.SetMaxIdleConns(int(cfg.MaxConns))
	db.SetConnMaxLifetime(cfg.MaxConnLifetime)
	db.SetConnMaxIdleTime(cfg.MaxConnIdleTime)
	d := dialect{}
	if err := sqlstore.Migrate(ctx, d, db, schema(), now); err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: open %s: %w", Redact(url), err)
	}
	st, err := sqlstore.New(ctx, d, db, db, now)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: open %s: %w", Redact(url), err)
	}
	return &Store{Store: st, db: db, conn: cc}, nil
}

// Redact returns url with its password replaced, for logs and errors. A string that is not a
// URL (a key=value connection string) is not shown at all, since it may hold a password.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return "(connection string)"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
