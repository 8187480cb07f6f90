package gateway

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/host/netns"
)

// errNotPending: a VM's network is no longer this node's to make (the VM was deleted, or
// is another node's): the update that would have recorded it is refused.
var errNotPending = errors.New("the VM's network is no longer pending on this node")

// errNotLegacy: a VM stored before nodes was claimed by another node first.
var errNotLegacy = errors.New("the VM has a node already")

// reconcileLoop runs a round whenever the view shows this node's VMs changed, on every
// resync, and after a failed round, with a growing delay (failed says the first round at
// start failed). Each failure was logged where it happened.
func (g *Gateway) reconcileLoop(ctx context.Context, failed bool) {
	resync := time.NewTicker(g.cfg.Resync)
	defer resync.Stop()
	var retry <-chan time.Time
	wait := g.firstRetry
	if failed {
		retry, wait = time.After(wait), min(2*wait, g.cfg.Resync)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.wake:
		case <-retry:
		case <-resync.C:
		}
		err := g.round(ctx)
		if err == nil {
			retry, wait = nil, g.firstRetry
			continue
		}
		if ctx.Err() != nil {
			return
		}
		g.log.Info("gateway: a round of reconciling did not finish everything; retrying", "retry_in", wait)
		retry = time.After(wait)
		wait = min(2*wait, g.cfg.Resync)
	}
}

// round is one pass of reconciling, bounded by roundTimeout.
func (g *Gateway) round(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, roundTimeout)
	defer cancel()
	vms, present, err := g.read(ctx)
	if err != nil {
		g.log.Error("gateway: reconciling the node's VMs", "err", err)
		return err
	}
	return g.reconcileVMs(ctx, vms, present, false)
}

// read takes what a round works from: every stored VM, then this gateway's namespaces. In
// that order: only rounds make namespaces, one round at a time, so that every namespace
// listed is one the VMs read before explain, or an orphan.
func (g *Gateway) read(ctx context.Context) ([]store.VM, map[string]bool, error) {
	vms, err := g.st.AllVMs(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway: reading the VMs: %w", err)
	}
	names, err := g.nets.List()
	if err != nil {
		return nil, nil, fmt.Errorf("gateway: listing the sandbox networks: %w", err)
	}
	present := make(map[string]bool, len(names))
	for _, name := range names {
		present[name] = true
	}
	return vms, present, nil
}

