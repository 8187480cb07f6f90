// Package gateway runs the transparent gateway (DESIGN §4): it gives VMs their sandbox
// networks and keeps the firewall in line with the effective policies.
//
// It is the glue between three parts that know nothing of each other: the view (which VMs
// exist and what each may reach), package netns (namespaces and veth pairs) and package
// firewall (one nftables table). Attach and Detach are called by the API when a VM with a
// "netns" network is created or deleted; Run follows the view and applies the whole desired
// firewall state, in one transaction, whenever a VM comes, goes or changes its policy.
//
// It fails closed. The firewall's rules outlive egressd: if egressd dies, packets from a
// sandbox still meet the same table, whose redirects now lead to closed ports and whose
// forwarding allows only what the last policy allowed. On start, Run re-adopts every
// sandbox network the store knows (repairing what is missing), removes the namespaces of
// VMs the store no longer has, and applies the firewall before the data path serves.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/firewall"
	"github.com/egressd/egressd/internal/netns"
	"github.com/egressd/egressd/internal/store"
	"github.com/egressd/egressd/internal/view"
	"github.com/egressd/egressd/policy"
)

// Store is what the gateway reads: every VM, to re-adopt networks and to allocate subnets.
type Store interface {
	AllVMs(ctx context.Context) ([]store.VM, error)
}

// Config is the gateway's setting.
type Config struct {
	SandboxCIDR netip.Prefix
	ProxyPort   uint16 // the transparent proxy's port on the gateway addresses
	DNSPort     uint16 // the DNS filter's port
	Classifier  *policy.Classifier
	Logger      *slog.Logger
	// Resync is how often the firewall is re-applied even without a change (repairing a
	// table someone changed by hand); 0 means a minute.
	Resync time.Duration
}

// Gateway attaches sandbox networks and keeps the firewall in line.
type Gateway struct {
	cfg   Config
	st    Store
	view  *view.View
	nets  *netns.Manager
	fw    *firewall.Firewall
	alloc *netns.Allocator
	log   *slog.Logger

	mu      sync.Mutex              // serialises Attach, Detach and applying
	pending map[netip.Prefix]string // subnets (and their namespace names) taken by Attach calls whose VM is not in the view yet
	applied *firewall.Desired       // the state last applied, nil before the first
}

// New makes a gateway. nets and fw operate in the process's own network namespace.
func New(st Store, v *view.View, nets *netns.Manager, fw *firewall.Firewall, cfg Config) (*Gateway, error) {
	alloc, err := netns.NewAllocator(cfg.SandboxCIDR)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Resync <= 0 {
		cfg.Resync = time.Minute
	}
	return &Gateway{
		cfg: cfg, st: st, view: v, nets: nets, fw: fw, alloc: alloc, log: cfg.Logger,
		pending: make(map[netip.Prefix]string),
	}, nil
}

// Attach creates a VM's sandbox network: a /30 of the sandbox range, a namespace, a veth
// pair, and a firewall table that already names the new interface (denying everything until
// the VM's policy is in the view).
func (g *Gateway) Attach(ctx context.Context, tenant, vmID string) (store.Network, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	inUse, err := g.subnetsInUse(ctx)
	if err != nil {
		return store.Network{}, err
	}
	subnet, err := g.alloc.Take(inUse)
	if err != nil {
		return store.Network{}, fmt.Errorf("gateway: %w", err)
	}
	a, err := g.nets.Attachment(tenant, vmID, subnet)
	if err != nil {
		return store.Network{}, err
	}
	// Two creations of one VM at once must not share (and then one delete) a namespace.
	for _, vm := range g.view.VMs() {
		if vm.Network.Netns == a.Name {
			return store.Network{}, fmt.Errorf("gateway: namespace %s is in use: %w", a.Name, store.ErrConflict)
		}
	}
	for _, name := range g.pending {
		if name == a.Name {
			return store.Network{}, fmt.Errorf("gateway: namespace %s is being attached: %w", a.Name, store.ErrConflict)
		}
	}
	// The firewall first, so that the veth is never up without rules that name it.
	g.pending[subnet] = a.Name
	if err := g.applyLocked(extra(a), false); err != nil {
		delete(g.pending, subnet)
		return store.Network{}, err
	}
	if err := g.nets.Create(a); err != nil {
		delete(g.pending, subnet)
		return store.Network{}, fmt.Errorf("gateway: %w", err)
	}
	// The subnet stays pending until the view shows the stored VM (see applyLocked).
	return network(a), nil
}

