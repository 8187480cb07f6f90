// Package gateway runs the transparent gateway (DESIGN §4): it gives VMs their sandbox
// networks and keeps the firewall in line with the effective policies.
//
// It is the glue between three parts that know nothing of each other: the view (which VMs
// exist and what each may reach), package netns (namespaces and veth pairs) and package
// firewall (one nftables table). Attach and Detach are called by the API when a VM with a
// "netns" network is created or deleted; Run follows the view and applies the whole desired
// firewall state, in one transaction, whenever a VM comes, goes or changes its policy.
// Each part is behind a small interface (View, Namespaces, Firewall), so that the logic
// here is tested without root, against the fakes of packages netnstest and firewalltest.
//
// It fails closed. The firewall's rules outlive egressd: if egressd dies, packets from a
// sandbox still meet the same table, whose redirects now lead to closed ports and whose
// forwarding allows only what the last policy allowed. On start, Run applies the firewall
// (a gateway whose first apply fails does not start), then re-adopts every sandbox network
// the store knows (repairing what is missing) and removes the namespaces of VMs the store
// no longer has, before the data path serves. A later apply that fails leaves the previous
// table in force; it is retried, and Ready reports the gateway not ready until it succeeds.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/host/firewall"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/policy"
)

// Store is what the gateway reads: every VM, to re-adopt networks and to allocate subnets.
type Store interface {
	AllVMs(ctx context.Context) ([]store.VM, error)
}

// Namespaces makes and removes sandbox networks: a *netns.Manager (package netnstest has a
// fake for tests without root).
type Namespaces interface {
	Attachment(tenant, vmID string, subnet netip.Prefix) (netns.Attachment, error)
	// Create makes a's network, or repairs it; it refuses a namespace of another gateway.
	Create(a netns.Attachment) error
	Delete(name string) error
	// List names this gateway's networks that exist.
	List() ([]string, error)
	EnableForwarding() error
}

// Firewall installs egressd's table and cuts the flows a tightened policy no longer
// allows: a *firewall.Firewall (package firewalltest has a fake for tests without root).
type Firewall interface {
	// Apply makes the table exactly d, or leaves the previous table in force.
	Apply(d firewall.Desired) error
	// FlushConntrack deletes the tracked flows of sandbox to destinations outside keep.
	FlushConntrack(sandbox netip.Addr, keep []netip.Prefix) (int, error)
}

// Config is the gateway's setting.
type Config struct {
	SandboxCIDR netip.Prefix
	ProxyPort   uint16 // the transparent proxy's port on the gateway addresses
	DNSPort     uint16 // the DNS filter's port
	// Env is the operator's setting, the API's too: its hard denials are the firewall's
	// first rules. nil: the built-in one.
	Env    *policy.Env
	Logger *slog.Logger
	// Resync is how often the firewall is re-applied even without a change (repairing a
	// table someone changed by hand); 0 means a minute. A failed apply is retried sooner:
	// after a second, then twice as long each time, up to Resync.
	Resync time.Duration
}

// Gateway attaches sandbox networks and keeps the firewall in line.
type Gateway struct {
	cfg        Config
	st         Store
	view       View
	nets       Namespaces
	fw         Firewall
	alloc      *netns.Allocator
	log        *slog.Logger
	firstRetry time.Duration

	mu      sync.Mutex                  // serialises Attach, Detach and applying
	pending map[string]netns.Attachment // by namespace name: attachments whose VM is not in the view yet
	applied *firewall.Desired           // the state in force (the last applied), nil before the first

	behind   chan struct{}          // an Attach or Detach could not apply: the follower retries
	status   atomic.Pointer[status] // the outcome of the last apply, nil before the first
	enforced revisionWaiter         // the view revision of the last table in force
}

// status is the outcome of the last apply: err is nil when the table in force is the one
// the view asks for.
type status struct{ err error }

// New makes a gateway. nets and fw operate in the process's own network namespace.
func New(st Store, v View, nets Namespaces, fw Firewall, cfg Config) (*Gateway, error) {
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
		firstRetry: min(time.Second, cfg.Resync),
		pending:    make(map[string]netns.Attachment),
		behind:     make(chan struct{}, 1),
	}, nil
}

