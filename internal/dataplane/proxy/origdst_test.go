package proxy

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// The byte layouts of struct sockaddr_in and sockaddr_in6 as the kernel fills them in for
// SO_ORIGINAL_DST: family in host order, port in network order.
func TestParseSockaddr(t *testing.T) {
	in4 := make([]byte, 16)
	binary.NativeEndian.PutUint16(in4, 2)
	copy(in4[2:], []byte{0x01, 0xbb, 203, 0, 113, 7}) // port 443
	in6 := make([]byte, 28)
	binary.NativeEndian.PutUint16(in6, 10)
	copy(in6[2:], []byte{0x00, 0x50, 0xde, 0xad, 0xbe, 0xef}) // port 80, a flow label
	a16 := netip.MustParseAddr("2001:db8::51").As16()
	copy(in6[8:], a16[:])
	binary.NativeEndian.PutUint32(in6[24:], 3) // scope ID: ignored
	mapped := append([]byte(nil), in6...)
	m16 := netip.MustParseAddr("::ffff:198.51.100.9").As16()
	copy(mapped[8:], m16[:])
	// What getsockopt hands back in the 32-byte buffer: the sockaddr, then zeros.
	padded := append(append([]byte(nil), in4...), make([]byte, 16)...)

	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"sockaddr_in", in4, "203.0.113.7:443"},
		{"sockaddr_in in a larger buffer", padded, "203.0.113.7:443"},
		{"sockaddr_in6", in6, "[2001:db8::51]:80"},
		{"v4-mapped sockaddr_in6", mapped, "198.51.100.9:80"},
	} {
		got, err := parseSockaddr(tc.b)
		if err != nil || got.String() != tc.want {
			t.Errorf("%s: %v %v, want %s", tc.name, got, err, tc.want)
		}
	}
	unknown := append([]byte(nil), in4...)
	binary.NativeEndian.PutUint16(unknown, 1) // AF_UNIX
	for _, b := range [][]byte{nil, {2}, in4[:7], in6[:23], unknown, make([]byte, 32)} {
		if got, err := parseSockaddr(b); err == nil {
			t.Errorf("% x: %v, want an error", b, got)
		}
	}
}
