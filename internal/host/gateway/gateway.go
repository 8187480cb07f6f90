package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/follow"
	"github.com/egressd/egressd/internal/host/firewall"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/policy"
)

// Store is what the gateway reads and writes: every VM, to find its own and the addresses in
// use; the network of one of its VMs, when it has made it (or could not); and the VM itself,
// when it has removed a deleted VM's network.
type Store interface {
	AllVMs(ctx context.Context) ([]store.VM, error)
	UpdateVMNetwork(ctx context.Context, tenant, id string, update func(store.Network) (store.Network, error)) (store.VM, error)
	DeleteVM(ctx context.Context, tenant, id string) error
}

// Namespaces makes and removes sandbox networks: a *netns.Manager (package netnstest has a
// fake for tests without root).
type Namespaces interface {
	Attachment(tenant, vmID string, subnet netip.Prefix) (netns.Attachment, error)
	// Create makes a's network, or repairs it; it refuses a namespace of another gateway,
	// and a network it made does not stay half-made when it fails.
	Create(a netns.Attachment) error
	// Delete removes the network called name; it refuses a namespace of another gateway
	// (gateways on one host share the namespace directory), which it leaves alone. The
	// gateway only deletes names that List gave, or that its own Create has just made.
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
	// Admit puts eps into the tcp_<name> set of the sandbox called name in the table in
	// force, each with its timeout (allowed_tcp); serialised with Apply.
	Admit(name string, eps []firewall.Endpoint) error
	// FlushTCP cuts the connections that sandbox opened through its set (ct mark) and
	// that keep does not keep.
	FlushTCP(sandbox netip.Addr, keep func(dst netip.Addr, port uint16) bool) (int, error)
	// AdmitFast and RevokeFast put eps into, and take them out of, the fast_<name> set of
	// the sandbox called name in the table in force (the fast path); serialised with Apply.
	AdmitFast(name string, eps []firewall.Endpoint) error
	RevokeFast(name string, eps []firewall.Endpoint) error
	// CutFast cuts the sandbox's verified and released fast-path flows that keep does not
	// keep.
	CutFast(sandbox netip.Addr, keep func(src, dst netip.AddrPort) bool) (int, error)
}

// Config is the gateway's setting.
type Config struct {
	// NodeID is this node's ID (--node-id): the gateway runs the VMs whose network names it,
	// and no other. Required.
	NodeID      string
	SandboxCIDR netip.Prefix // this node's sandbox range; no other node's overlaps it
	ProxyPort   uint16       // the transparent proxy's port on the gateway addresses
	DNSPort     uint16       // the DNS filter's port
	// Env is the operator's setting, the API's too: its hard denials are the firewall's
	// first rules. nil: the built-in one.
	Env    *policy.Env
	Logger *slog.Logger
	// Resync is how often the firewall is re-applied even without a change (repairing a
	// table someone changed by hand) and the VMs reconciled without a change of the view;
	// 0 means a minute. A failed apply or round is retried sooner: after a second, then
	// twice as long each time, up to Resync.
	Resync time.Duration
	// TCPMinTTL and TCPGrace set how long an answer's addresses stay open for new
	// allowed_tcp connections: max(TTL, TCPMinTTL) + TCPGrace (DESIGN §2.6); 0 means
	// DefaultTCPMinTTL and DefaultTCPGrace. Tests shorten them.
	TCPMinTTL, TCPGrace time.Duration
	// Sink takes the records of the kernel's flows and denied attempts (RecordFlow,
	// RecordAttempt); nil means events.Discard.
	Sink events.Sink
	// FastPath turns on the kernel fast path (--fast-path, DESIGN §4): the DNS filter's
	// answers open their addresses on 443 in the VM's fast_<name> set, and Judge decides
	// the flows the verifier (package fastpath) read the ClientHello of.
	FastPath bool
	// Intercepts says whether a tenant's connections to a host must go through the
	// interception engine (proxy.Proxy.Intercepts): such names never take the fast path.
	// nil: the policy's http_rules alone.
	Intercepts func(tenant string, eff *policy.Effective, host string) bool
}

// roundTimeout bounds one round's store calls: a store connection that hangs must turn
// into a failed round, which is retried, rather than stop reconciling for good.
const roundTimeout = 30 * time.Second