// reconcileVMs takes one step for each of this node's VMs (see the package doc), then
// removes the namespaces that none of them explains. start repairs every ready VM's
// network, as after a reboot. It returns the steps' errors, joined; each is logged.
func (g *Gateway) reconcileVMs(ctx context.Context, vms []store.VM, present map[string]bool, start bool) error {
	var errs []error
	report := func(vm store.VM, err error) {
		g.log.Error("gateway: reconciling a VM", "tenant", vm.Tenant, "vm_id", vm.ID, "state", vm.Network.State, "err", err)
		errs = append(errs, fmt.Errorf("%s/%s: %w", vm.Tenant, vm.ID, err))
	}
	// The subnets the store knows, whoever's and in whatever state: a VM being deleted keeps
	// its address until its row goes.
	var stored []netip.Prefix
	for _, vm := range vms {
		if p, err := subnetOf(vm.Network); err == nil {
			stored = append(stored, p)
		}
	}
	explained := make(map[string]bool)
	repair := make(map[string]bool)
	holders := g.holders(vms, present)
	for _, vm := range vms {
		if vm.Network.Mode != "netns" {
			continue
		}
		name := netns.Name(vm.Tenant, vm.ID)
		if vm.Network.Node == "" && vm.Network.State == "" {
			// Stored before nodes: this node's if its namespace is on this host, or if its
			// address is of this node's range, which no other node's overlaps (after a
			// reboot that lost /etc/netns no host has the namespace, and the egressd from
			// before nodes made it again at start: so does the node that claims it); and
			// never through the namespace of a VM of this node whose name collides with it.
			if (!present[name] && !g.inRange(vm.Network)) || holders[name] != (vmKey{vm.Tenant, vm.ID}) {
				continue
			}
			explained[name] = true
			claimed, err := g.claim(ctx, vm)
			if err != nil {
				if !errors.Is(err, errNotLegacy) {
					report(vm, err)
				}
				continue
			}
			vm = claimed
			repair[name] = true // as at start: it was not this node's to run until now
		}
		if !g.owns(vm.Network) {
			if present[name] && vm.Network.Node != "" {
				// Another node's VM, whose namespace is on this host: this host ran it under
				// another --node-id. It is no orphan: its sandbox may still hold it, and a
				// namespace made again later would be a new one, which the sandbox is not
				// in. It stays, cut off by this node's table (fail closed), for the host to
				// re-adopt once it runs under that ID again.
				explained[name] = true
				g.warnForeign(vm, name)
			}
			continue
		}
		switch vm.Network.State {
		case store.NetworkPending:
			if holders[name] != (vmKey{vm.Tenant, vm.ID}) {
				// The namespace of that name is another VM's, or will be: making this one
				// would take it over. The other VM is not named: it may be another tenant's.
				if _, err := g.fail(ctx, vm, fmt.Errorf("its namespace name %s is in use by another VM on node %s (names are a 40-bit hash of tenant and vm_id); create the VM again with another vm_id", name, g.cfg.NodeID)); err != nil {
					report(vm, err)
				}
				continue // explained or not by its holder
			}
			keep, err := g.attach(ctx, vm, stored)
			explained[name] = keep
			if err != nil {
				report(vm, err)
			}
		case store.NetworkDeleting:
			explained[name] = true // removed here, or again next round
			if err := g.remove(ctx, vm, present[name]); err != nil {
				report(vm, err)
			}
		case store.NetworkReady, "":
			explained[name] = true
			if !start && !repair[name] && !g.repair[name] {
				continue
			}
			if err := g.readopt(vm); err != nil {
				repair[name] = true
				report(vm, err)
			} else {
				delete(repair, name)
			}
		}
		// creating: not this node's to make yet; failed: nothing of it is left.
	}
	g.repair = repair
	errs = append(errs, g.removeOrphans(present, explained)...)
	return errors.Join(errs...)
}

// holders says which VM each namespace name of this node belongs to, for refusing a pending
// VM whose name is another's (netns.Name is a 40-bit hash: two VMs of a node may collide,
// and a tenant that knows another's tenant and vm_id can make them). A VM that may have its
// namespace (ready, stored before states, being deleted, or stored before nodes and found
// on this host) holds its name, in that order: a namespace found here is first of all that
// of a VM of this node; then the pending ones, oldest first (vms is in that order). A failed
// or creating VM holds nothing: it has no namespace, and it may not get one.
func (g *Gateway) holders(vms []store.VM, present map[string]bool) map[string]vmKey {
	holders := make(map[string]vmKey)
	pass := func(holds func(store.Network, string) bool) {
		for _, vm := range vms {
			name := netns.Name(vm.Tenant, vm.ID)
			if _, taken := holders[name]; !taken && vm.Network.Mode == "netns" && holds(vm.Network, name) {
				holders[name] = vmKey{vm.Tenant, vm.ID}
			}
		}
	}
	pass(func(n store.Network, _ string) bool {
		return g.owns(n) && (n.Live() || n.State == store.NetworkDeleting)
	})
	pass(func(n store.Network, name string) bool {
		return n.Node == "" && n.State == "" && (present[name] || g.inRange(n))
	})
	pass(func(n store.Network, _ string) bool { return g.owns(n) && n.State == store.NetworkPending })
	return holders
}

