package main

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/egressd/egressd/internal/controlplane/api"
	"github.com/egressd/egressd/internal/controlplane/store"
)

// checkSandboxRange refuses a transparent node whose --sandbox-cidr overlaps the range of
// another registered node, up or down (DESIGN §5): a down node keeps its VMs and their
// addresses, and two gateways handing out one address would make two sandboxes one in every
// decision record and every rule that names an address.
func checkSandboxRange(ctx context.Context, st interface {
	ListNodes(context.Context) ([]store.Node, error)
}, cfg *config) error {
	nodes, err := st.ListNodes(ctx)
	if err != nil {
		return fmt.Errorf("--sandbox-cidr: reading the fleet's nodes to check for overlaps: %w", err)
	}
	for _, n := range nodes {
		if n.ID == cfg.nodeID || n.SandboxCIDR == "" {
			continue
		}
		other, err := netip.ParsePrefix(n.SandboxCIDR)
		if err != nil {
			continue // not this node's to judge; it was checked when that node started
		}
		if other.Overlaps(cfg.sandboxCIDR) {
			return fmt.Errorf("--sandbox-cidr %s of node %q overlaps %s of node %q: every transparent node takes sandbox addresses from a range of its own; give node %q a range that no other node uses",
				cfg.sandboxCIDR, cfg.nodeID, other, n.ID, cfg.nodeID)
		}
	}
	return nil
}

// kickOnProgress calls kick each time e enforces a revision newer than the last it reported
// (revision), until ctx ends: a node then heartbeats the moment it has applied a write,
// rather than up to a heartbeat interval later.
func kickOnProgress(ctx context.Context, e api.Enforcer, revision func() int64, kick func()) {
	for {
		if err := e.WaitRevision(ctx, revision()+1); err != nil {
			return
		}
		kick()
	}
}