// Gateway makes and removes its node's sandbox networks and keeps the firewall in line.
type Gateway struct {
	cfg        Config
	st         Store
	view       View
	nets       Namespaces
	fw         Firewall
	alloc      *netns.Allocator
	log        *slog.Logger
	firstRetry time.Duration

	mu sync.Mutex // serialises applying, and guards what follows
	// inflight are the attachments being made, by namespace name: in every apply, denying
	// everything, until the view shows their VM ready (or the attempt ends).
	inflight map[string]netns.Attachment
	// retired names the networks being removed whose VMs the view may still show live:
	// their rules go now, not when the view catches up.
	retired map[string]bool
	applied *firewall.Desired // the state in force (the last applied), nil before the first
	// appliedKey is the rendering of applied without its allowed_tcp elements, whose
	// timeouts shrink by the second: an apply is skipped when the rest is unchanged.
	appliedKey string
	// inForce names the sandboxes of applied by address.
	inForce map[netip.Addr]string
	// tcp is the allowed_tcp book of each sandbox of the desired state, by name (tcp.go).
	tcp map[string]*vmTCP
	// books is the allowed_tcp books of the table in force by sandbox address, published
	// after each apply for the readers that do not take mu (names of DNS answers, records).
	books atomic.Pointer[map[netip.Addr]*vmTCP]
	// tcpBehind: admissions were dropped and the apply that was to remove them failed.
	tcpBehind bool
	// tcpGone is the addresses of sandboxes that went away with connections opened
	// through their sets, whose cut (FlushTCP) is still to do.
	tcpGone  map[netip.Addr]bool
	now      func() time.Time // the clock of admissions' expiry; tests move it
	attempts *rate.Limiter    // records of denied attempts, all sandboxes together
	// seen is this node's VMs' networks as the view showed them at the last apply: when
	// they change, a round is due.
	seen map[vmKey]store.Network

	// repair names the namespaces of ready VMs to create or repair in the next round: all
	// of them at start, then those whose repair failed. Only rounds use it.
	repair map[string]bool
	// foreign names the namespaces on this host of other nodes' VMs that were logged
	// (warnForeign). Only rounds use it.
	foreign map[string]bool

	behind   chan struct{}          // an apply outside the follower failed: it retries
	wake     chan struct{}          // the view changed this node's VMs: a round is due
	status   atomic.Pointer[status] // the outcome of the last apply, nil before the first
	enforced follow.Revision        // the view revision of the last table in force
	own      atomic.Int64           // this node's live VMs in the last desired state
	done     sync.WaitGroup         // the goroutines Run started
}

// status is the outcome of the last apply: err is nil when the table in force is the one
// the view asks for.
type status struct{ err error }

// New makes a gateway. nets and fw operate in the process's own network namespace.
func New(st Store, v View, nets Namespaces, fw Firewall, cfg Config) (*Gateway, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("gateway: no node ID: a transparent gateway runs the VMs of its own node, and must know which node it is")
	}
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
	if cfg.TCPMinTTL <= 0 {
		cfg.TCPMinTTL = DefaultTCPMinTTL
	}
	if cfg.TCPGrace <= 0 {
		cfg.TCPGrace = DefaultTCPGrace
	}
	if cfg.Sink == nil {
		cfg.Sink = events.Discard
	}
	return &Gateway{
		cfg: cfg, st: st, view: v, nets: nets, fw: fw, alloc: alloc,
		log:        cfg.Logger.With("node", cfg.NodeID),
		firstRetry: min(time.Second, cfg.Resync),
		inflight:   make(map[string]netns.Attachment),
		retired:    make(map[string]bool),
		repair:     make(map[string]bool),
		foreign:    make(map[string]bool),
		behind:     make(chan struct{}, 1),
		wake:       make(chan struct{}, 1),
		now:        time.Now,
		tcp:        make(map[string]*vmTCP),
		attempts:   rate.NewLimiter(attemptRate, attemptBurst),
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

// VMs is how many VMs this node runs: its VMs whose network is live in the firewall's
// latest desired state. The node's heartbeat reports it.
func (g *Gateway) VMs() int { return int(g.own.Load()) }

// Run applies the firewall, turns on forwarding, runs a first round of reconciling (see the
// package doc), and then keeps the firewall and the VMs in line with the view and the store
// until ctx ends. It returns once the first round is done. It fails if the first apply
// fails, or if the store or the namespaces cannot be read; a VM whose step fails is retried
// in the background.
func (g *Gateway) Run(ctx context.Context) error {
	// The table first, and forwarding after it, so that a gateway whose first apply fails
	// has nothing up that the table does not govern.
	g.mu.Lock()
	err := g.applyLocked(true)
	g.mu.Unlock()
	if err != nil {
		return err
	}
	if err := g.nets.EnableForwarding(); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, roundTimeout)
	defer cancel()
	vms, present, err := g.read(rctx)
	if err != nil {
		return err
	}
	roundErr := g.reconcileVMs(rctx, vms, present, true)
	if roundErr != nil {
		g.log.Warn("gateway: some VMs could not be reconciled at start; retrying")
	}
	g.done.Add(2)
	go func() { defer g.done.Done(); g.follow(ctx) }()
	go func() { defer g.done.Done(); g.reconcileLoop(ctx, roundErr != nil) }()
	return nil
}

