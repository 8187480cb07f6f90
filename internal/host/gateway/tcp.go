package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/dataplane/dnsfilter"
	"github.com/egressd/egressd/internal/host/firewall"
	"github.com/egressd/egressd/policy"
)

// Defaults of the admissions' lifetime (DESIGN §2.6): an answer's addresses are open for
// its TTL, at least DefaultTCPMinTTL, plus DefaultTCPGrace.
const (
	DefaultTCPMinTTL = 60 * time.Second
	DefaultTCPGrace  = 60 * time.Second
)

// Bounds of what the gateway keeps per VM, so that a sandbox looking up names without end
// costs bounded memory. maxAdmissions bounds the live (address, port) pairs: past it, an
// answer that would open more is refused (the DNS filter answers SERVFAIL) until some
// expire. maxRemembered bounds the addresses remembered with the name looked up for them
// (records of denied attempts name it) and the pairs once admitted (records of flows that
// outlive their admission, and the flows a tightening keeps): the oldest are forgotten.
const (
	maxAdmissions = 1 << 16
	maxRemembered = 1 << 13
)

// endpoint is one (IPv4 address, port) of a VM's admissions.
type endpoint struct {
	addr netip.Addr
	port uint16
}

// admission is one open (address, port): the name whose answer opened it, the decision
// that allowed it (the record of its flows says it), and when it closes to new flows.
type admission struct {
	name    string
	d       policy.Decision
	expires time.Time
}

// vmTCP is what the gateway keeps of one sandbox for allowed_tcp: its admissions (what its
// tcp_<name> set holds), and what it remembers for records and cuts.
type vmTCP struct {
	tenant, vmID string
	addr         netip.Addr
	admits       map[endpoint]admission
	admitted     *bounded[endpoint, admission] // every pair once admitted, the latest admission
	// names is the name last looked up for an address. It has its own lock, so that the
	// answers of web names (most of them) never wait for an apply: see books.
	namesMu sync.Mutex
	names   *bounded[netip.Addr, string]
	eff     *policy.Effective // the policy of the last desired state
	flushed *policy.Effective // the policy the established flows were last cut by
	// inherited: the sandbox was in the first table this run applied, so the kernel may
	// hold connections that an earlier run of egressd admitted, of which nothing is known.
	inherited bool
	// stale: the book is new after the first table, so marked connections from its
	// address can only be another sandbox's (one that had the address before: a VM
	// removed, its address given to the next one, or one removed while egressd was down).
	// The forward chain passes them by their mark whatever the set holds, so they are cut
	// before this sandbox's first policy counts as judged.
	stale bool
	// fast is the fast path's part (fast.go).
	fast *fastState
}

func newVMTCP(vm VM, addr netip.Addr) *vmTCP {
	return &vmTCP{
		tenant: vm.Tenant, vmID: vm.ID, addr: addr,
		admits:   make(map[endpoint]admission),
		admitted: newBounded[endpoint, admission](maxRemembered),
		names:    newBounded[netip.Addr, string](maxRemembered),
		fast:     newFastState(),
	}
}

