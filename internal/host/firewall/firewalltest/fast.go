package firewalltest

import (
	"net/netip"
	"slices"

	"github.com/egressd/egressd/internal/host/firewall"
)

// FastFlow is a verified fast-path flow: a conntrack entry carrying firewall.MarkFast.
type FastFlow struct {
	Src, Dst netip.AddrPort // the sandbox's address and port; the original destination
}

// String writes a flow as "100.96.0.2:40000 -> 203.0.113.10:443".
func (c FastFlow) String() string { return c.Src.String() + " -> " + c.Dst.String() }

// AdmitFast puts eps into the fast set of sandbox name in the state in force, as Admit
// does for the tcp set. Like the kernel, it fails for a sandbox without a fast set
// (FastPath off, Monitor, no such sandbox) and for a port other than 443.
func (f *Fake) AdmitFast(name string, eps []firewall.Endpoint) error {
	return f.change("admit fast", name, eps, true, admit)
}

// RevokeFast removes eps from the fast set of sandbox name; an element not there is no error.
func (f *Fake) RevokeFast(name string, eps []firewall.Endpoint) error {
	return f.change("revoke fast", name, keysOnly(eps), true, revoke)
}

// Fast lists the fast set of sandbox name in force, as TCP lists the tcp set.
func (f *Fake) Fast(name string) []string {
	return f.list(name, func(s firewall.Sandbox) []firewall.Endpoint { return s.Fast })
}

// VerifyFast stands for egressd verifying a fast-path flow from src to dst: the kernel
// routed it only if the fast set of the sandbox with src's address held dst when the
// flow began. It reports whether the flow is now verified (and CutFast can cut it).
func (f *Fake) VerifyFast(src, dst netip.AddrPort) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.inForce == nil || !f.inForce.FastPath {
		return false
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	for _, s := range f.inForce.Sandboxes {
		if s.Addr.Unmap() == src.Addr() && slices.ContainsFunc(s.Fast, func(e firewall.Endpoint) bool {
			return e.Addr.Unmap() == dst.Addr() && e.Port == dst.Port()
		}) {
			f.fast = append(f.fast, FastFlow{Src: src, Dst: dst})
			return true
		}
	}
	return false
}

// CutFast cuts the verified fast flows of sandbox that keep does not keep (nil: all), and
// returns how many.
func (f *Fake) CutFast(sandbox netip.Addr, keep func(src, dst netip.AddrPort) bool) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failWith != nil {
		return 0, f.failWith
	}
	n := 0
	f.fast = slices.DeleteFunc(f.fast, func(c FastFlow) bool {
		if c.Src.Addr() != sandbox.Unmap() || (keep != nil && keep(c.Src, c.Dst)) {
			return false
		}
		f.fastCuts = append(f.fastCuts, c)
		n++
		return true
	})
	return n, nil
}

// FastFlows lists the verified fast flows, in the order verified.
func (f *Fake) FastFlows() []FastFlow {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.fast)
}

// FastCuts returns the flows CutFast cut since the last call of FastCuts, in order.
func (f *Fake) FastCuts() []FastFlow {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.fastCuts
	f.fastCuts = nil
	return out
}