// Ready reports whether the firewall holds what the view asks for: an error before the
// first apply and after a failed one, until an apply succeeds. While it fails, the table
// of the last successful apply stays in force, and it may allow what a newer policy no
// longer does, so a node must not claim to be ready.
func (g *Gateway) Ready() error {
	switch s := g.status.Load(); {
	case s == nil:
		return errors.New("gateway: the firewall is not applied yet")
	case s.err != nil:
		return fmt.Errorf("gateway: the firewall is behind the policies (the previous rules stay in force; retrying): %w", s.err)
	}
	return nil
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
	if _, ok := g.pending[a.Name]; ok {
		return store.Network{}, fmt.Errorf("gateway: namespace %s is being attached: %w", a.Name, store.ErrConflict)
	}
	// The firewall first, so that the veth is never up without rules that name it. The
	// attachment stays pending (in every apply) until the view shows the stored VM.
	g.pending[a.Name] = a
	if err := g.applyLocked(false); err != nil {
		delete(g.pending, a.Name)
		g.fallBehind()
		return store.Network{}, err
	}
	if err := g.nets.Create(a); err != nil {
		delete(g.pending, a.Name)
		// Its rules go again: the interface they name is not this gateway's.
		if aerr := g.applyLocked(false); aerr != nil {
			g.fallBehind()
			err = errors.Join(err, aerr)
		}
		return store.Network{}, fmt.Errorf("gateway: %w", err)
	}
	return network(a), nil
}

// Detach removes a VM's sandbox network. The VM is already gone from the store; its rules
// go with this apply, or with the view's next change if the view still shows it.
func (g *Gateway) Detach(ctx context.Context, tenant, vmID string, n store.Network) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n.Netns == "" {
		return nil
	}
	if err := g.nets.Delete(n.Netns); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	delete(g.pending, n.Netns)
	if err := g.applyLocked(false); err != nil {
		g.fallBehind()
		return err
	}
	return nil
}

// fallBehind tells the follower that an apply failed outside it, so that it retries.
func (g *Gateway) fallBehind() {
	select {
	case g.behind <- struct{}{}:
	default:
	}
}

// Run re-adopts the store's sandbox networks, applies the firewall, and then keeps it in
// line with the view until ctx ends. It returns once the first apply is done (or failed).
func (g *Gateway) Run(ctx context.Context) error {
	if err := g.adopt(ctx); err != nil {
		return err
	}
	go g.follow(ctx)
	return nil
}

// follow applies the firewall whenever the view changes, and on every resync even
// unchanged (it repairs a table changed by hand). A failed apply leaves the previous table
// in force; it is retried with a growing delay until one succeeds.
func (g *Gateway) follow(ctx context.Context) {
	resync := time.NewTicker(g.cfg.Resync)
	defer resync.Stop()
	var retry <-chan time.Time
	wait := g.firstRetry
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case <-g.view.Changed():
		case <-g.behind:
		case <-retry:
		case <-resync.C:
			force = true
		}
		g.mu.Lock()
		err := g.applyLocked(force)
		g.mu.Unlock()
		if err == nil {
			retry, wait = nil, g.firstRetry
			continue
		}
		g.log.Error("gateway: applying the firewall failed; the previous rules stay", "err", err, "retry_in", wait)
		retry = time.After(wait)
		wait = min(2*wait, g.cfg.Resync)
	}
}