// attach makes the network of a pending VM: a /30 of this node's range, the firewall, the
// namespace, and then the store, in that order. stored are the subnets the round's VMs have.
// keep says whether the VM's namespace is to stay: made and recorded, or to be made again by
// the next round; when it is false, a namespace of the VM that is left is an orphan.
func (g *Gateway) attach(ctx context.Context, vm store.VM, stored []netip.Prefix) (keep bool, err error) {
	name := netns.Name(vm.Tenant, vm.ID)
	g.mu.Lock()
	// An attachment still in flight is an earlier attempt that did not finish (the table
	// could not be applied, or the store not written): it keeps its subnet, and Create
	// repairs what it made.
	a, again := g.inflight[name]
	if !again {
		if a, err = g.allocateLocked(vm, stored); err != nil {
			g.mu.Unlock()
			return g.fail(ctx, vm, err)
		}
	}
	// The firewall first, so that the veth is never up without rules that name it.
	g.inflight[name] = a
	delete(g.retired, name) // an earlier VM of the name is gone: its row was deleted
	err = g.applyLocked(false)
	g.mu.Unlock()
	if err != nil {
		// Nothing new is made; the attachment stays in flight, and the VM pending, for the
		// next round (and the follower's next apply).
		g.fallBehind()
		return true, err
	}
	if err := g.nets.Create(a); err != nil {
		// Create leaves nothing of a network it made; one made by an earlier attempt is an
		// orphan once the VM has failed, and goes at the end of the round.
		g.drop(name)
		return g.fail(ctx, vm, err)
	}
	_, err = g.st.UpdateVMNetwork(ctx, vm.Tenant, vm.ID, func(n store.Network) (store.Network, error) {
		if !g.owns(n) || n.State != store.NetworkPending {
			return n, errNotPending
		}
		n.State, n.Error = store.NetworkReady, ""
		n.Netns, n.Path, n.Address, n.Gateway = a.Name, a.Path, a.Addr.String(), a.Gateway.String()
		return n, nil
	})
	switch {
	case err == nil:
		// In flight until the view shows it ready: then its policy takes over.
		return true, nil
	case errors.Is(err, errNotPending), errors.Is(err, store.ErrNotFound):
		// Deleted while it was being made: what was made goes again, the namespace first
		// (its veth is never without rules). The next round removes the VM.
		if err := g.nets.Delete(name); err != nil {
			return false, fmt.Errorf("gateway: removing the network of a VM deleted while it was made: %w", err)
		}
		g.drop(name)
		return false, nil
	default:
		// Whether it was recorded is unknown: everything stays for the next round, which
		// finds the VM ready, or pending and tries again with the same attachment.
		return true, fmt.Errorf("gateway: recording the network: %w", err)
	}
}

// allocateLocked takes the lowest /30 of this node's range that is free: that no stored
// VM has (stored), nor a VM the view still shows (one deleted a moment ago keeps its rules
// until the view catches up), nor an attachment in flight.
func (g *Gateway) allocateLocked(vm store.VM, stored []netip.Prefix) (netns.Attachment, error) {
	inUse := append([]netip.Prefix(nil), stored...)
	for _, v := range g.view.VMs() {
		if p, err := subnetOf(v.Network); err == nil {
			inUse = append(inUse, p)
		}
	}
	for _, a := range g.inflight {
		inUse = append(inUse, a.Prefix)
	}
	subnet, err := g.alloc.Take(inUse)
	if err != nil {
		return netns.Attachment{}, err
	}
	return g.nets.Attachment(vm.Tenant, vm.ID, subnet)
}

// fail records that a pending VM's network could not be made, and why (cause, as a person
// reads it). What was made is gone already, or an orphan. A VM that is no longer pending is
// left as it is. keep is attach's: false, unless the VM stays pending for another attempt.
func (g *Gateway) fail(ctx context.Context, vm store.VM, cause error) (keep bool, err error) {
	g.log.Warn("gateway: a VM's network could not be made", "tenant", vm.Tenant, "vm_id", vm.ID, "err", cause)
	_, err = g.st.UpdateVMNetwork(ctx, vm.Tenant, vm.ID, func(n store.Network) (store.Network, error) {
		if !g.owns(n) || n.State != store.NetworkPending {
			return n, errNotPending
		}
		return store.Network{Mode: n.Mode, Node: n.Node, State: store.NetworkFailed, Error: cause.Error()}, nil
	})
	if err != nil && !errors.Is(err, errNotPending) && !errors.Is(err, store.ErrNotFound) {
		// Still pending: the next round tries to make it again.
		return true, fmt.Errorf("gateway: recording that the network failed (%v): %w", cause, err)
	}
	return false, nil
}

// drop takes an attachment out of the firewall.
func (g *Gateway) drop(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.inflight, name)
	if err := g.applyLocked(false); err != nil {
		g.fallBehind()
	}
}

