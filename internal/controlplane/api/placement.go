package api

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store"
)

// Placement (DESIGN §5). A VM with a "netns" network belongs to one transparent gateway node:
// the one its creator names, or else the up transparent node with the fewest VMs (ties: the
// lowest ID) among those whose labels match the creator's node_selector. This API only writes
// the choice into the store; the node makes the network while following the store, and says
// so in the VM's network state, which the API waits for (awaitNetwork).

// DefaultNetworkWait bounds how long POST and DELETE /v1/vms wait for the owning node to make
// or remove a VM's network before answering 202 (DESIGN §5).
const DefaultNetworkWait = 10 * time.Second

// networkPoll is how often a wait for a node reads the store when no change signal wakes it
// sooner: the safety net under Config.Changes, and the pace without it.
const networkPoll = 250 * time.Millisecond

// Changes tells the API that the store may have changed (a *store.Signal), so that a wait for
// a node's work wakes when the node writes rather than at the next poll.
type Changes interface {
	Next() <-chan struct{}
}

// transparentRole is the role a node reports when it runs the transparent gateway, and so
// can own sandbox networks.
const transparentRole = "transparent"

// A node_selector names a few of the labels an operator gives nodes (--node-label): these
// bound it, so that a selector never costs, nor is echoed in an error, more than a few
// labels' worth, whatever the body's size.
const (
	maxSelectorLabels = 32
	maxLabelBytes     = 256
)

// place chooses the node of a new netns VM from the request's network.node and
// network.node_selector.
//
// What it answers a tenant is the tenant's own: GET /v1/nodes, which shows the nodes'
// labels, addresses and numbers, is for admin keys, and so a refusal names the label of the
// tenant's selector that is not matched, never a node's labels nor how many nodes there are.
func (s *Server) place(ctx context.Context, req *client.Network) (string, error) {
	if len(req.NodeSelector) > maxSelectorLabels {
		return "", badRequest("network.node_selector", "node_selector has %d labels; at most %d are allowed", len(req.NodeSelector), maxSelectorLabels)
	}
	for k, v := range req.NodeSelector {
		switch {
		case k == "":
			return "", badRequest("network.node_selector", "node_selector has an empty label name; give labels as {\"name\": \"value\"}")
		case len(k) > maxLabelBytes || len(v) > maxLabelBytes:
			return "", badRequest("network.node_selector", "node_selector has a label name or value longer than %d bytes", maxLabelBytes)
		}
	}
	nodes, now, err := readNodes(ctx, s.store)
	if err != nil {
		return "", err
	}
	var candidates []store.Node
	for _, n := range nodes {
		if slices.Contains(n.Roles, transparentRole) {
			candidates = append(candidates, n)
		}
	}
	if len(candidates) == 0 {
		return "", badRequest("network.mode", `network mode "netns" needs a transparent gateway node, and none has registered: start egressd with --transparent (Linux, root) on the sandbox hosts`)
	}
	if req.Node != "" {
		i := slices.IndexFunc(candidates, func(n store.Node) bool { return n.ID == req.Node })
		switch {
		case i < 0:
			return "", badRequest("network.node", "no transparent gateway node %q is registered; an operator lists the nodes with GET /v1/nodes (admin)", req.Node)
		case !matches(candidates[i].Labels, req.NodeSelector):
			return "", badRequest("network.node_selector", "node %q does not have the label %s of node_selector", req.Node, unmatched(candidates[i].Labels, req.NodeSelector))
		case !candidates[i].Up(now):
			return "", errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "network.node",
				"node %q is down (no heartbeat for %s): a VM's network can only be made by its node; try again when it is back, or name another node",
				req.Node, now.Sub(candidates[i].Heartbeat).Round(time.Second))
		}
		return req.Node, nil
	}
	count, err := s.vmsPerNode(ctx)
	if err != nil {
		return "", err
	}
	best := ""
	for _, n := range candidates { // by ID: the first of the fewest is the lowest ID
		if !n.Up(now) {
			continue
		}
		if matches(n.Labels, req.NodeSelector) && (best == "" || count[n.ID] < count[best]) {
			best = n.ID
		}
	}
	switch {
	case best != "":
		return best, nil
	case len(req.NodeSelector) > 0:
		return "", errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "network.node_selector",
			"no up transparent gateway node has labels matching node_selector %s; an operator lists the nodes' labels with GET /v1/nodes (admin)",
			labelText(req.NodeSelector))
	}
	return "", errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "network.mode",
		"no transparent gateway node is up (every one has been silent for %s or more); try again when one is back", store.DownAfter)
}

