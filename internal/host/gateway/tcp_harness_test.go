package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/dnsfilter"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/host/firewall"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/policy"
)

// clock is the test's clock of admissions: it moves only when the test moves it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// kernelTCP stands for the kernel's side of allowed_tcp: each sandbox's tcp_<name> set
// (elements with their expiry by the test's clock, as Apply and Admit leave them) and the
// connections it admitted (established flows carrying the ct mark), which outlive their
// elements until FlushTCP cuts them.
type kernelTCP struct {
	mu      sync.Mutex
	clock   *clock
	sets    map[string]map[endpoint]time.Time // by sandbox name
	addrs   map[string]netip.Addr             // sandbox name → address
	flows   map[netip.Addr][]endpoint         // by sandbox address
	monitor map[string]bool
	flushed []netip.Addr // the sandboxes FlushTCP was called for, in order
	admits  int          // successful Admits
}

func (k *kernelTCP) now() time.Time {
	if k.clock == nil {
		return time.Now()
	}
	return k.clock.Now()
}

func (k *kernelTCP) apply(d firewall.Desired) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	k.sets, k.addrs, k.monitor = make(map[string]map[endpoint]time.Time), make(map[string]netip.Addr), make(map[string]bool)
	for _, s := range d.Sandboxes {
		k.addrs[s.Name], k.monitor[s.Name] = s.Addr, s.Monitor
		k.sets[s.Name] = make(map[endpoint]time.Time)
		k.put(s.Name, s.TCP, now)
	}
}

func (k *kernelTCP) put(name string, eps []firewall.Endpoint, now time.Time) {
	for _, e := range eps {
		if e.Addr.Unmap().Is4() && e.Timeout > 0 {
			k.sets[name][endpoint{e.Addr.Unmap(), e.Port}] = now.Add(e.Timeout)
		}
	}
}

func (f *fw) Admit(name string, eps []firewall.Endpoint) error {
	k := &f.kernel
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.sets[name]; !ok {
		return fmt.Errorf("admit: no sandbox %s in the table", name)
	}
	for _, e := range eps {
		if !e.Addr.IsValid() || e.Port == 0 {
			return fmt.Errorf("admit: bad endpoint %v", e)
		}
	}
	if err := f.Fake.Admit(name, eps); err != nil { // the table in force, for Dump
		return err
	}
	k.put(name, eps, k.now())
	k.admits++
	return nil
}

func (f *fw) FlushTCP(sandbox netip.Addr, keep func(netip.Addr, uint16) bool) (int, error) {
	k := &f.kernel
	k.mu.Lock()
	defer k.mu.Unlock()
	k.flushed = append(k.flushed, sandbox)
	if k.flows == nil {
		k.flows = make(map[netip.Addr][]endpoint)
	}
	kept := k.flows[sandbox][:0]
	n := 0
	for _, e := range k.flows[sandbox] {
		if keep != nil && keep(e.addr, e.port) {
			kept = append(kept, e)
		} else {
			n++
		}
	}
	k.flows[sandbox] = kept
	return n, nil
}

// connect is a sandbox's SYN to dst:port: the kernel forwards it (and tracks the flow) if
// the sandbox's set holds the pair, unexpired.
func (k *kernelTCP) connect(name, dst string, port uint16) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	e := endpoint{netip.MustParseAddr(dst), port}
	exp, ok := k.sets[name][e]
	if !ok || !exp.After(k.now()) {
		return false
	}
	if k.flows == nil {
		k.flows = make(map[netip.Addr][]endpoint)
	}
	a := k.addrs[name]
	k.flows[a] = append(k.flows[a], e)
	return true
}

// open lists the flows of sandbox name that are still up, as "203.0.113.10:22".
func (k *kernelTCP) open(name string) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, e := range k.flows[k.addrs[name]] {
		out = append(out, netip.AddrPortFrom(e.addr, e.port).String())
	}
	slices.Sort(out)
	return out
}

// elements lists the unexpired elements of sandbox name's set, as
// "203.0.113.10 . 22 for 2m0s".
func (k *kernelTCP) elements(name string) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	var out []string
	for e, exp := range k.sets[name] {
		if exp.After(now) {
			out = append(out, fmt.Sprintf("%s . %d for %s", e.addr, e.port, exp.Sub(now)))
		}
	}
	slices.Sort(out)
	return out
}

func (k *kernelTCP) flushes() []netip.Addr {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := k.flushed
	k.flushed = nil
	return out
}

// The fake internet of the TCP tests (DESIGN §10): public servers on 203.0.113.0/24 (in
// Public, as --public-cidrs), a private network on 198.51.100.0/24, whose 198.51.100.53 is
// hard-denied.
var tcpClassifier = &policy.Classifier{HardDeny: pfx("198.51.100.53/32"), Public: pfx("203.0.113.0/24")}

// newTCPWorld is a world whose addresses 203.0.113.0/24 count as public.
func newTCPWorld(t *testing.T) *world {
	t.Helper()
	w := newWorld(t)
	env, err := policy.NewEnv(tcpClassifier, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.env = env
	return w
}

// tcpNode is node A with a frozen clock, a recorder of its records, and the firewall's
// kernel side on that clock.
type tcpNode struct {
	*node
	clock *clock
	recs  *recorder
}

func (w *world) tcpNode() *tcpNode {
	w.t.Helper()
	return w.clockedNode(false)
}

// clockedNode is a tcpNode, its gateway running the fast path if fast.
func (w *world) clockedNode(fast bool) *tcpNode {
	w.t.Helper()
	n := w.nodeA()
	n.gw.cfg.FastPath = fast
	c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	n.gw.now = c.Now
	n.fw.kernel.clock = c
	r := &recorder{}
	n.gw.cfg.Sink = r
	return &tcpNode{node: n.run(), clock: c, recs: r}
}

// setTCPPolicy sets a VM's whole VM policy (normalised) and waits until n enforces it.
func (n *tcpNode) setTCPPolicy(tenant, id string, p policy.Policy) {
	n.w.t.Helper()
	np, _, err := p.WithDefaults().NormalizeFor(tcpClassifier)
	if err != nil {
		n.w.t.Fatal(err)
	}
	if _, err := n.w.st.PutPolicy(context.Background(), store.PolicyRecord{Tenant: tenant, Scope: store.ScopeVM, ID: id, Policy: np}); err != nil {
		n.w.t.Fatal(err)
	}
	n.enforced()
}

// vm makes a ready VM with policy p and returns its sandbox name and address.
func (n *tcpNode) vm(tenant, id string, p policy.Policy) (string, netip.Addr) {
	n.w.t.Helper()
	net := n.ready(tenant, id)
	n.setTCPPolicy(tenant, id, p)
	return netns.Name(tenant, id), netip.MustParseAddr(net.Address)
}

// answer is the DNS filter telling the gateway that the VM at src got addrs for name.
func (n *tcpNode) answer(src netip.Addr, tenant, id, name string, ttl uint32, addrs ...string) error {
	a := dnsfilter.Answered{Src: src, Tenant: tenant, VMID: id, Name: name, TTL: ttl}
	for _, s := range addrs {
		a.Addrs = append(a.Addrs, netip.MustParseAddr(s))
	}
	return n.gw.OpenTCP(context.Background(), a)
}

// recorder keeps the records the gateway sends.
type recorder struct {
	mu   sync.Mutex
	recs []events.Record
}

func (r *recorder) Record(rec events.Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
}

// take returns the records since the last take, without their times.
func (r *recorder) take() []events.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.recs
	r.recs = nil
	for i := range out {
		out[i].Time = time.Time{}
	}
	return out
}