// remove finishes deleting a VM: its rules, its namespace (if this gateway has it: it may
// never have been made), then its row, which tells the API that the deletion is done.
func (g *Gateway) remove(ctx context.Context, vm store.VM, present bool) error {
	name := netns.Name(vm.Tenant, vm.ID)
	g.mu.Lock()
	delete(g.inflight, name)
	g.retired[name] = true
	err := g.applyLocked(false)
	g.mu.Unlock()
	if err != nil {
		// The follower retries the apply. The namespace goes all the same: without its veth
		// the sandbox reaches nothing, whatever the table in force says.
		g.fallBehind()
	}
	if present {
		if err := g.nets.Delete(name); err != nil {
			return fmt.Errorf("gateway: removing the network of a deleted VM: %w", err)
		}
	}
	if err := g.st.DeleteVM(ctx, vm.Tenant, vm.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("gateway: deleting a VM whose network is removed: %w", err)
	}
	return nil
}

// readopt creates or repairs the namespace of a ready VM, as after a reboot.
func (g *Gateway) readopt(vm store.VM) error {
	a, err := g.attachmentOf(vm.Tenant, vm.ID, vm.Network)
	if err != nil {
		return fmt.Errorf("gateway: the stored network cannot be rebuilt: %w", err)
	}
	if err := g.nets.Create(a); err != nil {
		return fmt.Errorf("gateway: re-adopting %s: %w", a.Name, err)
	}
	return nil
}

// inRange reports whether a stored network's address is of this node's sandbox range.
func (g *Gateway) inRange(n store.Network) bool {
	p, err := subnetOf(n)
	return err == nil && g.cfg.SandboxCIDR.Contains(p.Addr())
}

// warnForeign says, once per namespace and process, that this host holds the namespace of
// another node's VM, and what to do about it.
func (g *Gateway) warnForeign(vm store.VM, name string) {
	if g.foreign[name] {
		return
	}
	g.foreign[name] = true
	g.log.Warn("gateway: this host has the namespace of a VM of another node, and leaves it alone: this host ran as that node before "+
		"(--node-id changed?); run egressd here with that --node-id again to serve and delete that node's VMs (docs/fleet.md)",
		"netns", name, "tenant", vm.Tenant, "vm_id", vm.ID, "vm_node", vm.Network.Node)
}

// claim makes a VM stored before nodes this node's, if no node has claimed it meanwhile.
func (g *Gateway) claim(ctx context.Context, vm store.VM) (store.VM, error) {
	claimed, err := g.st.UpdateVMNetwork(ctx, vm.Tenant, vm.ID, func(n store.Network) (store.Network, error) {
		if n.Mode != "netns" || n.Node != "" || n.State != "" {
			return n, errNotLegacy
		}
		n.Node, n.State = g.cfg.NodeID, store.NetworkReady
		return n, nil
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.VM{}, errNotLegacy
	case err != nil:
		return store.VM{}, fmt.Errorf("gateway: claiming a VM stored before nodes: %w", err)
	}
	g.log.Info("gateway: claimed a VM stored before nodes, whose namespace is on this host or whose address is of this node's range", "tenant", vm.Tenant, "vm_id", vm.ID)
	return claimed, nil
}

// removeOrphans removes this gateway's namespaces that no VM of the round explains (their
// VMs were deleted while egressd was down, or failed), and the attachments in flight whose
// VMs are gone. Rounds run one at a time, so that no attach is in flight here: an
// attachment still in flight is what an earlier attempt left when it could not record it.
func (g *Gateway) removeOrphans(present, explained map[string]bool) []error {
	var errs []error
	g.mu.Lock()
	stale, inflight := make(map[string]bool), make(map[string]bool)
	for name := range g.inflight {
		if !explained[name] {
			stale[name], inflight[name] = true, true
		}
	}
	g.mu.Unlock()
	for name := range present {
		if !explained[name] {
			stale[name] = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(stale)) {
		if present[name] {
			g.log.Info("gateway: removing a namespace that no VM of this node explains", "netns", name)
			if err := g.nets.Delete(name); err != nil {
				g.log.Error("gateway: removing an orphan namespace", "netns", name, "err", err)
				errs = append(errs, fmt.Errorf("gateway: removing orphan namespace %s: %w", name, err))
				continue
			}
		}
		if inflight[name] {
			g.drop(name)
		}
	}
	return errs
}