// unmatched is the first entry of selector, in name order, that labels do not hold, as
// name=value: the tenant's own, for a refusal.
func unmatched(labels, selector map[string]string) string {
	for _, k := range slices.Sorted(maps.Keys(selector)) {
		if got, ok := labels[k]; !ok || got != selector[k] {
			return k + "=" + selector[k]
		}
	}
	return ""
}

// vmsPerNode counts the netns VMs of every tenant by owning node, whatever their state: a
// pending VM takes its place as much as a ready one, and a failed one holds nothing.
func (s *Server) vmsPerNode(ctx context.Context) (map[string]int, error) {
	vms, err := s.store.AllVMs(ctx)
	if err != nil {
		return nil, fmt.Errorf("count VMs per node: %w", err)
	}
	count := make(map[string]int)
	for _, vm := range vms {
		if vm.Network.Mode == "netns" && vm.Network.State != store.NetworkFailed {
			count[vm.Network.Node]++
		}
	}
	return count, nil
}

// matches reports whether labels hold every name and value of selector.
func matches(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// labelText shows labels as {k=v, ...}, sorted, for messages.
func labelText(labels map[string]string) string {
	parts := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// awaitNetwork reads the VM until done says its network has got where the caller waits for,
// or the VM is gone (ErrNotFound, which done sees too), or networkWait has passed. It
// returns the last VM read and whether done said yes. A read that fails is no answer: the
// write waited on is durable, and the database may be back within the wait (a restart, a
// failover), so the wait goes on, and at its end the caller answers that the node's work is
// not known to be done (202).
func (s *Server) awaitNetwork(ctx context.Context, tenant, id string, done func(store.VM, error) bool) (store.VM, bool) {
	ctx, cancel := context.WithTimeout(ctx, s.networkWait)
	defer cancel()
	var last store.VM
	failing := false
	for {
		var wake <-chan struct{}
		if s.changes != nil {
			wake = s.changes.Next() // before the read: a change after it wakes the wait
		}
		vm, err := s.store.GetVM(ctx, tenant, id)
		switch {
		case err != nil && !errors.Is(err, store.ErrNotFound):
			if !failing && ctx.Err() == nil {
				s.log.Warn("reading a VM while waiting for its node failed; still waiting", "vm_id", id, "err", err)
			}
			failing = true
		case done(vm, err):
			return vm, true
		default:
			last = vm
		}
		select {
		case <-ctx.Done():
			return last, false
		case <-wake:
		case <-time.After(networkPoll):
		}
	}
}

// ownerEnforced waits until node, the owner of a VM whose network it has just made, enforces
// every store change up to rev: its view knows the VM's address, so that its transparent proxy
// and DNS filter serve the sandbox, and its firewall holds the VM's rules. This node waits on
// its own gateway; another node's progress arrives with its heartbeats.
func (s *Server) ownerEnforced(ctx context.Context, node string, rev int64) error {
	ctx, cancel := context.WithTimeout(ctx, s.networkWait)
	defer cancel()
	if node == s.nodeID && s.enforcer != nil {
		return s.enforcer.WaitRevision(ctx, rev)
	}
	if s.fleet == nil {
		return fmt.Errorf("node %q is not this node, and the fleet's nodes cannot be read", node)
	}
	s.announce(ctx, rev, node)
	t := time.NewTicker(fleetPoll)
	defer t.Stop()
	for {
		nodes, err := s.fleet.Nodes(ctx)
		if err == nil {
			for _, n := range nodes {
				if n.ID == node && n.Revision >= rev {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %q has not applied revision %d within %s", node, rev, s.networkWait)
		case <-t.C:
		}
	}
}

// shownNetwork is a stored network as an answer shows it: a VM whose node is down shows
// "node_down" rather than the state the node last wrote, unless it is being deleted.
func shownNetwork(n store.Network, down map[string]bool) client.Network {
	out := networkOut(n)
	if n.Mode == "netns" && down[n.Node] && n.State != store.NetworkDeleting && n.State != store.NetworkFailed {
		out.State = "node_down"
	}
	return out
}

// downNodes names the registered nodes that are down, for shownNetwork.
func (s *Server) downNodes(ctx context.Context) (map[string]bool, error) {
	nodes, now, err := readNodes(ctx, s.store)
	if err != nil {
		return nil, err
	}
	down := make(map[string]bool)
	for _, n := range nodes {
		if !n.Up(now) {
			down[n.ID] = true
		}
	}
	return down, nil
}