// Wait returns once the work that Run started in the background has stopped, after Run's
// context ended: then nothing of the gateway writes to the store or the kernel any more.
func (g *Gateway) Wait() { g.done.Wait() }

// follow applies the firewall whenever the view changes, and on every resync even
// unchanged (it repairs a table changed by hand). A failed apply leaves the previous table
// in force; it is retried with a growing delay until one succeeds. An apply that finds this
// node's VMs changed in the view wakes the reconciler (see desiredLocked).
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

// fallBehind tells the follower that an apply failed outside it, so that it retries.
func (g *Gateway) fallBehind() {
	select {
	case g.behind <- struct{}{}:
	default:
	}
}

// applyLocked builds the desired firewall state from the view (plus the attachments in
// flight) and applies it, unless it is the state in force and force is off: the view
// signals every VM change, most of which (sessions of VMs without a sandbox network, policy
// changes that do not touch allowed_cidrs, other nodes' VMs) leave the table as it is. Then
// it removes conntrack entries that a tightened policy no longer allows, so that
// established forwarded flows are cut too.
func (g *Gateway) applyLocked(force bool) error {
	rev := g.view.Revision() // before reading the VMs: they reflect at least rev
	d, cut := g.desiredLocked(g.now())
	// Admissions dropped by an apply that failed are still in the kernel: the next apply
	// must not be skipped for want of a difference elsewhere.
	cut = cut || g.tcpBehind
	key := renderKey(d)
	if !force && !cut && g.applied != nil && key == g.appliedKey {
		// The table is the same, but a VM that became ready (or changed) may have a new
		// book, which the readers that do not take mu must see.
		g.publishBooksLocked(d)
		g.flushTCPLocked()
		g.status.Store(&status{})
		g.enforced.Advance(rev)
		return nil
	}
	if err := g.fw.Apply(d); err != nil {
		g.tcpBehind = cut
		err = fmt.Errorf("gateway: firewall: %w", err)
		g.status.Store(&status{err: err})
		return err
	}
	before := make(map[string]firewall.Sandbox)
	if g.applied != nil {
		for _, s := range g.applied.Sandboxes {
			before[s.Name] = s
		}
	}
	for _, s := range d.Sandboxes {
		// A monitor sandbox's kernel forwarded everything: back in enforce, the flows it
		// opened outside Allowed go as after a tightening (replies would still come in).
		if prev, ok := before[s.Name]; ok && (!covers(s.Allowed, prev.Allowed) || prev.Monitor && !s.Monitor) {
			if _, err := g.fw.FlushConntrack(s.Addr, s.Allowed); err != nil {
				g.log.Warn("gateway: removing conntrack entries of a tightened policy", "netns", s.Name, "err", err)
			}
		}
	}
	g.applied, g.appliedKey, g.tcpBehind = &d, key, false
	g.inForce = make(map[netip.Addr]string, len(d.Sandboxes))
	for _, s := range d.Sandboxes {
		g.inForce[s.Addr] = s.Name
	}
	g.publishBooksLocked(d)
	g.flushTCPLocked()
	g.status.Store(&status{})
	g.enforced.Advance(rev)
	return nil
}

// publishBooksLocked publishes the books of the sandboxes of d, the table in force, for the
// readers that do not take mu (books).
func (g *Gateway) publishBooksLocked(d firewall.Desired) {
	books := make(map[netip.Addr]*vmTCP, len(d.Sandboxes))
	for _, s := range d.Sandboxes {
		if st := g.tcp[s.Name]; st != nil && g.inForce[s.Addr] == s.Name {
			books[s.Addr] = st
		}
	}
	g.books.Store(&books)
}

// renderKey is d's rendering without the allowed_tcp elements: what must be applied anew
// when it changes. Admissions reach the kernel through Admit, each apply carries them with
// their remaining lifetimes, and a dropped one forces an apply (desiredLocked).
func renderKey(d firewall.Desired) string {
	d.Sandboxes = slices.Clone(d.Sandboxes)
	for i := range d.Sandboxes {
		d.Sandboxes[i].TCP, d.Sandboxes[i].Fast = nil, nil
	}
	return firewall.Render(d)
}

