package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// errNotRedirected: a connection that reached the transparent listener without a redirect
// (its original destination is the listener itself), or whose original destination the
// kernel does not know.
var errNotRedirected = errors.New("the connection was not redirected to the transparent proxy")

// Address families of a struct sockaddr, as Linux numbers them.
const (
	afInet  = 2
	afInet6 = 10
)

// parseSockaddr decodes the struct sockaddr_in or sockaddr_in6 that getsockopt
// SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST (IPv6) fills in:
//
//	sockaddr_in:  family u16 (host order) | port u16 (network order) | addr [4]byte | zero [8]byte
//	sockaddr_in6: family u16 (host order) | port u16 (network order) | flowinfo u32 | addr [16]byte | scope_id u32
//
// An IPv4-mapped IPv6 address comes back as the IPv4 address it holds.
func parseSockaddr(b []byte) (netip.AddrPort, error) {
	if len(b) < 2 {
		return netip.AddrPort{}, fmt.Errorf("original destination: %d bytes, too short for a sockaddr", len(b))
	}
	switch family := binary.NativeEndian.Uint16(b); family {
	case afInet:
		if len(b) < 8 {
			return netip.AddrPort{}, fmt.Errorf("original destination: %d bytes, too short for a sockaddr_in", len(b))
		}
		port := binary.BigEndian.Uint16(b[2:4])
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), nil
	case afInet6:
		if len(b) < 24 {
			return netip.AddrPort{}, fmt.Errorf("original destination: %d bytes, too short for a sockaddr_in6", len(b))
		}
		port := binary.BigEndian.Uint16(b[2:4])
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])).Unmap(), port), nil
	default:
		return netip.AddrPort{}, fmt.Errorf("original destination: address family %d", family)
	}
}
