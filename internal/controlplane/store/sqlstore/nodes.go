package sqlstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/egressd/egressd/internal/controlplane/store"
)

const nodeColumns = `id, roles, address, labels, applied_revision, vms, heartbeat, sandbox_cidr, instance`

// PutNode registers n or replaces its registration, with the store's Now as its heartbeat.
//
// It is a single upsert outside the write lock and the change log: a heartbeat concerns no
// other row, so it needs no lock to stay true, and it must neither wait for policy writes nor
// wake the views that follow the log. Where the store's clock is the database server's, the
// upsert reads it itself (Dialect.NowSQL): one round trip a heartbeat, not two, which halves
// what a fleet's heartbeats cost the server (docs/fleet.md has figures).
func (s *Store) PutNode(ctx context.Context, n store.Node) error {
	if n.ID == "" {
		return fmt.Errorf("%s: put node: the node's ID is empty; every node needs one", s.d.Name())
	}
	// Stored as [] and {} rather than null, so that they read back as empty, never nil.
	if n.Roles == nil {
		n.Roles = []string{}
	}
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	roles, rerr := json.Marshal(n.Roles)
	labels, lerr := json.Marshal(n.Labels)
	if err := errors.Join(rerr, lerr); err != nil {
		return fmt.Errorf("%s: put node %q: encode: %w", s.d.Name(), n.ID, err)
	}
	args := []any{n.ID, string(roles), n.Address, string(labels), n.Revision, n.VMs, n.SandboxCIDR, n.Instance}
	heartbeat := s.d.NowSQL()
	if heartbeat == "" {
		now, err := s.Now(ctx)
		if err != nil {
			return err
		}
		heartbeat = "$9"
		args = append(args, s.d.TimeArg(now))
	}
	_, err := s.writer.ExecContext(ctx, `INSERT INTO nodes (`+nodeColumns+`) VALUES ($1, $2, $3, $4, $5, $6, `+heartbeat+`, $7, $8)
		ON CONFLICT (id) DO UPDATE SET roles = excluded.roles, address = excluded.address,
			labels = excluded.labels, applied_revision = excluded.applied_revision, vms = excluded.vms,
			heartbeat = excluded.heartbeat, sandbox_cidr = excluded.sandbox_cidr, instance = excluded.instance`, args...)
	if err != nil {
		return s.wrap(fmt.Sprintf("put node %q", n.ID), err)
	}
	return nil
}

// ListNodes lists every registered node, by ID in byte order. (Sorted here rather than by
// ORDER BY, whose order of text follows the database's collation.)
func (s *Store) ListNodes(ctx context.Context) ([]store.Node, error) {
	nodes, err := list(ctx, s, "list nodes", `SELECT `+nodeColumns+` FROM nodes`, scanNode)
	slices.SortFunc(nodes, func(a, b store.Node) int { return cmp.Compare(a.ID, b.ID) })
	return nodes, err
}

func scanNode(r scanner) (store.Node, error) {
	var n store.Node
	var roles, labels []byte
	var heartbeat timeValue
	if err := r.Scan(&n.ID, &roles, &n.Address, &labels, &n.Revision, &n.VMs, &heartbeat, &n.SandboxCIDR, &n.Instance); err != nil {
		return store.Node{}, err
	}
	err := errors.Join(json.Unmarshal(roles, &n.Roles), json.Unmarshal(labels, &n.Labels))
	if err != nil {
		return store.Node{}, fmt.Errorf("node %q: decode roles and labels: %w", n.ID, err)
	}
	n.Heartbeat = heartbeat.t
	return n, nil
}