// Detach removes a VM's sandbox network. The VM is already gone from the store.
func (g *Gateway) Detach(ctx context.Context, tenant, vmID string, n store.Network) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n.Netns == "" {
		return nil
	}
	if err := g.nets.Delete(n.Netns); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if p, err := subnetOf(n); err == nil {
		delete(g.pending, p)
	}
	return g.applyLocked(nil, false)
}

// Run re-adopts the store's sandbox networks, applies the firewall, and then keeps it in
// line with the view until ctx ends. It returns once the first apply is done (or failed).
func (g *Gateway) Run(ctx context.Context) error {
	if err := g.adopt(ctx); err != nil {
		return err
	}
	go func() {
		t := time.NewTicker(g.cfg.Resync)
		defer t.Stop()
		var force bool
		for {
			select {
			case <-ctx.Done():
				return
			case <-g.view.Changed():
				force = false
			case <-t.C:
				force = true // re-apply even unchanged: it repairs a table changed by hand
			}
			g.mu.Lock()
			err := g.applyLocked(nil, force)
			g.mu.Unlock()
			if err != nil {
				g.log.Error("gateway: applying the firewall failed; the previous rules stay", "err", err)
			}
		}
	}()
	return nil
}

// adopt recreates or repairs the namespace of every stored netns VM, removes egressd's
// namespaces that belong to no VM, and applies the firewall.
func (g *Gateway) adopt(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := netns.EnableForwarding(); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	vms, err := g.st.AllVMs(ctx)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	known := make(map[string]bool)
	for _, vm := range vms {
		if vm.Network.Mode != "netns" {
			continue
		}
		a, err := attachmentOf(g.nets, vm)
		if err != nil {
			g.log.Error("gateway: a stored VM has a network egressd cannot rebuild", "vm_id", vm.ID, "err", err)
			continue
		}
		known[a.Name] = true
		if err := g.nets.Create(a); err != nil {
			return fmt.Errorf("gateway: re-adopting %s: %w", a.Name, err)
		}
	}
	present, err := g.nets.List()
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	for _, name := range present {
		if !known[name] {
			g.log.Info("gateway: removing the namespace of a VM that no longer exists", "netns", name)
			if err := g.nets.Delete(name); err != nil {
				g.log.Error("gateway: removing an orphan namespace", "netns", name, "err", err)
			}
		}
	}
	return g.applyLocked(nil, true)
}

