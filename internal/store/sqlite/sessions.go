package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/egressd/egressd/internal/store"
)

const sessionColumns = `tenant, id, vm_id, token_hash, revision, created_at`

// CreateSession stores a new session on one of the tenant's VMs, setting Revision and
// CreatedAt.
func (s *Store) CreateSession(ctx context.Context, se store.Session) (store.Session, error) {
	err := s.write(ctx, "create session", func(tx *sql.Tx) error {
		se.CreatedAt = s.timestamp()
		// Checked here rather than left to the foreign key, whose error would not say which
		// object is missing.
		ok, err := exists(ctx, tx, `SELECT EXISTS (SELECT 1 FROM vms WHERE tenant = ? AND id = ?)`, se.Tenant, se.VMID)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("vm %q: %w", se.VMID, store.ErrNotFound)
		}
		rev, err := logChange(ctx, tx, se.Tenant, store.KindSession, se.ID, store.OpCreate, se.CreatedAt)
		if err != nil {
			return err
		}
		se.Revision = rev
		_, err = tx.ExecContext(ctx, `INSERT INTO sessions (`+sessionColumns+`) VALUES (?, ?, ?, ?, ?, ?)`,
			se.Tenant, se.ID, se.VMID, se.TokenHash, se.Revision, se.CreatedAt.UnixNano())
		return err
	})
	if err != nil {
		return store.Session{}, err
	}
	return se, nil
}

// GetSession reads one of the tenant's sessions.
func (s *Store) GetSession(ctx context.Context, tenant, id string) (store.Session, error) {
	row := s.reads.session.QueryRowContext(ctx, tenant, id)
	return oneSession(row, "get session", id)
}

// SessionByID finds a session whatever its tenant, for the proxy's credential check.
func (s *Store) SessionByID(ctx context.Context, id string) (store.Session, error) {
	row := s.reads.sessionByID.QueryRowContext(ctx, id)
	return oneSession(row, "session by id", id)
}

func oneSession(row *sql.Row, op, id string) (store.Session, error) {
	se, err := scanSession(row)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Session{}, fmt.Errorf("sqlite: %s %q: %w", op, id, store.ErrNotFound)
	}
	if err != nil {
		return store.Session{}, wrap(op, err)
	}
	return se, nil
}

// ListSessions lists the tenant's sessions on one VM, or on all its VMs when vmID is "",
// oldest first.
func (s *Store) ListSessions(ctx context.Context, tenant, vmID string) ([]store.Session, error) {
	if vmID == "" {
		return s.querySessions(ctx, "list sessions", `SELECT `+sessionColumns+` FROM sessions WHERE tenant = ? ORDER BY revision`, tenant)
	}
	return s.querySessions(ctx, "list sessions", `SELECT `+sessionColumns+` FROM sessions WHERE tenant = ? AND vm_id = ? ORDER BY revision`, tenant, vmID)
}

// AllSessions lists every tenant's sessions, oldest first: for the gateway's view only.
func (s *Store) AllSessions(ctx context.Context) ([]store.Session, error) {
	return s.querySessions(ctx, "all sessions", `SELECT `+sessionColumns+` FROM sessions ORDER BY revision`)
}

func (s *Store) querySessions(ctx context.Context, op, query string, args ...any) ([]store.Session, error) {
	rows, err := s.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	list := []store.Session{}
	for rows.Next() {
		se, err := scanSession(rows)
		if err != nil {
			return nil, wrap(op, err)
		}
		list = append(list, se)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return list, nil
}

// DeleteSession ends a session and deletes its policy in one transaction, logging the
// policy's deletion (if it had one) and then the session's.
func (s *Store) DeleteSession(ctx context.Context, tenant, id string) error {
	return s.write(ctx, "delete session", func(tx *sql.Tx) error {
		n, err := deleteRows(ctx, tx, `DELETE FROM sessions WHERE tenant = ? AND id = ?`, tenant, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("session %q: %w", id, store.ErrNotFound)
		}
		n, err = deleteRows(ctx, tx, `DELETE FROM policies WHERE tenant = ? AND scope = 'session' AND id = ?`, tenant, id)
		if err != nil {
			return err
		}
		now := s.timestamp()
		if n > 0 {
			if _, err := logChange(ctx, tx, tenant, store.KindSessionPolicy, id, store.OpDelete, now); err != nil {
				return err
			}
		}
		_, err = logChange(ctx, tx, tenant, store.KindSession, id, store.OpDelete, now)
		return err
	})
}

func scanSession(row scanner) (store.Session, error) {
	var se store.Session
	var created int64
	if err := row.Scan(&se.Tenant, &se.ID, &se.VMID, &se.TokenHash, &se.Revision, &created); err != nil {
		return store.Session{}, err
	}
	se.CreatedAt = fromNanos(created)
	return se, nil
}
