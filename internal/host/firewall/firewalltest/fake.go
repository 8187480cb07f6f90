// Package firewalltest fakes the firewall for tests that run without root: Fake takes the
// calls a gateway makes on a firewall.Firewall and keeps, instead of a kernel table, the
// text that firewall.Render gives for the state in force. A golden file of that text is
// the real rule set, line for line, that the kernel would hold.
//
// Admit and Revoke change the tcp_<name> set of the state in force, as the kernel does
// (Dump shows the elements with the timeouts given; the fake has no clock, nothing
// expires). Connections opened with Connect stand for the kernel's conntrack entries of
// allowed_tcp flows, so that FlushTCP has something to cut and a test can see what it cut.
//
// The fast path is kept likewise: AdmitFast and RevokeFast change the fast_<name> set,
// VerifyFast stands for a flow egressd verified (a conntrack entry with MarkFast), which
// CutFast cuts.
package firewalltest

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/host/firewall"
)

// Fake stands for a firewall.Firewall. Like the kernel, it keeps the last state applied:
// a failed Apply leaves the previous one in force. The zero value is a firewall with no
// table. It is safe for concurrent use.
type Fake struct {
	mu       sync.Mutex
	inForce  *firewall.Desired // nil: no table
	applies  int               // successful Applies
	failures int               // Applies that failed
	failWith error             // what every Apply returns while set
	flushes  []Flush
	applied  chan struct{}
	conns    []Conn     // open allowed_tcp connections, in the order opened
	cuts     []Conn     // connections FlushTCP cut, since the last call of Cuts
	fast     []FastFlow // verified fast-path flows, in the order verified
	fastCuts []FastFlow // flows CutFast cut, since the last call of FastCuts
}

// Conn is an open TCP connection admitted by a tcp_<name> set: a conntrack entry carrying
// firewall.MarkTCP.
type Conn struct {
	Sandbox, Dst netip.Addr
	Port         uint16
}

// String writes a connection as "100.96.0.2 -> 203.0.113.10:22".
func (c Conn) String() string {
	return c.Sandbox.String() + " -> " + netip.AddrPortFrom(c.Dst, c.Port).String()
}

// Flush is one call of FlushConntrack: the flows of Sandbox to destinations outside Keep.
type Flush struct {
	Sandbox netip.Addr
	Keep    []netip.Prefix
}

// String writes a flush as a test's expectation can: "100.96.0.2 keep 203.0.113.0/25".
func (f Flush) String() string {
	keep := make([]string, len(f.Keep))
	for i, p := range f.Keep {
		keep[i] = p.String()
	}
	return f.Sandbox.String() + " keep " + strings.Join(keep, ",")
}

// Apply checks d as the real Apply does and puts it in force, or fails with the error
// given to Fail.
func (f *Fake) Apply(d firewall.Desired) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failWith != nil {
		f.failures++
		return f.failWith
	}
	if err := d.Validate(); err != nil {
		f.failures++
		return err
	}
	d.Sandboxes = slices.Clone(d.Sandboxes)
	for i := range d.Sandboxes {
		d.Sandboxes[i].Allowed = slices.Clone(d.Sandboxes[i].Allowed)
	}
	d.HardDeny = slices.Clone(d.HardDeny)
	for i := range d.Sandboxes {
		// What Apply ignores (expired, IPv6) is not in the kernel's sets: Connect and
		// VerifyFast must not see it.
		d.Sandboxes[i].TCP = inKernel(d.Sandboxes[i].TCP)
		d.Sandboxes[i].Fast = inKernel(d.Sandboxes[i].Fast)
	}
	f.inForce = &d
	f.applies++
	if f.applied != nil {
		select {
		case f.applied <- struct{}{}:
		default:
		}
	}
	return nil
}

func inKernel(eps []firewall.Endpoint) []firewall.Endpoint {
	return slices.DeleteFunc(slices.Clone(eps), func(e firewall.Endpoint) bool {
		return !e.Addr.Unmap().Is4() || e.Timeout < time.Millisecond
	})
}

// FlushConntrack records the call. The fake keeps no flows: it deletes none.
func (f *Fake) FlushConntrack(sandbox netip.Addr, keep []netip.Prefix) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushes = append(f.flushes, Flush{Sandbox: sandbox, Keep: slices.Clone(keep)})
	return 0, nil
}

// Fail makes every Apply from now on fail with err (nil: succeed again).
func (f *Fake) Fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failWith = err
}

// Dump is the table in force as `nft list table inet egressd` would show it (see
// firewall.Render), or "" when nothing was ever applied.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.inForce == nil {
		return ""
	}
	return firewall.Render(*f.inForce)
}

// Sandboxes names the sandboxes of the table in force, sorted.
func (f *Fake) Sandboxes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	if f.inForce != nil {
		for _, s := range f.inForce.Sandboxes {
			out = append(out, s.Name)
		}
	}
	slices.Sort(out)
	return out
}

// Applies counts the successful and the failed Applies so far.
func (f *Fake) Applies() (ok, failed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applies, f.failures
}

// Flushes returns the FlushConntrack calls since the last call of Flushes, in order.
func (f *Fake) Flushes() []Flush {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.flushes
	f.flushes = nil
	return out
}

// Applied is signalled (without blocking, so signals merge) after every successful Apply:
// a test that waits for a gateway working in the background waits on it.
func (f *Fake) Applied() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.applied == nil {
		f.applied = make(chan struct{}, 1)
	}
	return f.applied
}

