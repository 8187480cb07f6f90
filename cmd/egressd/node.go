package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

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
		if other == cfg.sandboxCIDR {
			// The same range: most likely this host under another ID (its host name
			// changed, or --node-id did). A new range would leave that node's VMs behind
			// for good; its own ID brings them back (docs/fleet.md).
			return fmt.Errorf("--sandbox-cidr %s of node %q is the range of node %q: if this host ran as node %q before, start it with --node-id %s again "+
				"(under another ID it cannot serve or delete that node's VMs); otherwise give node %q a range that no other node uses",
				cfg.sandboxCIDR, cfg.nodeID, n.ID, n.ID, n.ID, cfg.nodeID)
		}
		if other.Overlaps(cfg.sandboxCIDR) {
			return fmt.Errorf("--sandbox-cidr %s of node %q overlaps %s of node %q: every transparent node takes sandbox addresses from a range of its own; give node %q a range that no other node uses",
				cfg.sandboxCIDR, cfg.nodeID, other, n.ID, cfg.nodeID)
		}
	}
	return nil
}

// waitReporter makes a gateway node heartbeat as soon as it enforces a revision that an API
// node waits for (api.Announcer): a write with ?wait=fleet, or a VM's creation waiting for its
// node. Writes nobody waits for cost no heartbeat beyond the one a second.
//
// An announcement is trusted for nothing but that heartbeat: any client of the database may
// send one. A revision that is not enforced within giveUp (one that never comes, or a view
// that lags) is forgotten, so that it never keeps the node from reporting the waits after it.
type waitReporter struct {
	node   string
	giveUp time.Duration // api.DefaultNetworkWait: no API node waits longer
	mu     sync.Mutex
	want   int64         // the highest revision waited for
	signal chan struct{} // a new want; buffered, never blocks
}

func newWaitReporter(node string) *waitReporter {
	return &waitReporter{node: node, giveUp: api.DefaultNetworkWait, signal: make(chan struct{}, 1)}
}

// Wanted records that revision rev is waited for by node ("" for every node); it never
// blocks (postgres.Handlers.Wanted).
func (r *waitReporter) Wanted(rev int64, node string) {
	if node != "" && node != r.node {
		return
	}
	r.mu.Lock()
	r.want = max(r.want, rev)
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// run calls kick each time e enforces the highest revision waited for, until ctx ends.
func (r *waitReporter) run(ctx context.Context, e api.Enforcer, kick func()) {
	var done int64
	for {
		r.mu.Lock()
		want := r.want
		r.mu.Unlock()
		if want <= done {
			select {
			case <-ctx.Done():
				return
			case <-r.signal:
			}
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, r.giveUp)
		err := e.WaitRevision(wctx, want)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// Whoever waited has given up by now: forget the revision (and the waits it
			// took in), and serve those announced from now on.
			r.mu.Lock()
			if r.want == want {
				r.want = done
			}
			r.mu.Unlock()
			continue
		}
		kick()
		done = want
	}
}
