package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store"
)

// NodeLister is the part of the store that knows the fleet's nodes (DESIGN §5).
type NodeLister interface {
	ListNodes(ctx context.Context) ([]store.Node, error)
	// Now is the store's clock, which stamps heartbeats: a node is judged up against it,
	// never against this process's clock.
	Now(ctx context.Context) (time.Time, error)
}

// StoreFleet is the Fleet of the nodes that heartbeat into st (package fleet).
func StoreFleet(st NodeLister) Fleet { return storeFleet{st} }

type storeFleet struct{ st NodeLister }

func (f storeFleet) Nodes(ctx context.Context) ([]NodeState, error) {
	nodes, now, err := readNodes(ctx, f.st)
	if err != nil {
		return nil, err
	}
	out := make([]NodeState, len(nodes))
	for i, n := range nodes {
		out[i] = NodeState{ID: n.ID, Roles: n.Roles, Revision: n.Revision, Up: n.Up(now)}
	}
	return out, nil
}

func readNodes(ctx context.Context, st NodeLister) ([]store.Node, time.Time, error) {
	nodes, err := st.ListNodes(ctx)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("list nodes: %w", err)
	}
	now, err := st.Now(ctx)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("the store's clock: %w", err)
	}
	return nodes, now, nil
}

// listNodes answers GET /v1/nodes (admin): every node that ever heartbeated, up or
// down. A down node keeps its VMs (a namespace cannot move hosts), so it stays listed.
func (s *Server) listNodes(w http.ResponseWriter, r *http.Request, _ store.APIKey) error {
	nodes, now, err := readNodes(r.Context(), s.store)
	if err != nil {
		return err
	}
	// The store's count rather than the heartbeat's: it holds a down node's VMs, and a VM
	// the node has not made yet.
	vms, err := s.vmsPerNode(r.Context())
	if err != nil {
		return err
	}
	out := client.NodeList{Nodes: make([]client.Node, 0, len(nodes))}
	for _, n := range nodes {
		state := "down"
		if n.Up(now) {
			state = "up"
		}
		out.Nodes = append(out.Nodes, client.Node{
			ID: n.ID, Roles: slices.Clone(n.Roles), Address: n.Address, Labels: n.Labels, SandboxCIDR: n.SandboxCIDR,
			LastHeartbeat: n.Heartbeat.UTC(), Revision: n.Revision, VMs: vms[n.ID], State: state,
		})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