// OpenTCP opens the kernel for the sandbox that asked (dnsfilter.TCPOpener): for every IPv4
// address a of the answer and every port p of Effective.TCPPorts(name), the pair (a, p) if
// Decide allows name on it at a, until now + max(TTL, TCPMinTTL) + TCPGrace (an admission
// already longer keeps its expiry). It remembers the name for each address, for the
// records of denied attempts. The admissions go to the kernel (Admit) under the lock that
// applies hold, and into the book that every apply hands the kernel whole, so that no
// apply loses them. It fails when there is something to open and the kernel cannot take
// it, or the sandbox's rules are not in force: the DNS filter then answers SERVFAIL.
//
// The VM is the one whose network has the source address, in the view, and only if the
// DNS filter identified the same VM: one VM's lookup never opens anything for another.
func (g *Gateway) OpenTCP(_ context.Context, a dnsfilter.Answered) error {
	now := g.now()
	vm, ok := g.view.VMByAddr(a.Src)
	if !ok || vm.Tenant != a.Tenant || vm.ID != a.VMID || !g.owns(vm.Network) || !vm.Network.Live() {
		return fmt.Errorf("gateway: open tcp: %s is no live sandbox of this node's (asked as %s/%s)", a.Src, a.Tenant, a.VMID)
	}
	if st := g.book(vm, a.Src); st != nil {
		st.namesMu.Lock()
		for _, ip := range a.Addrs {
			st.names.put(ip.Unmap(), a.Name)
		}
		st.namesMu.Unlock()
	}
	if vm.Effective == nil {
		return nil
	}
	wantTCP := len(vm.Effective.TCPPorts(a.Name)) > 0
	if !wantTCP && !g.cfg.FastPath {
		return nil // a web name, or none: the proxy judges what the sandbox does with it
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	// Read again under the lock: an apply that ran since judged the admissions by the
	// policy it read, and this one must not be judged by an older one.
	vm, ok = g.view.VMByAddr(a.Src)
	if !ok || vm.Tenant != a.Tenant || vm.ID != a.VMID || vm.Effective == nil {
		return fmt.Errorf("gateway: open tcp: %s/%s is gone", a.Tenant, a.VMID)
	}
	st := g.bookOf(vm, a.Src)
	life := max(time.Duration(a.TTL)*time.Second, g.cfg.TCPMinTTL) + g.cfg.TCPGrace
	if wantTCP {
		if err := g.openTCPLocked(vm, st, a, now, life); err != nil {
			return err
		}
	}
	if g.cfg.FastPath {
		return g.openFastLocked(vm, st, a, now, life)
	}
	return nil
}

// openTCPLocked is OpenTCP's allowed_tcp part, with g.mu held: st is the VM's book in the
// table in force (nil before its rules are).
func (g *Gateway) openTCPLocked(vm VM, st *vmTCP, a dnsfilter.Answered, now time.Time, life time.Duration) error {
	eff := vm.Effective
	ports := eff.TCPPorts(a.Name)
	add := make(map[endpoint]admission)
	for _, ip := range a.Addrs {
		ip = ip.Unmap()
		if !ip.Is4() {
			continue // the kernel forwards no IPv6 from a sandbox
		}
		for _, p := range ports {
			d := eff.Decide(policy.Conn{Host: a.Name, IP: ip, Port: p, Transport: policy.TCP})
			if !d.Allow {
				continue
			}
			exp := now.Add(life)
			if st != nil {
				if old, ok := st.admits[endpoint{ip, p}]; ok && old.expires.After(exp) {
					exp = old.expires
				}
			}
			add[endpoint{ip, p}] = admission{name: a.Name, d: d, expires: exp}
		}
	}
	if len(add) == 0 {
		return nil
	}
	if st == nil {
		return fmt.Errorf("gateway: open tcp: the rules of %s/%s are not in force yet", vm.Tenant, vm.ID)
	}
	st.prune(now)
	if len(st.admits)+len(add) > maxAdmissions {
		return fmt.Errorf("gateway: open tcp: %s/%s has %d endpoints open, the most a sandbox may have", vm.Tenant, vm.ID, len(st.admits))
	}
	eps := make([]firewall.Endpoint, 0, len(add))
	for k, ad := range add {
		eps = append(eps, firewall.Endpoint{Addr: k.addr, Port: k.port, Timeout: ad.expires.Sub(now)})
	}
	if err := g.fw.Admit(g.inForce[a.Src], eps); err != nil {
		return fmt.Errorf("gateway: open tcp for %s/%s: %w", vm.Tenant, vm.ID, err)
	}
	for k, ad := range add {
		st.admits[k] = ad
		st.admitted.put(k, ad)
	}
	return nil
}

// prune forgets the admissions that expired: the kernel has removed their elements.
func (st *vmTCP) prune(now time.Time) {
	for k, ad := range st.admits {
		if !ad.expires.After(now) {
			delete(st.admits, k)
		}
	}
}

// tcpLocked is the allowed_tcp part of a VM's sandbox in the desired state: its admissions
// that have not expired and that its effective policy now still allows (each judged again
// as when it was opened), with their remaining lifetimes. cut says some were dropped: the
// table must be replaced now, and the flows to them cut. A VM seen at another address, or
// an address that went to another VM, starts afresh.
func (g *Gateway) tcpLocked(name string, vm VM, addr netip.Addr, now time.Time, keep map[string]bool) (eps []firewall.Endpoint, cut bool) {
	keep[name] = true
	st := g.tcp[name]
	if st == nil || st.tenant != vm.Tenant || st.vmID != vm.ID || st.addr != addr {
		if st != nil && (st.admitted.len() > 0 || st.inherited || st.fastVerified()) {
			g.goneTCPLocked(st.addr)
		}
		st = newVMTCP(vm, addr)
		st.inherited = g.applied == nil
		st.stale = g.applied != nil
		st.fast.inherited, st.fast.stale = st.inherited, st.stale
		g.tcp[name] = st
	}
	st.eff = vm.Effective
	st.prune(now)
	for k, ad := range st.admits {
		if !stillAllowed(vm.Effective, ad.name, k) {
			delete(st.admits, k)
			cut = true
			continue
		}
		eps = append(eps, firewall.Endpoint{Addr: k.addr, Port: k.port, Timeout: ad.expires.Sub(now)})
	}
	return eps, cut
}

// stillAllowed judges an admission again, as OpenTCP did.
func stillAllowed(eff *policy.Effective, name string, k endpoint) bool {
	if eff == nil {
		return false
	}
	return eff.Decide(policy.Conn{Host: name, IP: k.addr, Port: k.port, Transport: policy.TCP}).Allow
}

// dropGoneLocked forgets the sandboxes that are no longer in the desired state: a VM that
// goes away drops its admissions (its set goes with its rules), and the connections it
// opened through its set are cut (flushTCPLocked): their conntrack entries would
// otherwise outlive it, marked, for the next sandbox at its address to send on.
func (g *Gateway) dropGoneLocked(keep map[string]bool) {
	for name, st := range g.tcp {
		if !keep[name] {
			if st.admitted.len() > 0 || st.inherited || st.fastVerified() {
				g.goneTCPLocked(st.addr)
			}
			delete(g.tcp, name)
		}
	}
}

func (g *Gateway) goneTCPLocked(a netip.Addr) {
	if g.tcpGone == nil {
		g.tcpGone = make(map[netip.Addr]bool)
	}
	g.tcpGone[a] = true
}

// cutGoneLocked cuts the connections of the sandboxes gone (tcpGone). An address that a
// sandbox of the desired state holds again is left to that sandbox's book, which is
// stale (new) and cuts whatever it did not admit itself.
func (g *Gateway) cutGoneLocked() {
	held := make(map[netip.Addr]bool, len(g.tcp))
	for _, st := range g.tcp {
		held[st.addr] = true
	}
	for a := range g.tcpGone {
		if !held[a] {
			if _, err := g.fw.FlushTCP(a, nil); err != nil {
				g.log.Warn("gateway: cutting allowed_tcp connections of a sandbox gone", "addr", a, "err", err)
				continue // again at the next apply
			}
			if g.cfg.FastPath {
				if _, err := g.fw.CutFast(a, nil); err != nil {
					g.log.Warn("gateway: cutting fast-path flows of a sandbox gone", "addr", a, "err", err)
					continue
				}
			}
		}
		delete(g.tcpGone, a)
	}
}

// flushTCPLocked cuts, for every sandbox whose effective policy changed since its flows
// were last judged, the connections it opened through its set (ct mark MarkTCP) that the
// new policy no longer allows (DESIGN §2.6: a change that removes the entry cuts them).
// A connection is judged by the name whose answer opened its address and port, as its
// admission was; one whose name is forgotten (or that an earlier run of egressd opened) is
// cut: the gateway cannot say the policy allows it. A sandbox that never opened anything
// has no such flows and costs no conntrack dump.
func (g *Gateway) flushTCPLocked() {
	g.cutGoneLocked()
	for name, st := range g.tcp {
		g.flushFastLocked(name, st)
		if st.flushed == st.eff && !st.stale {
			continue
		}
		if !st.stale && (st.flushed == nil || (st.admitted.len() == 0 && !st.inherited)) {
			// The sandbox's first policy is the one its connections were opened under
			// (a restart cuts nothing), or it has none to cut.
			st.flushed = st.eff
			continue
		}
		eff := st.eff
		keep := func(dst netip.Addr, port uint16) bool {
			k := endpoint{dst.Unmap(), port}
			ad, ok := st.admits[k]
			if !ok {
				ad, ok = st.admitted.get(k)
			}
			return ok && stillAllowed(eff, ad.name, k)
		}
		if _, err := g.fw.FlushTCP(st.addr, keep); err != nil {
			g.log.Warn("gateway: cutting allowed_tcp connections of a tightened policy", "netns", name, "err", err)
			continue // again at the next apply
		}
		st.flushed, st.inherited, st.stale = st.eff, false, false
	}
}

// bounded is a map that keeps at most max keys, forgetting the oldest first.
type bounded[K comparable, V any] struct {
	m     map[K]V
	order []K // a ring of the keys, oldest at next once full
	next  int
	limit int
}

func newBounded[K comparable, V any](limit int) *bounded[K, V] {
	return &bounded[K, V]{m: make(map[K]V), limit: limit}
}

func (b *bounded[K, V]) put(k K, v V) {
	if _, ok := b.m[k]; !ok {
		if len(b.order) < b.limit {
			b.order = append(b.order, k)
		} else {
			delete(b.m, b.order[b.next])
			b.order[b.next] = k
			b.next = (b.next + 1) % len(b.order)
		}
	}
	b.m[k] = v
}

func (b *bounded[K, V]) get(k K) (V, bool) {
	v, ok := b.m[k]
	return v, ok
}

func (b *bounded[K, V]) len() int { return len(b.m) }