// adopt applies the firewall, then recreates or repairs the namespace of every stored
// netns VM and removes egressd's namespaces that belong to no VM. The table comes first,
// and forwarding is turned on after it, so that a gateway whose first apply fails has
// nothing up that the table does not govern.
func (g *Gateway) adopt(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	vms, err := g.st.AllVMs(ctx)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if err := g.applyLocked(true); err != nil {
		return err
	}
	if err := g.nets.EnableForwarding(); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	known := make(map[string]bool)
	for _, vm := range vms {
		if vm.Network.Mode != "netns" {
			continue
		}
		a, err := g.attachmentOf(vm.Tenant, vm.ID, vm.Network)
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
	return nil
}

// applyLocked builds the desired firewall state from the view (plus the pending
// attachments) and applies it, unless it is the state in force and force is off: the view
// signals every VM change, most of which (sessions of VMs without a sandbox network, policy
// changes that do not touch allowed_cidrs) leave the table as it is. Then it removes
// conntrack entries that a tightened policy no longer allows, so that established
// forwarded flows are cut too.
func (g *Gateway) applyLocked(force bool) error {
	rev := g.view.Revision() // before reading the VMs: they reflect at least rev
	d := g.desiredLocked()
	if !force && g.applied != nil && firewall.Render(d) == firewall.Render(*g.applied) {
		g.status.Store(&status{})
		g.enforced.advance(rev)
		return nil
	}
	if err := g.fw.Apply(d); err != nil {
		err = fmt.Errorf("gateway: firewall: %w", err)
		g.status.Store(&status{err: err})
		return err
	}
	before := make(map[string][]netip.Prefix)
	if g.applied != nil {
		for _, s := range g.applied.Sandboxes {
			before[s.Name] = s.Allowed
		}
	}
	for _, s := range d.Sandboxes {
		if prev, ok := before[s.Name]; ok && !covers(s.Allowed, prev) {
			if _, err := g.fw.FlushConntrack(s.Addr, s.Allowed); err != nil {
				g.log.Warn("gateway: removing conntrack entries of a tightened policy", "netns", s.Name, "err", err)
			}
		}
	}
	g.applied = &d
	g.status.Store(&status{})
	g.enforced.advance(rev)
	return nil
}

// desiredLocked is the firewall state of the view's netns VMs and the pending attachments
// (whose rules deny everything: their VMs have no policy in the view yet). A pending
// attachment stops being pending once the view shows its VM.
func (g *Gateway) desiredLocked() firewall.Desired {
	d := firewall.Desired{
		ProxyPort:   g.cfg.ProxyPort,
		DNSPort:     g.cfg.DNSPort,
		SandboxCIDR: g.cfg.SandboxCIDR,
		HardDeny:    g.cfg.Env.Classifier().HardDenyPrefixes(),
		IfacePrefix: netns.HostIfacePrefix,
	}
	for _, vm := range g.view.VMs() {
		if vm.Network.Mode != "netns" {
			continue
		}
		a, err := g.attachmentOf(vm.Tenant, vm.ID, vm.Network)
		if err != nil {
			continue
		}
		delete(g.pending, a.Name)
		d.Sandboxes = append(d.Sandboxes, sandbox(a, vm.Allowed))
	}
	for _, a := range g.pending {
		d.Sandboxes = append(d.Sandboxes, sandbox(a, nil))
	}
	slices.SortFunc(d.Sandboxes, func(a, b firewall.Sandbox) int { return a.Addr.Compare(b.Addr) })
	return d
}

// subnetsInUse lists the /30s of stored VMs, of VMs the view still shows (one deleted a
// moment ago keeps its rules until the view catches up: its address is not free yet), and
// of attachments in flight.
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
	for _, vm := range g.view.VMs() {
		if p, err := subnetOf(vm.Network); err == nil {
			out = append(out, p)
		}
	}
	for _, a := range g.pending {
		out = append(out, a.Prefix)
	}
	return out, nil
}

func sandbox(a netns.Attachment, allowed []netip.Prefix) firewall.Sandbox {
	return firewall.Sandbox{Name: a.Name, HostIface: a.HostIface, Addr: a.Addr, Gateway: a.Gateway, Allowed: allowed}
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
func (g *Gateway) attachmentOf(tenant, vmID string, n store.Network) (netns.Attachment, error) {
	p, err := subnetOf(n)
	if err != nil {
		return netns.Attachment{}, err
	}
	a, err := g.nets.Attachment(tenant, vmID, p)
	if err != nil {
		return netns.Attachment{}, err
	}
	if n.Netns != "" && n.Netns != a.Name {
		return netns.Attachment{}, fmt.Errorf("stored namespace %s is not %s", n.Netns, a.Name)
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
