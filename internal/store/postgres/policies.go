package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/egressd/egressd/internal/store"
	"github.com/egressd/egressd/policy"
)

// scopeSQL is the SQL that differs between the scopes: which table holds the object that a
// policy is attached to. The strings are constants, so no SQL is ever built from input.
type scopeSQL struct {
	kind string // change-log kind
	// objectExists: SELECT EXISTS, args tenant, id.
	objectExists string
	// beforePut: does the object exist, and has it a policy already; args tenant, id.
	beforePut string
	// get: one row if the object exists, with NULL policy columns if it has no policy;
	// args tenant, id.
	get string
}

func scopeQueries(scope store.Scope) (scopeSQL, error) {
	switch scope {
	case store.ScopeVM:
		return scopeSQL{
			kind:         store.KindVMPolicy,
			objectExists: `SELECT EXISTS (SELECT 1 FROM vms WHERE tenant = $1 AND id = $2)`,
			beforePut: `SELECT EXISTS (SELECT 1 FROM vms WHERE tenant = $1 AND id = $2),
				EXISTS (SELECT 1 FROM policies WHERE tenant = $1 AND scope = 'vm' AND id = $2)`,
			get: `SELECT p.policy, p.revision, p.updated_at FROM vms o
				LEFT JOIN policies p ON p.tenant = o.tenant AND p.scope = 'vm' AND p.id = o.id
				WHERE o.tenant = $1 AND o.id = $2`,
		}, nil
	case store.ScopeSession:
		return scopeSQL{
			kind:         store.KindSessionPolicy,
			objectExists: `SELECT EXISTS (SELECT 1 FROM sessions WHERE tenant = $1 AND id = $2)`,
			beforePut: `SELECT EXISTS (SELECT 1 FROM sessions WHERE tenant = $1 AND id = $2),
				EXISTS (SELECT 1 FROM policies WHERE tenant = $1 AND scope = 'session' AND id = $2)`,
			get: `SELECT p.policy, p.revision, p.updated_at FROM sessions o
				LEFT JOIN policies p ON p.tenant = o.tenant AND p.scope = 'session' AND p.id = o.id
				WHERE o.tenant = $1 AND o.id = $2`,
		}, nil
	}
	return scopeSQL{}, fmt.Errorf("unknown policy scope %q", scope)
}

// PutPolicy replaces the policy of one of the tenant's sessions or VMs, setting Revision and
// UpdatedAt. The change is logged as a create or a replace.
func (s *Store) PutPolicy(ctx context.Context, r store.PolicyRecord) (store.PolicyRecord, error) {
	q, err := scopeQueries(r.Scope)
	if err != nil {
		return store.PolicyRecord{}, fmt.Errorf("postgres: put policy: %w", err)
	}
	doc, err := json.Marshal(r.Policy)
	if err != nil {
		return store.PolicyRecord{}, fmt.Errorf("postgres: put policy: encode: %w", err)
	}
	err = s.write(ctx, "put policy", func(tx *wtx) error {
		r.UpdatedAt = s.timestamp()
		var found, replace bool
		if err := tx.QueryRow(ctx, q.beforePut, r.Tenant, r.ID).Scan(&found, &replace); err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("%s %q: %w", r.Scope, r.ID, store.ErrNotFound)
		}
		op := store.OpCreate
		if replace {
			op = store.OpReplace
		}
		var err error
		r.Revision, err = tx.logged(ctx, change{r.Tenant, q.kind, r.ID, op, r.UpdatedAt},
			`INSERT INTO policies (tenant, scope, id, policy, revision, updated_at)
			SELECT $1, $6, $3, $7, revision, $5 FROM c
			ON CONFLICT (tenant, scope, id) DO UPDATE
			SET policy = excluded.policy, revision = excluded.revision, updated_at = excluded.updated_at`,
			string(r.Scope), string(doc))
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
	q, err := scopeQueries(scope)
	if err != nil {
		return store.PolicyRecord{}, fmt.Errorf("postgres: get policy: %w", err)
	}
	var doc []byte
	var rev *int64
	var updated *time.Time
	err = s.pool.QueryRow(ctx, q.get, tenant, id).Scan(&doc, &rev, &updated)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return store.PolicyRecord{}, fmt.Errorf("postgres: get policy: %s %q: %w", scope, id, store.ErrNotFound)
	case err != nil:
		return store.PolicyRecord{}, wrap("get policy", err)
	case doc == nil || rev == nil || updated == nil:
		return store.PolicyRecord{}, fmt.Errorf("postgres: get policy: %s %q: %w", scope, id, store.ErrNoPolicy)
	}
	p, err := decodePolicy(doc)
	if err != nil {
		return store.PolicyRecord{}, fmt.Errorf("postgres: get policy: %s %q: %w", scope, id, err)
	}
	return store.PolicyRecord{
		Tenant:    tenant,
		Scope:     scope,
		ID:        id,
		Policy:    p,
		Revision:  *rev,
		UpdatedAt: updated.UTC(),
	}, nil
}

// decodePolicy reads a stored policy strictly. A field this binary does not know can only
// come from a newer egressd, and ignoring it might ignore a restriction: failing is the safe
// way to be wrong for a firewall.
func decodePolicy(doc []byte) (policy.Policy, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
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
		return fmt.Errorf("postgres: delete policy: %w", err)
	}
	return s.write(ctx, "delete policy", func(tx *wtx) error {
		ok, err := tx.exists(ctx, q.objectExists, tenant, id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s %q: %w", scope, id, store.ErrNotFound)
		}
		tag, err := tx.Exec(ctx, `DELETE FROM policies WHERE tenant = $1 AND scope = $2 AND id = $3`, tenant, string(scope), id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%s %q: %w", scope, id, store.ErrNoPolicy)
		}
		_, err = tx.logChange(ctx, tenant, q.kind, id, store.OpDelete, s.timestamp())
		return err
	})
}
