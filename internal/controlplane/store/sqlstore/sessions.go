package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/egressd/egressd/internal/controlplane/store"
)

const sessionColumns = `tenant, id, vm_id, token_hash, revision, created_at`

// CreateSession stores a new session on one of the tenant's VMs, setting Revision and
// CreatedAt.
func (s *Store) CreateSession(ctx context.Context, se store.Session) (store.Session, error) {
	err := s.write(ctx, "create session", func(tx *wtx) error {
		se.CreatedAt = s.timestamp()
		// Checked here rather than left to the foreign key, whose error would not say which
		// object is missing. The write lock keeps the answer true until the commit. A VM
		// being deleted (RetireVM) takes no new session: its policy is gone already, and a
		// session on it would be held to its own policy alone. Nor does a VM whose creator
		// is still storing its policy (creating), for the same reason: it is not created
		// until its policy is stored.
		if n, err := tx.network(ctx, se.Tenant, se.VMID); err != nil {
			return err
		} else if n.State == store.NetworkDeleting || n.State == store.NetworkCreating {
			return fmt.Errorf("vm %q is %s: %w", se.VMID, n.State, store.ErrNotFound)
		}
		var err error
		se.Revision, err = tx.insert(ctx, change{se.Tenant, store.KindSession, se.ID, store.OpCreate, se.CreatedAt}, row{
			table:   "sessions",
			columns: []string{"tenant", "id", "vm_id", "token_hash", "created_at"},
			values:  []any{se.Tenant, se.ID, se.VMID, se.TokenHash, s.d.TimeArg(se.CreatedAt)},
		})
		return err
	})
	if err != nil {
		return store.Session{}, err
	}
	return se, nil
}

// GetSession reads one of the tenant's sessions.
func (s *Store) GetSession(ctx context.Context, tenant, id string) (store.Session, error) {
	se, err := scanSession(s.reads.session.QueryRowContext(ctx, tenant, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Session{}, fmt.Errorf("%s: get session %q: %w", s.d.Name(), id, store.ErrNotFound)
	}
	if err != nil {
		return store.Session{}, s.wrap("get session", err)
	}
	return se, nil
}

// ListSessions lists the tenant's sessions on one VM, or on all its VMs when vmID is "",
// oldest first.
func (s *Store) ListSessions(ctx context.Context, tenant, vmID string) ([]store.Session, error) {
	if vmID == "" {
		return list(ctx, s, "list sessions", `SELECT `+sessionColumns+` FROM sessions WHERE tenant = $1 ORDER BY revision`, scanSession, tenant)
	}
	return list(ctx, s, "list sessions", `SELECT `+sessionColumns+` FROM sessions WHERE tenant = $1 AND vm_id = $2 ORDER BY revision`, scanSession, tenant, vmID)
}

// AllSessions lists every tenant's sessions, oldest first: for the gateway's view only.
func (s *Store) AllSessions(ctx context.Context) ([]store.Session, error) {
	return list(ctx, s, "all sessions", `SELECT `+sessionColumns+` FROM sessions ORDER BY revision`, scanSession)
}

// DeleteSession ends a session and deletes its policy in one transaction, logging the
// policy's deletion (if it had one) and then the session's.
func (s *Store) DeleteSession(ctx context.Context, tenant, id string) error {
	return s.write(ctx, "delete session", func(tx *wtx) error {
		n, err := tx.deleted(ctx, `DELETE FROM sessions WHERE tenant = $1 AND id = $2`, tenant, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("session %q: %w", id, store.ErrNotFound)
		}
		n, err = tx.deleted(ctx, `DELETE FROM policies WHERE tenant = $1 AND scope = 'session' AND id = $2`, tenant, id)
		if err != nil {
			return err
		}
		now := s.timestamp()
		if err := tx.deleteGrantsOf(ctx, store.KindSessionGrant, `DELETE FROM grants WHERE tenant = $1 AND scope = 'session'
				AND object_id = $2 RETURNING object_id`, tenant, id, now); err != nil {
			return err
		}
		if n > 0 {
			if _, err := tx.log(ctx, change{tenant, store.KindSessionPolicy, id, store.OpDelete, now}); err != nil {
				return err
			}
		}
		_, err = tx.log(ctx, change{tenant, store.KindSession, id, store.OpDelete, now})
		return err
	})
}

func scanSession(r scanner) (store.Session, error) {
	var se store.Session
	var created timeValue
	if err := r.Scan(&se.Tenant, &se.ID, &se.VMID, &se.TokenHash, &se.Revision, &created); err != nil {
		return store.Session{}, err
	}
	se.CreatedAt = created.t
	return se, nil
}
