package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
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

// StoreFleet is the Fleet of the nodes that heartbeat into st (package fleet). Concurrent
// callers share reads: every write waiting with ?wait=fleet polls the fleet, and with many
// nodes a read costs milliseconds, so one read at a time serves them all.
func StoreFleet(st NodeLister) Fleet { return &storeFleet{st: st} }

type storeFleet struct {
	st NodeLister

	mu       sync.Mutex
	last     []NodeState
	lastAt   time.Time     // when the read that gave last began
	inflight chan struct{} // closed when the read under way ends; nil when none is
}

// Nodes answers from a read that began after the call did, so that the answer is never older
// than the question: the read under way if it began since, else a new one.
func (f *storeFleet) Nodes(ctx context.Context) ([]NodeState, error) {
	asked := time.Now()
	for {
		f.mu.Lock()
		if !f.lastAt.Before(asked) {
			nodes := f.last
			f.mu.Unlock()
			return nodes, nil
		}
		if wait := f.inflight; wait != nil {
			f.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		done := make(chan struct{})
		f.inflight = done
		began := time.Now()
		f.mu.Unlock()

		nodes, err := f.read(ctx)
		f.mu.Lock()
		f.inflight = nil
		if err == nil {
			f.last, f.lastAt = nodes, began
		}
		f.mu.Unlock()
		close(done)
		return nodes, err
	}
}

func (f *storeFleet) read(ctx context.Context) ([]NodeState, error) {
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