// desiredLocked is the firewall state of this node's VMs whose network the view shows live,
// and of the attachments in flight (whose rules deny everything: their VMs are not ready
// yet). An attachment stops being in flight once the view shows its VM ready at its address;
// a retired network is left out even while the view still shows it.
//
// Each live sandbox carries its allowed_tcp admissions that have not expired and that its
// policy still allows (tcpLocked; cut says some were dropped), and monitor mode when every
// layer of its policy is monitor. The books of sandboxes no longer in it are dropped.
func (g *Gateway) desiredLocked(now time.Time) (d firewall.Desired, cut bool) {
	d = firewall.Desired{
		ProxyPort:   g.cfg.ProxyPort,
		DNSPort:     g.cfg.DNSPort,
		SandboxCIDR: g.cfg.SandboxCIDR,
		HardDeny:    g.cfg.Env.Classifier().HardDenyPrefixes(),
		IfacePrefix: netns.HostIfacePrefix,
		FastPath:    g.cfg.FastPath,
	}
	live := make(map[string]bool)
	books := make(map[string]bool)
	seen := make(map[vmKey]store.Network)
	for _, vm := range g.view.VMs() {
		if !g.owns(vm.Network) {
			continue
		}
		seen[vmKey{vm.Tenant, vm.ID}] = vm.Network
		if !vm.Network.Live() {
			continue
		}
		a, err := g.attachmentOf(vm.Tenant, vm.ID, vm.Network)
		if err != nil {
			continue // a round logs it, when it re-adopts the VM
		}
		live[a.Name] = true
		if g.retired[a.Name] {
			continue
		}
		if in, ok := g.inflight[a.Name]; ok {
			if in.Addr != a.Addr {
				// The view still shows an earlier VM of that name, whose address was in use
				// when this one's was taken: the attachment being made is what is there.
				continue
			}
			delete(g.inflight, a.Name)
		}
		s := sandbox(a, vm.Allowed)
		s.Monitor = vm.Effective != nil && vm.Effective.MonitorOnly()
		var dropped, fastDropped bool
		s.TCP, dropped = g.tcpLocked(a.Name, vm, a.Addr, now, books)
		s.Fast, fastDropped = g.fastLocked(vm, g.tcp[a.Name], now)
		cut = cut || dropped || fastDropped
		d.Sandboxes = append(d.Sandboxes, s)
	}
	g.dropGoneLocked(books)
	g.own.Store(int64(len(d.Sandboxes)))
	for _, a := range g.inflight {
		d.Sandboxes = append(d.Sandboxes, sandbox(a, nil))
	}
	for name := range g.retired {
		if !live[name] { // the view has caught up
			delete(g.retired, name)
		}
	}
	// A round reads every VM of the fleet from the store: it is woken when one of this
	// node's comes, goes or changes its network, not by every write to the store.
	if !maps.Equal(seen, g.seen) {
		g.seen = seen
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
	slices.SortFunc(d.Sandboxes, func(a, b firewall.Sandbox) int { return a.Addr.Compare(b.Addr) })
	return d, cut
}

type vmKey struct{ tenant, id string }

// owns reports whether n is a network of this node.
func (g *Gateway) owns(n store.Network) bool {
	return n.Mode == "netns" && n.Node == g.cfg.NodeID
}

func sandbox(a netns.Attachment, allowed []netip.Prefix) firewall.Sandbox {
	return firewall.Sandbox{Name: a.Name, HostIface: a.HostIface, Addr: a.Addr, Gateway: a.Gateway, Allowed: allowed}
}

// subnetOf is the /30 of a stored network.
func subnetOf(n store.Network) (netip.Prefix, error) {
	addr, err := netip.ParseAddr(n.Address)
	if err != nil {
		return netip.Prefix{}, errors.New("no address")
	}
	return netip.PrefixFrom(addr, 30).Masked(), nil
}

// attachmentOf rebuilds the attachment of a stored VM from its tenant, ID and address. An
// address outside this node's range is refused: the firewall would refuse the whole table
// for it, and one VM must not keep every other's rules from changing.
func (g *Gateway) attachmentOf(tenant, vmID string, n store.Network) (netns.Attachment, error) {
	p, err := subnetOf(n)
	if err != nil {
		return netns.Attachment{}, err
	}
	if !g.cfg.SandboxCIDR.Contains(p.Addr()) {
		return netns.Attachment{}, fmt.Errorf("address %s is outside this node's sandbox range %s", n.Address, g.cfg.SandboxCIDR)
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
