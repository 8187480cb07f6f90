package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/egressd/egressd/internal/controlplane/store"
)

// readStmts are the lookups on hot paths (authenticating a request, reading a VM, a session
// or a policy), prepared once per read connection rather than parsed at every call: for
// SQLite, parsing is about a quarter of the cost of a GetPolicy.
type readStmts struct {
	keyByHash *sql.Stmt
	vm        *sql.Stmt
	session   *sql.Stmt
	policy    map[store.Scope]*sql.Stmt
}

func prepareReads(ctx context.Context, d Dialect, db *sql.DB) (*readStmts, error) {
	r := &readStmts{policy: map[store.Scope]*sql.Stmt{}}
	var errs []error
	prepare := func(query string) *sql.Stmt {
		st, err := db.PrepareContext(ctx, query)
		if err != nil {
			errs = append(errs, fmt.Errorf("prepare %q: %w", query, err))
		}
		return st
	}
	r.keyByHash = prepare(`SELECT ` + keyColumns + ` FROM api_keys WHERE hash = $1`)
	r.vm = prepare(`SELECT ` + vmColumns + ` FROM vms WHERE tenant = $1 AND id = $2`)
	r.session = prepare(`SELECT ` + sessionColumns + ` FROM sessions WHERE tenant = $1 AND id = $2`)
	for scope, q := range scopes {
		r.policy[scope] = prepare(q.get)
	}
	if err := errors.Join(errs...); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *readStmts) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{r.keyByHash, r.vm, r.session, r.policy[store.ScopeVM], r.policy[store.ScopeSession]} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}
