package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"
)

// soOriginalDst is SO_ORIGINAL_DST (linux/netfilter_ipv4.h) at level SOL_IP, and
// IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h) at level SOL_IPV6: both 80.
const soOriginalDst = 80

// originalDst returns where c was going before nftables redirected it to the proxy
// ("redirect to :port" rewrites the destination; conntrack keeps the original one, which
// getsockopt SO_ORIGINAL_DST reads). A connection that was not redirected has its own
// local address as original destination, or none (no conntrack entry): errNotRedirected.
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, errNotRedirected
	}
	la := local.AddrPort()
	level := syscall.SOL_IPV6
	if la.Addr().Is4() || la.Addr().Is4In6() {
		// IPv4, on an IPv4 socket or as a v4-mapped address on a dual-stack one: the
		// kernel passes SOL_IP options of a v4-mapped socket on to IPv4.
		level = syscall.SOL_IP
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	// IPv6MTUInfo is 32 bytes, room for a sockaddr_in (16) or a sockaddr_in6 (28): the one
	// getsockopt wrapper of package syscall that passes a buffer that large. The kernel
	// fills the sockaddr and leaves the rest zero.
	var info *syscall.IPv6MTUInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = syscall.GetsockoptIPv6MTUInfo(int(fd), level, soOriginalDst)
	}); err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	if gerr == syscall.ENOENT {
		return netip.AddrPort{}, errNotRedirected // no conntrack entry: not NATed
	}
	if gerr != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: getsockopt SO_ORIGINAL_DST: %w", gerr)
	}
	dst, err := parseSockaddr(unsafe.Slice((*byte)(unsafe.Pointer(info)), unsafe.Sizeof(*info)))
	if err != nil {
		return netip.AddrPort{}, err
	}
	if dst.Addr() == la.Addr().Unmap() && dst.Port() == la.Port() {
		return netip.AddrPort{}, errNotRedirected
	}
	return dst, nil
}
