package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/egressd/egressd/internal/store"
)

const sessionColumns = `tenant, id, vm_id, token_hash, revision, created_at`

// CreateSession stores a new session on one of the tenant's VMs, setting Revision and
// CreatedAt.
func (s *Store) CreateSession(ctx context.Context, se store.Session) (store.Session, error) {
	err := s.write(ctx, "create session", func(tx *wtx) error {
		se.CreatedAt = s.timestamp()
		// Checked here rather than left to the foreign key, whose error would not say which
		// object is missing. The write lock keeps the answer true until the commit.
		ok, err := tx.exists(ctx, `SELECT EXISTS (SELECT 1 FROM vms WHERE tenant = $1 AND id = $2)`, se.Tenant, se.VMID)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("vm %q: %w", se.VMID, store.ErrNotFound)
		}
		se.Revision, err = tx.logged(ctx, change{se.Tenant, store.KindSession, se.ID, store.OpCreate, se.CreatedAt},
			`INSERT INTO sessions (`+sessionColumns+`) SELECT $1, $3, $6, $7, revision, $5 FROM c`, se.VMID, se.TokenHash)
		return err
	})
	if err != nil {
		return store.Session{}, err
	}
	return se, nil
}

// GetSession reads one of the tenant's sessions.
func (s *Store) GetSession(ctx context.Context, tenant, id string) (store.Session, error) {
	row := s.pool.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE tenant = $1 AND id = $2`, tenant, id)
	return oneSession(row, "get session", id)
}

// SessionByID finds a session whatever its tenant, for the proxy's credential check.
func (s *Store) SessionByID(ctx context.Context, id string) (store.Session, error) {
	row := s.pool.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = $1`, id)
	return oneSession(row, "session by id", id)
}

func oneSession(row pgx.Row, op, id string) (store.Session, error) {
	se, err := scanSession(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Session{}, fmt.Errorf("postgres: %s %q: %w", op, id, store.ErrNotFound)
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
		return s.querySessions(ctx, "list sessions", `SELECT `+sessionColumns+` FROM sessions WHERE tenant = $1 ORDER BY revision`, tenant)
	}
	return s.querySessions(ctx, "list sessions", `SELECT `+sessionColumns+` FROM sessions WHERE tenant = $1 AND vm_id = $2 ORDER BY revision`, tenant, vmID)
}

// AllSessions lists every tenant's sessions, oldest first: for the gateway's view only.
func (s *Store) AllSessions(ctx context.Context) ([]store.Session, error) {
	return s.querySessions(ctx, "all sessions", `SELECT `+sessionColumns+` FROM sessions ORDER BY revision`)
}

func (s *Store) querySessions(ctx context.Context, op, query string, args ...any) ([]store.Session, error) {
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Session, error) { return scanSession(r) })
	if err != nil {
		return nil, wrap(op, err)
	}
	return nonNil(list), nil
}

// DeleteSession ends a session and deletes its policy in one transaction, logging the
// policy's deletion (if it had one) and then the session's.
func (s *Store) DeleteSession(ctx context.Context, tenant, id string) error {
	return s.write(ctx, "delete session", func(tx *wtx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM sessions WHERE tenant = $1 AND id = $2`, tenant, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("session %q: %w", id, store.ErrNotFound)
		}
		tag, err = tx.Exec(ctx, `DELETE FROM policies WHERE tenant = $1 AND scope = 'session' AND id = $2`, tenant, id)
		if err != nil {
			return err
		}
		now := s.timestamp()
		if tag.RowsAffected() > 0 {
			if _, err := tx.logChange(ctx, tenant, store.KindSessionPolicy, id, store.OpDelete, now); err != nil {
				return err
			}
		}
		_, err = tx.logChange(ctx, tenant, store.KindSession, id, store.OpDelete, now)
		return err
	})
}

func scanSession(row scanner) (store.Session, error) {
	var se store.Session
	var created time.Time
	if err := row.Scan(&se.Tenant, &se.ID, &se.VMID, &se.TokenHash, &se.Revision, &created); err != nil {
		return store.Session{}, err
	}
	se.CreatedAt = created.UTC()
	return se, nil
}
