package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/egressd/egressd/internal/controlplane/store"
)

// scopeSQL is the SQL that differs between the scopes: which table holds the object that a
// policy is attached to. It is built once, from constants, so no SQL is ever built from input.
type scopeSQL struct {
	kind string // change-log kind
	// objectExists: SELECT EXISTS, args tenant, id.
	objectExists string
	// beforePut: does the object exist, and has it a policy already; args tenant, id.
	beforePut string
	// get: one row if the object exists, with NULL policy columns if it has no policy;
	// args tenant, id. Prepared once, in readStmts.
	get string
	// grants: one row per active grant of the object, or one row of NULLs if it has none,
	// no row if the object does not exist; args tenant, id, now. Ordered oldest first.
	grants string
}

var scopes = map[store.Scope]scopeSQL{
	store.ScopeVM:      scopeQueriesFor(store.ScopeVM, store.KindVMPolicy, "vms"),
	store.ScopeSession: scopeQueriesFor(store.ScopeSession, store.KindSessionPolicy, "sessions"),
}

func scopeQueriesFor(scope store.Scope, kind, table string) scopeSQL {
	objectExists := `SELECT EXISTS (SELECT 1 FROM ` + table + ` WHERE tenant = $1 AND id = $2)`
	return scopeSQL{
		kind:         kind,
		objectExists: objectExists,
		beforePut: objectExists + `,
			EXISTS (SELECT 1 FROM policies WHERE tenant = $1 AND scope = '` + string(scope) + `' AND id = $2)`,
		get: `SELECT p.policy, p.revision, p.updated_at FROM ` + table + ` o
			LEFT JOIN policies p ON p.tenant = o.tenant AND p.scope = '` + string(scope) + `' AND p.id = o.id
			WHERE o.tenant = $1 AND o.id = $2`,
		grants: `SELECT g.id, g.domains, g.tcp, g.cidrs, g.note, g.revision, g.created_at, g.expires_at FROM ` + table + ` o
			LEFT JOIN grants g ON g.tenant = o.tenant AND g.scope = '` + string(scope) + `' AND g.object_id = o.id AND g.expires_at > $3
			WHERE o.tenant = $1 AND o.id = $2 ORDER BY g.revision`,
	}
}

func scopeQueries(scope store.Scope) (scopeSQL, error) {
	q, ok := scopes[scope]
	if !ok {
		return scopeSQL{}, fmt.Errorf("unknown policy scope %q", scope)
	}
	return q, nil
}

// PutPolicy replaces the policy of one of the tenant's sessions or VMs, setting Revision and
// UpdatedAt. The change is logged as a create or a replace.
func (s *Store) PutPolicy(ctx context.Context, r store.PolicyRecord) (store.PolicyRecord, error) {
	q, err := scopeQueries(r.Scope)
	if err != nil {
		return store.PolicyRecord{}, fmt.Errorf("%s: put policy: %w", s.d.Name(), err)
	}
	doc, err := json.Marshal(r.Policy)
	if err != nil {
		return store.PolicyRecord{}, fmt.Errorf("%s: put policy: encode: %w", s.d.Name(), err)
	}
	err = s.write(ctx, "put policy", func(tx *wtx) error {
		r.UpdatedAt = s.timestamp()
		var found, replace bool
		if err := tx.QueryRowContext(ctx, q.beforePut, r.Tenant, r.ID).Scan(&found, &replace); err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("%s %q: %w", r.Scope, r.ID, store.ErrNotFound)
		}
		if r.Scope == store.ScopeVM {
			// A VM being deleted (RetireVM) takes no new policy: it is gone for its tenant.
			if n, err := tx.network(ctx, r.Tenant, r.ID); err != nil {
				return err
			} else if n.State == store.NetworkDeleting {
				return fmt.Errorf("vm %q is being deleted: %w", r.ID, store.ErrNotFound)
			}
		}
		op := store.OpCreate
		if replace {
			op = store.OpReplace
		}
		var err error
		r.Revision, err = tx.insert(ctx, change{r.Tenant, q.kind, r.ID, op, r.UpdatedAt}, row{
			table:   "policies",
			columns: []string{"tenant", "scope", "id", "policy", "updated_at"},
			values:  []any{r.Tenant, string(r.Scope), r.ID, string(doc), s.d.TimeArg(r.UpdatedAt)},
			onConflict: `ON CONFLICT (tenant, scope, id) DO UPDATE
				SET policy = excluded.policy, revision = excluded.revision, updated_at = excluded.updated_at`,
		})
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
		return store.PolicyRecord{}, fmt.Errorf("%s: get policy: unknown policy scope %q", s.d.Name(), scope)
	}
	var doc []byte
	var rev sql.NullInt64
	var updated timeValue
	err := stmt.QueryRowContext(ctx, tenant, id).Scan(&doc, &rev, &updated)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.PolicyRecord{}, fmt.Errorf("%s: get policy: %s %q: %w", s.d.Name(), scope, id, store.ErrNotFound)
	case err != nil:
		return store.PolicyRecord{}, s.wrap("get policy", err)
	case doc == nil || !rev.Valid || !updated.valid:
		return store.PolicyRecord{}, fmt.Errorf("%s: get policy: %s %q: %w", s.d.Name(), scope, id, store.ErrNoPolicy)
	}
	p, err := decodePolicy(doc)
	if err != nil {
		return store.PolicyRecord{}, fmt.Errorf("%s: get policy: %s %q: %w", s.d.Name(), scope, id, err)
	}
	return store.PolicyRecord{
		Tenant:    tenant,
		Scope:     scope,
		ID:        id,
		Policy:    p,
		Revision:  rev.Int64,
		UpdatedAt: updated.t,
	}, nil
}

// DeletePolicy clears the policy of one of the tenant's sessions or VMs.
func (s *Store) DeletePolicy(ctx context.Context, tenant string, scope store.Scope, id string) error {
	q, err := scopeQueries(scope)
	if err != nil {
		return fmt.Errorf("%s: delete policy: %w", s.d.Name(), err)
	}
	return s.write(ctx, "delete policy", func(tx *wtx) error {
		ok, err := tx.exists(ctx, q.objectExists, tenant, id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s %q: %w", scope, id, store.ErrNotFound)
		}
		n, err := tx.deleted(ctx, `DELETE FROM policies WHERE tenant = $1 AND scope = $2 AND id = $3`, tenant, string(scope), id)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%s %q: %w", scope, id, store.ErrNoPolicy)
		}
		_, err = tx.log(ctx, change{tenant, q.kind, id, store.OpDelete, s.timestamp()})
		return err
	})
}
