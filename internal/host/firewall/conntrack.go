package firewall

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// FlushConntrack deletes the conntrack entries of connections that sandboxAddr opened to a
// destination outside keep (the sandbox's new Allowed), so that a tightened policy leaves
// no stale state behind. The forward rules already drop every further packet of such a
// flow, in both directions once its entry is gone; the delete makes the cut immediate and
// visible (`conntrack -L` no longer shows it).
//
// Flows whose destination the gateway rewrote (DNS and web DNATed to its own listeners)
// are left alone: the DNS filter and the transparent proxy enforce policy on those
// themselves. So are flows admitted by the tcp_<name> set (ct mark MarkTCP): their
// destination is outside Allowed by nature, and FlushTCP is their cut; and fast-path
// flows (routed TCP 443: verified, refused or still held by egressd), which CutFast cuts.
// It runs in the current network namespace, or the one of WithNetNSFd.
// It returns how many entries it deleted.
func FlushConntrack(sandboxAddr netip.Addr, keep []netip.Prefix, opts ...Option) (int, error) {
	a := sandboxAddr.Unmap()
	if !a.Is4() {
		return 0, fmt.Errorf("firewall: flush conntrack: %v is not an IPv4 address", sandboxAddr)
	}
	kept, err := ranges(keep)
	if err != nil {
		return 0, fmt.Errorf("firewall: flush conntrack: keep: %w", err)
	}
	n, err := deleteFlows(collect(opts), staleFilter{src: a, keep: kept})
	if err != nil {
		return n, fmt.Errorf("firewall: flush conntrack of %v: %w", a, err)
	}
	return n, nil
}

// FlushConntrack is the package's FlushConntrack, in the firewall's network namespace: the
// gateway cuts flows where it applies rules.
func (f *Firewall) FlushConntrack(sandboxAddr netip.Addr, keep []netip.Prefix) (int, error) {
	return FlushConntrack(sandboxAddr, keep, WithNetNSFd(f.netnsFd))
}

// FlushTCP deletes the conntrack entries of the TCP connections that sandboxAddr opened
// through its tcp_<name> set (ct mark MarkTCP) and that keep (given the destination as
// the sandbox dialled it) does not keep; keep nil keeps none. It is the cut of DESIGN
// §2.6: call it after Revoke (or an Apply without the endpoints), when a policy change
// removed an allowed_tcp entry. The sandbox's next packet on such a connection then
// meets the forward chain as a new flow without SYN and is answered with a TCP reset, so
// the sandbox learns at once; the remote side is left to its own timeouts (its next
// packet reaches the gateway itself, whose stack answers with a reset).
//
// The reset needs conntrack to pick up a mid-stream packet as new, which is the
// kernel's default (net.netfilter.nf_conntrack_tcp_loose=1); with it off the packet is
// invalid and dropped silently: the connection is cut all the same, without the reset.
// It returns how many entries it deleted.
func FlushTCP(sandboxAddr netip.Addr, keep func(dst netip.Addr, port uint16) bool, opts ...Option) (int, error) {
	a := sandboxAddr.Unmap()
	if !a.Is4() {
		return 0, fmt.Errorf("firewall: flush tcp: %v is not an IPv4 address", sandboxAddr)
	}
	n, err := deleteFlows(collect(opts), tcpFilter{src: a, keep: keep})
	if err != nil {
		return n, fmt.Errorf("firewall: flush tcp connections of %v: %w", a, err)
	}
	return n, nil
}

// FlushTCP is the package's FlushTCP in the firewall's network namespace.
func (f *Firewall) FlushTCP(sandboxAddr netip.Addr, keep func(dst netip.Addr, port uint16) bool) (int, error) {
	return FlushTCP(sandboxAddr, keep, WithNetNSFd(f.netnsFd))
}

func deleteFlows(o options, filter netlink.CustomConntrackFilter) (int, error) {
	h, err := conntrackHandle(o)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, filter)
	return int(n), err
}

// listFlows lists the IPv4 conntrack entries of the namespace.
func listFlows(o options) ([]*netlink.ConntrackFlow, error) {
	h, err := conntrackHandle(o)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
}

// conntrackHandle is a netlink handle on conntrack in the namespace of o.
func conntrackHandle(o options) (*netlink.Handle, error) {
	var h *netlink.Handle
	var err error
	if o.netnsFd != 0 {
		h, err = netlink.NewHandleAt(netns.NsHandle(o.netnsFd), unix.NETLINK_NETFILTER)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_NETFILTER)
	}
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return h, nil
}

// tcpFilter matches the flows FlushTCP deletes.
type tcpFilter struct {
	src  netip.Addr
	keep func(netip.Addr, uint16) bool
}

func (f tcpFilter) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool {
	src, ok1 := ipOf(fl.Forward.SrcIP)
	dst, ok2 := ipOf(fl.Forward.DstIP)
	if !ok1 || !ok2 || src != f.src || fl.Forward.Protocol != unix.IPPROTO_TCP || fl.Mark&MarkTCP == 0 {
		return false
	}
	return f.keep == nil || !f.keep(dst, fl.Forward.DstPort)
}

// staleFilter matches the flows FlushConntrack deletes.
type staleFilter struct {
	src  netip.Addr
	keep []ipRange
}

func (f staleFilter) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool {
	src, ok1 := ipOf(fl.Forward.SrcIP)
	dst, ok2 := ipOf(fl.Forward.DstIP)
	if !ok1 || !ok2 || src != f.src || fl.Mark&MarkMask != 0 {
		return false
	}
	// Routed TCP 443 is the fast path's (every other 443 is DNATed to the proxy), held
	// or verified by egressd: not allowed_cidrs' business, even to an address in Allowed.
	if fl.Forward.Protocol == unix.IPPROTO_TCP && fl.Forward.DstPort == webPortHTTPS {
		return false
	}
	// The reply comes from the original destination unless it was DNATed (to the gateway).
	if rsrc, ok := ipOf(fl.Reverse.SrcIP); !ok || rsrc != dst {
		return false
	}
	v := u32(dst)
	for _, r := range f.keep {
		if v >= r.lo && v <= r.hi {
			return false
		}
	}
	return true
}

func ipOf(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	a = a.Unmap()
	return a, a.Is4()
}
