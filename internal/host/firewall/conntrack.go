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
// themselves. It runs in the current network namespace, or the one of WithNetNSFd.
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
	o := collect(opts)
	var h *netlink.Handle
	if o.netnsFd != 0 {
		h, err = netlink.NewHandleAt(netns.NsHandle(o.netnsFd), unix.NETLINK_NETFILTER)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_NETFILTER)
	}
	if err != nil {
		return 0, fmt.Errorf("firewall: flush conntrack: netlink: %w", err)
	}
	defer h.Close()
	n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, staleFilter{src: a, keep: kept})
	if err != nil {
		return int(n), fmt.Errorf("firewall: flush conntrack of %v: %w", a, err)
	}
	return int(n), nil
}

// FlushConntrack is the package's FlushConntrack, in the firewall's network namespace: the
// gateway cuts flows where it applies rules.
func (f *Firewall) FlushConntrack(sandboxAddr netip.Addr, keep []netip.Prefix) (int, error) {
	return FlushConntrack(sandboxAddr, keep, WithNetNSFd(f.netnsFd))
}

// staleFilter matches the flows FlushConntrack deletes.
type staleFilter struct {
	src  netip.Addr
	keep []ipRange
}

func (f staleFilter) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool {
	src, ok1 := ipOf(fl.Forward.SrcIP)
	dst, ok2 := ipOf(fl.Forward.DstIP)
	if !ok1 || !ok2 || src != f.src {
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
