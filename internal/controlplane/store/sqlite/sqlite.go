// Package sqlite is the embedded implementation of store.Store: one SQLite database file,
// <data-dir>/egressd.db, through the pure-Go driver modernc.org/sqlite (no cgo). The SQL it
// shares with package postgres is package sqlstore's; this package opens the file, keeps its
// schema, and says how SQLite differs (dialect.go).
//
// Durability: the database runs in WAL mode with synchronous=FULL, so the WAL is fsynced at
// every commit and a write that returned nil survives kill -9 and power loss.
//
// Concurrency: SQLite allows one writer at a time. Rather than let writers race for the lock
// and back off on SQLITE_BUSY, every write goes through a pool of exactly one connection, so
// writes queue in Go (honouring their contexts) and each takes the lock at BEGIN IMMEDIATE.
// Reads go through a separate pool of read-only connections; under WAL they see the last
// committed state and never wait for the writer.
//
// Revisions: every mutation appends one row per object it touches to the changes table, whose
// AUTOINCREMENT key is the store-wide revision, in the same transaction as the mutation. API
// key creation and deletion are logged too: revoking a key must reach every cache of it.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/sqlstore"
)

// FileName is the database file inside the data directory.
const FileName = "egressd.db"

// MaxChanges is the most changes one ChangesSince call returns.
const MaxChanges = store.MaxChanges

// ErrSchemaTooNew is returned by Open for a database that a newer egressd has migrated: this
// binary does not know the newer schema and must not write to it.
var ErrSchemaTooNew = sqlstore.ErrSchemaTooNew

// busyTimeout bounds how long a connection waits for a lock held by another process (another
// egressd on the same data directory, or an operator's sqlite3 shell). Within one process the
// single writer connection means writers never contend for it.
const busyTimeout = 10 * time.Second

// Store is a store.Store on one SQLite database. Open makes one; it is safe for concurrent use.
type Store struct {
	*sqlstore.Store
	path   string
	writer *sql.DB  // exactly one connection: every write is serialised through it
	reader *sql.DB  // read-only connections for everything else
	lock   *os.File // the exclusive lock on the data directory (see lockDir)
}

var _ store.Store = (*Store)(nil)

// Open opens, creating if needed, the database in dir (created with mode 0700; the database
// file is created 0600, since it holds the hashes of every credential), and brings its schema
// up to date. It refuses a database whose schema is newer than this binary (ErrSchemaTooNew).
func Open(ctx context.Context, dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("sqlite: open: no data directory given")
	}
	path, err := createFile(dir)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	lock, err := lockDir(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	s := &Store{path: path, lock: lock}
	if err := s.open(ctx, time.Now); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) open(ctx context.Context, now func() time.Time) error {
	d := dialect{now: now}
	var err error
	s.writer, err = sql.Open("sqlite", dsn(s.path, false))
	if err != nil {
		return err
	}
	// One connection that is never closed for being idle or old: the pool is the write queue.
	s.writer.SetMaxOpenConns(1)
	s.writer.SetMaxIdleConns(1)
	s.writer.SetConnMaxLifetime(0)
	s.writer.SetConnMaxIdleTime(0)

	// journal_mode is a property of the file, not of a connection. SQLite answers with the
	// mode in force, which stays "delete" where WAL is impossible (some network file
	// systems); the store's concurrency and durability reasoning assumes WAL, so refuse.
	var mode string
	if err := s.writer.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return fmt.Errorf("set WAL mode: %w", err)
	}
	if mode != "wal" {
		return fmt.Errorf("the file system does not support WAL mode (journal_mode is %q); use a local disk for the data directory", mode)
	}
	if err := sqlstore.Migrate(ctx, d, s.writer, schema(), now); err != nil {
		return err
	}

	s.reader, err = sql.Open("sqlite", dsn(s.path, true))
	if err != nil {
		return err
	}
	n := max(4, runtime.GOMAXPROCS(0))
	s.reader.SetMaxOpenConns(n)
	s.reader.SetMaxIdleConns(n)
	if s.Store, err = sqlstore.New(ctx, d, s.reader, s.writer, now); err != nil {
		return err
	}
	return s.Ping(ctx)
}

// createFile makes dir and an empty database file in it, with modes that keep other users
// out. SQLite gives its -wal and -shm files the mode of the database file, so creating that
// file ourselves (an empty file is a valid empty database) is what makes them 0600 too.
func createFile(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return path, nil
	}
	if err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	// Make the new directory entry durable, so a power loss cannot lose the file that later
	// acknowledged writes went to.
	return path, syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// dsn is the driver's connection string for path. The _pragma settings are applied to every
// new connection of the pool, so a connection that the pool replaces gets them too.
func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	if readOnly {
		// Enforced by SQLite: a write sent to the read pool by mistake fails instead of
		// bypassing the write queue.
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Add("_pragma", "foreign_keys(1)")
		// FULL, not WAL's usual NORMAL: NORMAL may lose the last commits on power loss.
		q.Add("_pragma", "synchronous(FULL)")
		// Take the write lock at BEGIN, so that a transaction never fails half-way when it
		// upgrades from a read lock.
		q.Set("_txlock", "immediate")
	}
	// A file: URI so that any byte of the path ('?', '#', '%') is escaped rather than parsed.
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), RawQuery: q.Encode()}
	return u.String()
}

// Close closes both pools and releases the data directory. Calling it again is harmless.
func (s *Store) Close() error {
	var errs []error
	if s.Store != nil {
		errs = append(errs, s.Store.Close())
	} else { // Open failed half-way
		for _, db := range []*sql.DB{s.reader, s.writer} {
			if db != nil {
				errs = append(errs, db.Close())
			}
		}
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close()) // releases the data directory
		s.lock = nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}