// Admit puts eps into the tcp set of sandbox name in the state in force, replacing the
// timeout of an element already there. Like the kernel, it fails for a sandbox the table
// does not have, and for an endpoint the real Admit refuses (in which case nothing changes).
func (f *Fake) Admit(name string, eps []firewall.Endpoint) error {
	return f.change("admit", name, eps, false, admit)
}

func admit(set []firewall.Endpoint, e firewall.Endpoint) []firewall.Endpoint {
	return append(revoke(set, e), e)
}

func revoke(set []firewall.Endpoint, e firewall.Endpoint) []firewall.Endpoint {
	return slices.DeleteFunc(set, func(x firewall.Endpoint) bool { return same(x, e) })
}

// Revoke removes eps from the tcp set of sandbox name; an element not there is no error.
func (f *Fake) Revoke(name string, eps []firewall.Endpoint) error {
	return f.change("revoke", name, keysOnly(eps), false, revoke)
}

// keysOnly gives eps a timeout that is kept: a removal needs the key only.
func keysOnly(eps []firewall.Endpoint) []firewall.Endpoint {
	keys := make([]firewall.Endpoint, len(eps))
	for i, e := range eps {
		keys[i] = firewall.Endpoint{Addr: e.Addr, Port: e.Port, Timeout: time.Hour}
	}
	return keys
}

func same(a, b firewall.Endpoint) bool { return a.Addr.Unmap() == b.Addr.Unmap() && a.Port == b.Port }

// change applies apply to each of eps in the tcp set (fast: the fast set) of sandbox name.
func (f *Fake) change(op, name string, eps []firewall.Endpoint, fast bool, apply func([]firewall.Endpoint, firewall.Endpoint) []firewall.Endpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failWith != nil {
		return f.failWith
	}
	i := f.sandboxLocked(name)
	if i < 0 {
		return fmt.Errorf("firewalltest: %s: no sandbox %q in the table", op, name)
	}
	sbx := &f.inForce.Sandboxes[i]
	set := &sbx.TCP
	if fast {
		if !f.inForce.FastPath || sbx.Monitor {
			return fmt.Errorf("firewalltest: %s: sandbox %q has no fast set (FastPath off, or Monitor)", op, name)
		}
		set = &sbx.Fast
	}
	tcp := slices.Clone(*set)
	for _, e := range eps {
		if !e.Addr.IsValid() || e.Port == 0 {
			return fmt.Errorf("firewalltest: %s %s: endpoint %v:%d: invalid address or port 0", op, name, e.Addr, e.Port)
		}
		if fast && e.Port != 443 {
			return fmt.Errorf("firewalltest: %s %s: endpoint %v:%d: the fast path is for port 443 only", op, name, e.Addr, e.Port)
		}
		if !e.Addr.Unmap().Is4() || e.Timeout < time.Millisecond {
			continue // ignored, as by the real Admit
		}
		tcp = apply(tcp, firewall.Endpoint{Addr: e.Addr.Unmap(), Port: e.Port, Timeout: e.Timeout})
	}
	*set = tcp
	return nil
}

func (f *Fake) sandboxLocked(name string) int {
	if f.inForce == nil {
		return -1
	}
	return slices.IndexFunc(f.inForce.Sandboxes, func(s firewall.Sandbox) bool { return s.Name == name })
}

// TCP lists the tcp set of sandbox name in force, as the table holds it: sorted, one per
// (address, port), as "203.0.113.10 . 22 timeout 2m".
func (f *Fake) TCP(name string) []string {
	return f.list(name, func(s firewall.Sandbox) []firewall.Endpoint { return s.TCP })
}

func (f *Fake) list(name string, set func(firewall.Sandbox) []firewall.Endpoint) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.sandboxLocked(name)
	if i < 0 {
		return nil
	}
	eps := slices.Clone(set(f.inForce.Sandboxes[i]))
	slices.SortFunc(eps, func(a, b firewall.Endpoint) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	out := make([]string, len(eps))
	for j, e := range eps {
		out[j] = e.String()
	}
	return out
}

// Connect opens a TCP connection from sandbox to dst:port as the kernel would: only if
// the sandbox's tcp set in force has (dst, port). It reports whether it did.
func (f *Fake) Connect(sandbox, dst netip.Addr, port uint16) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.inForce == nil {
		return false
	}
	for _, s := range f.inForce.Sandboxes {
		if s.Addr.Unmap() != sandbox.Unmap() {
			continue
		}
		if slices.ContainsFunc(s.TCP, func(e firewall.Endpoint) bool { return e.Addr == dst.Unmap() && e.Port == port }) {
			f.conns = append(f.conns, Conn{Sandbox: sandbox.Unmap(), Dst: dst.Unmap(), Port: port})
			return true
		}
	}
	return false
}

// FlushTCP cuts the open connections of sandbox that keep does not keep (nil: all), and
// returns how many.
func (f *Fake) FlushTCP(sandbox netip.Addr, keep func(dst netip.Addr, port uint16) bool) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failWith != nil {
		return 0, f.failWith
	}
	n := 0
	f.conns = slices.DeleteFunc(f.conns, func(c Conn) bool {
		if c.Sandbox != sandbox.Unmap() || (keep != nil && keep(c.Dst, c.Port)) {
			return false
		}
		f.cuts = append(f.cuts, c)
		n++
		return true
	})
	return n, nil
}

// Conns lists the open connections, in the order opened.
func (f *Fake) Conns() []Conn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.conns)
}

// Cuts returns the connections FlushTCP cut since the last call of Cuts, in order.
func (f *Fake) Cuts() []Conn {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.cuts
	f.cuts = nil
	return out
}