// applyLocked builds the desired firewall state from the view (plus attachments not stored
// yet) and applies it, unless it is the state applied last and force is off: the view
// signals every VM change, most of which (sessions of VMs without a sandbox network, policy
// changes that do not touch allowed_cidrs) leave the table as it is. Then it removes
// conntrack entries that a tightened policy no longer allows, so that established
// forwarded flows are cut too.
func (g *Gateway) applyLocked(more []firewall.Sandbox, force bool) error {
	d := firewall.Desired{
		ProxyPort:   g.cfg.ProxyPort,
		DNSPort:     g.cfg.DNSPort,
		SandboxCIDR: g.cfg.SandboxCIDR,
		HardDeny:    g.cfg.Classifier.HardDenyPrefixes(),
		IfacePrefix: netns.HostIfacePrefix,
	}
	seen := make(map[string]bool)
	for _, vm := range g.view.VMs() {
		if vm.Network.Mode != "netns" {
			continue
		}
		a, err := attachmentOf(g.nets, store.VM{Tenant: vm.Tenant, ID: vm.ID, Network: vm.Network})
		if err != nil {
			continue
		}
		delete(g.pending, a.Prefix)
		seen[a.Name] = true
		d.Sandboxes = append(d.Sandboxes, firewall.Sandbox{
			Name: a.Name, HostIface: a.HostIface, Addr: a.Addr, Gateway: a.Gateway,
			Allowed: vm.Set().AllowedPrefixes(),
		})
	}
	for _, s := range more {
		if !seen[s.Name] {
			d.Sandboxes = append(d.Sandboxes, s)
		}
	}
	slices.SortFunc(d.Sandboxes, func(a, b firewall.Sandbox) int { return a.Addr.Compare(b.Addr) })
	if !force && g.applied != nil && firewall.Render(d) == firewall.Render(*g.applied) {
		return nil
	}
	if err := g.fw.Apply(d); err != nil {
		return fmt.Errorf("gateway: firewall: %w", err)
	}
	before := make(map[string][]netip.Prefix)
	if g.applied != nil {
		for _, s := range g.applied.Sandboxes {
			before[s.Name] = s.Allowed
		}
	}
	for _, s := range d.Sandboxes {
		if prev, ok := before[s.Name]; ok && !covers(s.Allowed, prev) {
			if _, err := firewall.FlushConntrack(s.Addr, s.Allowed); err != nil {
				g.log.Warn("gateway: removing conntrack entries of a tightened policy", "netns", s.Name, "err", err)
			}
		}
	}
	g.applied = &d
	return nil
}

// subnetsInUse lists the /30s of stored VMs and of attachments in flight.
func (g *Gateway) subnetsInUse(ctx context.Context) ([]netip.Prefix, error) {
	vms, err := g.st.AllVMs(ctx)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	var out []netip.Prefix
	for _, vm := range vms {
		if p, err := subnetOf(vm.Network); err == nil {
			out = append(out, p)
		}
	}
	for p := range g.pending {
		out = append(out, p)
	}
	return out, nil
}

func extra(a netns.Attachment) []firewall.Sandbox {
	return []firewall.Sandbox{{Name: a.Name, HostIface: a.HostIface, Addr: a.Addr, Gateway: a.Gateway}}
}

func network(a netns.Attachment) store.Network {
	return store.Network{Mode: "netns", Netns: a.Name, Path: a.Path, Address: a.Addr.String(), Gateway: a.Gateway.String()}
}

// subnetOf is the /30 of a stored network.
func subnetOf(n store.Network) (netip.Prefix, error) {
	addr, err := netip.ParseAddr(n.Address)
	if err != nil {
		return netip.Prefix{}, errors.New("no address")
	}
	return netip.PrefixFrom(addr, 30).Masked(), nil
}

// attachmentOf rebuilds the attachment of a stored VM from its tenant, ID and address.
func attachmentOf(m *netns.Manager, vm store.VM) (netns.Attachment, error) {
	p, err := subnetOf(vm.Network)
	if err != nil {
		return netns.Attachment{}, err
	}
	a, err := m.Attachment(vm.Tenant, vm.ID, p)
	if err != nil {
		return netns.Attachment{}, err
	}
	if vm.Network.Netns != "" && vm.Network.Netns != a.Name {
		return netns.Attachment{}, fmt.Errorf("stored namespace %s is not %s", vm.Network.Netns, a.Name)
	}
	return a, nil
}

// covers reports whether every prefix of before lies inside now: the policy did not tighten.
func covers(now, before []netip.Prefix) bool {
	for _, b := range before {
		inside := false
		for _, n := range now {
			if n.Bits() <= b.Bits() && n.Contains(b.Addr()) {
				inside = true
				break
			}
		}
		if !inside {
			return false
		}
	}
	return true
}
