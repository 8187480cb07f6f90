package sqlstore

import (
	"context"
	"fmt"

	"github.com/egressd/egressd/internal/controlplane/store"
)

// ChangesSince lists up to limit changes with a revision greater than rev, oldest first. A
// reader that has applied everything up to rev calls it until it returns fewer than limit
// changes, passing the last revision it got each time. Revisions commit in order (see the
// package comment), so a change this call does not return yet will have a revision greater
// than the last one it does return.
func (s *Store) ChangesSince(ctx context.Context, rev int64, limit int) ([]store.Change, error) {
	if limit <= 0 || limit > store.MaxChanges {
		return nil, fmt.Errorf("%s: changes since %d: limit %d is outside 1..%d", s.d.Name(), rev, limit, store.MaxChanges)
	}
	return list(ctx, s, "changes since", `SELECT revision, tenant, kind, id, op, at FROM changes
		WHERE revision > $1 ORDER BY revision LIMIT $2`, scanChange, rev, limit)
}

func scanChange(r scanner) (store.Change, error) {
	var c store.Change
	var at timeValue
	err := r.Scan(&c.Revision, &c.Tenant, &c.Kind, &c.ID, &c.Op, &at)
	c.At = at.t
	return c, err
}
