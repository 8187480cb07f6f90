package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
)

// CreateGrant stores a new grant on one of the tenant's sessions or VMs, setting Revision,
// CreatedAt and ExpiresAt. It is logged under the object's ID (store.GrantKind), so that a
// view refreshes that layer as it does for a policy write.
func (s *Store) CreateGrant(ctx context.Context, g store.Grant, ttl time.Duration) (store.Grant, error) {
	if ttl < store.MinGrantTTL || ttl > store.MaxGrantTTL {
		return store.Grant{}, fmt.Errorf("%s: create grant: ttl %v is outside %v..%v", s.d.Name(), ttl, store.MinGrantTTL, store.MaxGrantTTL)
	}
	q, err := scopeQueries(g.Scope)
	if err != nil {
		return store.Grant{}, fmt.Errorf("%s: create grant: %w", s.d.Name(), err)
	}
	lists := make([]string, 3)
	for i, l := range [][]string{g.Domains, g.TCP, g.CIDRs} {
		if lists[i], err = encodeDomains(l); err != nil {
			return store.Grant{}, fmt.Errorf("%s: create grant: %w", s.d.Name(), err)
		}
	}
	err = s.write(ctx, "create grant", func(tx *wtx) error {
		ok, err := tx.exists(ctx, q.objectExists, g.Tenant, g.ObjectID)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s %q: %w", g.Scope, g.ObjectID, store.ErrNotFound)
		}
		if g.Scope == store.ScopeVM {
			// As for a policy: a VM being deleted is gone for its tenant, and one being
			// created takes no grant before its policy is stored.
			if n, err := tx.network(ctx, g.Tenant, g.ObjectID); err != nil {
				return err
			} else if n.State == store.NetworkDeleting || n.State == store.NetworkCreating {
				return fmt.Errorf("vm %q is %s: %w", g.ObjectID, n.State, store.ErrNotFound)
			}
		}
		g.CreatedAt = s.timestamp()
		g.ExpiresAt = s.stamp(g.CreatedAt.Add(ttl))
		var active int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM grants WHERE tenant = $1 AND scope = $2 AND object_id = $3 AND expires_at > $4`,
			g.Tenant, string(g.Scope), g.ObjectID, s.d.TimeArg(g.CreatedAt)).Scan(&active); err != nil {
			return err
		}
		if active >= store.MaxGrantsPerObject {
			return fmt.Errorf("%s %q has %d active grants, the most it may have: %w", g.Scope, g.ObjectID, active, store.ErrTooMany)
		}
		g.Revision, err = tx.insert(ctx, change{g.Tenant, store.GrantKind(g.Scope), g.ObjectID, store.OpCreate, g.CreatedAt}, row{
			table:   "grants",
			columns: []string{"tenant", "id", "scope", "object_id", "domains", "tcp", "cidrs", "note", "created_at", "expires_at"},
			values: []any{g.Tenant, g.ID, string(g.Scope), g.ObjectID, lists[0], lists[1], lists[2], g.Note,
				s.d.TimeArg(g.CreatedAt), s.d.TimeArg(g.ExpiresAt)},
		})
		return err
	})
	if err != nil {
		return store.Grant{}, err
	}
	g.Domains, g.TCP, g.CIDRs = orEmpty(g.Domains), orEmpty(g.TCP), orEmpty(g.CIDRs)
	return g, nil
}

func orEmpty(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// ListGrants lists the active grants of one of the tenant's sessions or VMs, oldest first.
// One statement answers both questions (is the object there, which grants has it) from one
// snapshot, as GetPolicy does: every compile of a layer asks it.
func (s *Store) ListGrants(ctx context.Context, tenant string, scope store.Scope, id string, now time.Time) ([]store.Grant, error) {
	q, err := scopeQueries(scope)
	if err != nil {
		return nil, fmt.Errorf("%s: list grants: %w", s.d.Name(), err)
	}
	rows, err := s.reader.QueryContext(ctx, q.grants, tenant, id, s.d.TimeArg(now))
	if err != nil {
		return nil, s.wrap("list grants", err)
	}
	defer rows.Close()
	found := false
	out := []store.Grant{}
	for rows.Next() {
		found = true
		var gid sql.NullString
		var note sql.NullString
		var rev sql.NullInt64
		var domains, tcp, cidrs []byte
		var created, expires timeValue
		if err := rows.Scan(&gid, &domains, &tcp, &cidrs, &note, &rev, &created, &expires); err != nil {
			return nil, s.wrap("list grants", err)
		}
		if !gid.Valid {
			continue // the object, without grants
		}
		g := store.Grant{Tenant: tenant, ID: gid.String, Scope: scope, ObjectID: id, Note: note.String, Revision: rev.Int64,
			CreatedAt: created.t, ExpiresAt: expires.t}
		if err := decodeEntries(&g, domains, tcp, cidrs); err != nil {
			return nil, s.wrap("list grants", err)
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap("list grants", err)
	}
	if !found {
		return nil, fmt.Errorf("%s: list grants: %s %q: %w", s.d.Name(), scope, id, store.ErrNotFound)
	}
	return out, nil
}

// DeleteGrant revokes one grant of one of the tenant's sessions or VMs.
func (s *Store) DeleteGrant(ctx context.Context, tenant string, scope store.Scope, id, grantID string) error {
	if _, err := scopeQueries(scope); err != nil {
		return fmt.Errorf("%s: delete grant: %w", s.d.Name(), err)
	}
	return s.write(ctx, "delete grant", func(tx *wtx) error {
		n, err := tx.deleted(ctx, `DELETE FROM grants WHERE tenant = $1 AND scope = $2 AND object_id = $3 AND id = $4`,
			tenant, string(scope), id, grantID)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("grant %q of %s %q: %w", grantID, scope, id, store.ErrNotFound)
		}
		_, err = tx.log(ctx, change{tenant, store.GrantKind(scope), id, store.OpDelete, s.timestamp()})
		return err
	})
}

// SweepGrants deletes the grants that expired at or before now, logging one change per
// session or VM that lost some.
func (s *Store) SweepGrants(ctx context.Context, now time.Time) (int, error) {
	var swept int
	err := s.write(ctx, "sweep grants", func(tx *wtx) error {
		rows, err := tx.QueryContext(ctx, `DELETE FROM grants WHERE expires_at <= $1 RETURNING tenant, scope, object_id`, s.d.TimeArg(now))
		if err != nil {
			return err
		}
		var owners []change
		for rows.Next() {
			var c change
			var scope string
			if err := rows.Scan(&c.tenant, &scope, &c.id); err != nil {
				rows.Close()
				return err
			}
			c.kind = store.GrantKind(store.Scope(scope))
			owners = append(owners, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		swept = len(owners)
		// RETURNING has no defined order: keep the log deterministic, one entry per object.
		slices.SortFunc(owners, func(a, b change) int { return compareChange(a, b) })
		owners = slices.CompactFunc(owners, func(a, b change) bool { return compareChange(a, b) == 0 })
		at := s.timestamp()
		for _, c := range owners {
			c.op, c.at = store.OpDelete, at
			if _, err := tx.log(ctx, c); err != nil {
				return err
			}
		}
		return nil
	})
	return swept, err
}

func compareChange(a, b change) int {
	switch {
	case a.tenant != b.tenant:
		return cmpString(a.tenant, b.tenant)
	case a.kind != b.kind:
		return cmpString(a.kind, b.kind)
	}
	return cmpString(a.id, b.id)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// deleteGrantsOf deletes the grants that the query selects (by tenant $1 and object $2) and
// logs one change of kind per object that had some.
func (w *wtx) deleteGrantsOf(ctx context.Context, kind, query, tenant, id string, at time.Time) error {
	owners, err := w.ids(ctx, query, tenant, id)
	if err != nil {
		return err
	}
	slices.Sort(owners)
	return w.logDeletes(ctx, tenant, kind, slices.Compact(owners), at)
}

// decodeEntries reads a grant's JSON lists into g.
func decodeEntries(g *store.Grant, domains, tcp, cidrs []byte) error {
	for _, f := range []struct {
		doc []byte
		to  *[]string
	}{{domains, &g.Domains}, {tcp, &g.TCP}, {cidrs, &g.CIDRs}} {
		if err := json.Unmarshal(f.doc, f.to); err != nil {
			return fmt.Errorf("grant %q: decode entries: %w", g.ID, err)
		}
		*f.to = orEmpty(*f.to)
	}
	return nil
}
