package sqlite

import (
	"context"
	"fmt"

	"github.com/egressd/egressd/internal/store"
)

// MaxChanges is the most changes one ChangesSince call returns.
const MaxChanges = store.MaxChanges

// ChangesSince lists up to limit changes with a revision greater than rev, oldest first. A
// reader that has applied everything up to rev calls it until it returns fewer than limit
// changes, passing the last revision it got each time.
func (s *Store) ChangesSince(ctx context.Context, rev int64, limit int) ([]store.Change, error) {
	if limit <= 0 || limit > MaxChanges {
		return nil, fmt.Errorf("sqlite: changes since %d: limit %d is outside 1..%d", rev, limit, MaxChanges)
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT revision, tenant, kind, id, op, at FROM changes
		WHERE revision > ? ORDER BY revision LIMIT ?`, rev, limit)
	if err != nil {
		return nil, wrap("changes since", err)
	}
	defer rows.Close()
	changes := []store.Change{}
	for rows.Next() {
		var c store.Change
		var at int64
		if err := rows.Scan(&c.Revision, &c.Tenant, &c.Kind, &c.ID, &c.Op, &at); err != nil {
			return nil, wrap("changes since", err)
		}
		c.At = fromNanos(at)
		changes = append(changes, c)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("changes since", err)
	}
	return changes, nil
}
