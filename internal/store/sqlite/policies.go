package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/egressd/egressd/internal/store"
	"github.com/egressd/egressd/policy"
)

// scopeSQL is the SQL that differs between the scopes: which table holds the object that a
// policy is attached to. The strings are constants, so no SQL is ever built from input.
type scopeSQL struct {
	kind string // change-log kind
	// objectExists: SELECT EXISTS, args tenant, id.
	objectExists string
	// get: one row if the object exists, with NULL policy columns if it has no policy;
	// args tenant, id. Prepared once, in readStmts.
	get string
}

func scopeQueries(scope store.Scope) (scopeSQL, error) {
	switch scope {
	case store.ScopeVM:
		return scopeSQL{
			kind:         store.KindVMPolicy,
			objectExists: `SELECT EXISTS (SELECT 1 FROM vms WHERE tenant = ? AND id = ?)`,
			get: `SELECT p.policy, p.revision, p.updated_at FROM vms o
				LEFT JOIN policies p ON p.tenant = o.tenant AND p.scope = 'vm' AND p.id = o.id
				WHERE o.tenant = ? AND o.id = ?`,
		}, nil
	case store.ScopeSession:
		return scopeSQL{
			kind:         store.KindSessionPolicy,
			objectExists: `SELECT EXISTS (SELECT 1 FROM sessions WHERE tenant = ? AND id = ?)`,
			get: `SELECT p.policy, p.revision, p.updated_at FROM sessions o
				LEFT JOIN policies p ON p.tenant = o.tenant AND p.scope = 'session' AND p.id = o.id
				WHERE o.tenant = ? AND o.id = ?`,
		}, nil
	}
	return scopeSQL{}, fmt.Errorf("unknown policy scope %q", scope)
}

// PutPolicy replaces the policy of one of the tenant's sessions or VMs, setting Revision and
// UpdatedAt. The change is logged as a create or a replace.
func (s *Store) PutPolicy(ctx context.Context, r store.PolicyRecord) (store.PolicyRecord, error) {
	q, err := scopeQueries(r.Scope)
	if err != nil {
		return store.PolicyRecord{}, fmt.Errorf("sqlite: put policy: %w", err)
	}
	doc, err := json.Marshal(r.Policy)
	if err != nil {
		return store.PolicyRecord{}, fmt.Errorf("sqlite: put policy: encode: %w", err)
	}
	err = s.write(ctx, "put policy", func(tx *sql.Tx) error {
		r.UpdatedAt = s.timestamp()
		ok, err := exists(ctx, tx, q.objectExists, r.Tenant, r.ID)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s %q: %w", r.Scope, r.ID, store.ErrNotFound)
		}
		replace, err := exists(ctx, tx, `SELECT EXISTS (SELECT 1 FROM policies WHERE tenant = ? AND scope = ? AND id = ?)`,
			r.Tenant, string(r.Scope), r.ID)
		if err != nil {
			return err
		}
		op := store.OpCreate
		if replace {
			op = store.OpReplace
		}
		rev, err := logChange(ctx, tx, r.Tenant, q.kind, r.ID, op, r.UpdatedAt)
		if err != nil {
			return err
		}
		r.Revision = rev
		_, err = tx.ExecContext(ctx, `INSERT INTO policies (tenant, scope, id, policy, revision, updated_at)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (tenant, scope, id) DO UPDATE
			SET policy = excluded.policy, revision = excluded.revision, updated_at = excluded.updated_at`,
			r.Tenant, string(r.Scope), r.ID, string(doc), r.Revision, r.UpdatedAt.UnixNano())
		return err
	})
	if err != nil {
		return store.PolicyRecord{}, err
	}
	return r, nil
}

// GetPolicy reads the policy of one of the tenant's sessions or VMs. One statement answers
// both questions (is the object there, has it a policy) from one snapshot of the database.
func (s *Store) GetPolicy(ctx context.Context, tenant string, scope store.Scope, id string) (store.PolicyRecord, error) {
	stmt := s.reads.policy[scope]
	if stmt == nil {
		return store.PolicyRecord{}, fmt.Errorf("sqlite: get policy: unknown policy scope %q", scope)
	}
	var doc sql.NullString
	var rev, updated sql.NullInt64
	err := stmt.QueryRowContext(ctx, tenant, id).Scan(&doc, &rev, &updated)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.PolicyRecord{}, fmt.Errorf("sqlite: get policy: %s %q: %w", scope, id, store.ErrNotFound)
	case err != nil:
		return store.PolicyRecord{}, wrap("get policy", err)
	case !doc.Valid:
		return store.PolicyRecord{}, fmt.Errorf("sqlite: get policy: %s %q: %w", scope, id, store.ErrNoPolicy)
	}
	p, err := decodePolicy(doc.String)
	if err != nil {
		return store.PolicyRecord{}, fmt.Errorf("sqlite: get policy: %s %q: %w", scope, id, err)
	}
	return store.PolicyRecord{
		Tenant:    tenant,
		Scope:     scope,
		ID:        id,
		Policy:    p,
		Revision:  rev.Int64,
		UpdatedAt: fromNanos(updated.Int64),
	}, nil
}

// decodePolicy reads a stored policy strictly. A field this binary does not know can only
// come from a newer egressd, and ignoring it might ignore a restriction: failing is the safe
// way to be wrong for a firewall.
func decodePolicy(doc string) (policy.Policy, error) {
	dec := json.NewDecoder(bytes.NewReader([]byte(doc)))
	dec.DisallowUnknownFields()
	var p policy.Policy
	if err := dec.Decode(&p); err != nil {
		return policy.Policy{}, fmt.Errorf("decode stored policy: %w", err)
	}
	return p, nil
}

// DeletePolicy clears the policy of one of the tenant's sessions or VMs.
func (s *Store) DeletePolicy(ctx context.Context, tenant string, scope store.Scope, id string) error {
	q, err := scopeQueries(scope)
	if err != nil {
		return fmt.Errorf("sqlite: delete policy: %w", err)
	}
	return s.write(ctx, "delete policy", func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, q.objectExists, tenant, id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s %q: %w", scope, id, store.ErrNotFound)
		}
		n, err := deleteRows(ctx, tx, `DELETE FROM policies WHERE tenant = ? AND scope = ? AND id = ?`, tenant, string(scope), id)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%s %q: %w", scope, id, store.ErrNoPolicy)
		}
		_, err = logChange(ctx, tx, tenant, q.kind, id, store.OpDelete, s.timestamp())
		return err
	})
}
