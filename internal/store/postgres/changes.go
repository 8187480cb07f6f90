package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/egressd/egressd/internal/store"
)

// ChangesSince lists up to limit changes with a revision greater than rev, oldest first. A
// reader that has applied everything up to rev calls it until it returns fewer than limit
// changes, passing the last revision it got each time. Revisions commit in order (see the
// package comment), so a change this call does not return yet will have a revision greater
// than the last one it does return.
func (s *Store) ChangesSince(ctx context.Context, rev int64, limit int) ([]store.Change, error) {
	if limit <= 0 || limit > store.MaxChanges {
		return nil, fmt.Errorf("postgres: changes since %d: limit %d is outside 1..%d", rev, limit, store.MaxChanges)
	}
	rows, err := s.pool.Query(ctx, `SELECT revision, tenant, kind, id, op, at FROM changes
		WHERE revision > $1 ORDER BY revision LIMIT $2`, rev, limit)
	if err != nil {
		return nil, wrap("changes since", err)
	}
	changes, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Change, error) {
		var c store.Change
		var at time.Time
		err := r.Scan(&c.Revision, &c.Tenant, &c.Kind, &c.ID, &c.Op, &at)
		c.At = at.UTC()
		return c, err
	})
	if err != nil {
		return nil, wrap("changes since", err)
	}
	return nonNil(changes), nil
}
