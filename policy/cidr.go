package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// ParseCIDR parses an allowed_cidrs entry: an IPv4 or IPv6 prefix, or a bare address, which
// means the /32 or /128 that holds only it. A prefix with host bits set is an error whose
// message gives the masked form, because "10.0.0.1/8" usually means a typo rather than
// 10.0.0.0/8. Zones ("fe80::1%eth0") are rejected: a policy is not tied to an interface.
//
// An IPv4-mapped IPv6 prefix is returned as the IPv4 prefix it holds (::ffff:10.0.0.1 is
// 10.0.0.1/32, ::ffff:10.0.0.0/104 is 10.0.0.0/8), because addresses are matched and
// classified in their IPv4 form (see Unmap). A prefix shorter than /96 that merely contains
// the mapped range (::/0, ::ffff:0:0/95) stays IPv6 and so matches no IPv4 address: to allow
// IPv4 destinations, list IPv4 prefixes.
func ParseCIDR(s string) (netip.Prefix, error) {
	if strings.Contains(s, "%") {
		return netip.Prefix{}, fmt.Errorf("%q has a zone; a CIDR cannot name an interface", s)
	}
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, cidrSyntaxError(s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, cidrSyntaxError(s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	p = unmapPrefix(p)
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%s has host bits set; did you mean %s?", s, m)
	}
	return p, nil
}

func cidrSyntaxError(s string) error {
	if _, err := NormalizeName(s); err == nil {
		return fmt.Errorf("%q is a host name; put it in allowed_domains", s)
	}
	return fmt.Errorf("%q is not an IP address or CIDR (like 10.0.0.0/8, 192.0.2.1 or 2001:db8::/32)", s)
}

// unmapPrefix turns an IPv4-mapped IPv6 prefix of /96 or longer into its IPv4 prefix; any
// other prefix is returned as it is.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

// u128 is an IPv6 address as two integers, so that ranges compare with two instructions.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func u128Of(a netip.Addr) u128 {
	b := a.As16()
	return u128{beUint64(b[:8]), beUint64(b[8:])}
}

func beUint64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

func u32Of(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// lastAddr is the highest address of p, p masked.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

type range4 struct {
	lo, hi uint32
	id     int // index of the prefix in the list the set was built from
}

type range6 struct {
	lo, hi u128
	id     int
}

// prefixSet answers "which listed prefix holds this address" with a binary search over
// disjoint ranges, without allocating, whatever the number of prefixes. Prefixes either nest
// or are disjoint, so dropping every prefix that another one contains leaves disjoint ranges
// that cover the same addresses; each remembers which prefix it came from, so that callers
// can report a rule string computed once, when the set is built.
type prefixSet struct {
	v4 []range4
	v6 []range6
}

// newPrefixSet builds the set of ps, which must be masked and unmapped (as ParseCIDR returns
// them).
func newPrefixSet(ps []netip.Prefix) prefixSet {
	order := make([]int, len(ps))
	for i := range order {
		order[i] = i
	}
	// By first address, and for one first address the widest prefix first.
	slices.SortFunc(order, func(i, j int) int { return comparePrefix(ps[i], ps[j]) })
	var s prefixSet
	for _, id := range order {
		p := ps[id]
		if p.Addr().Is4() {
			lo, hi := u32Of(p.Addr()), u32Of(lastAddr(p))
			if n := len(s.v4); n > 0 && lo <= s.v4[n-1].hi {
				continue // inside the previous, wider prefix
			}
			s.v4 = append(s.v4, range4{lo, hi, id})
		} else if p.Addr().Is6() {
			lo, hi := u128Of(p.Addr()), u128Of(lastAddr(p))
			if n := len(s.v6); n > 0 && !s.v6[n-1].hi.less(lo) {
				continue
			}
			s.v6 = append(s.v6, range6{lo, hi, id})
		}
	}
	return s
}

// lookup returns the index (in the list the set was built from) of the prefix that holds a,
// which must be unmapped, or -1.
func (s *prefixSet) lookup(a netip.Addr) int {
	if a.Is4() {
		if i := s.find4(u32Of(a)); i >= 0 {
			return s.v4[i].id
		}
	} else if a.Is6() {
		if i := s.find6(u128Of(a)); i >= 0 {
			return s.v6[i].id
		}
	}
	return -1
}

func (s *prefixSet) empty() bool { return len(s.v4) == 0 && len(s.v6) == 0 }

// find4 returns the index of the range that holds x, or -1.
func (s *prefixSet) find4(x uint32) int {
	// The first range that starts above x; the one before it is the only candidate.
	i, j := 0, len(s.v4)
	for i < j {
		h := int(uint(i+j) >> 1)
		if s.v4[h].lo <= x {
			i = h + 1
		} else {
			j = h
		}
	}
	if i > 0 && x <= s.v4[i-1].hi {
		return i - 1
	}
	return -1
}

// find6 returns the index of the range that holds x, or -1.
func (s *prefixSet) find6(x u128) int {
	i, j := 0, len(s.v6)
	for i < j {
		h := int(uint(i+j) >> 1)
		if !x.less(s.v6[h].lo) {
			i = h + 1
		} else {
			j = h
		}
	}
	if i > 0 && !s.v6[i-1].hi.less(x) {
		return i - 1
	}
	return -1
}

// covers reports whether every address of p is inside one prefix of s. Because the set's
// ranges are maximal prefixes, p is covered exactly when the range holding its first address
// also holds its last.
func (s *prefixSet) covers(p netip.Prefix) bool {
	first, last := p.Addr(), lastAddr(p)
	if first.Is4() {
		i := s.find4(u32Of(first))
		return i >= 0 && i == s.find4(u32Of(last))
	}
	i := s.find6(u128Of(first))
	return i >= 0 && i == s.find6(u128Of(last))
}

// IntersectPrefixes returns the addresses that both lists hold, as a sorted list of prefixes
// without duplicates or nesting. Prefixes either nest or are disjoint, so the intersection
// is every prefix of one list that lies inside a prefix of the other. The inputs must be
// masked (as ParseCIDR returns them); an empty list holds no address, so it gives an empty
// result.
func IntersectPrefixes(a, b []netip.Prefix) []netip.Prefix {
	sa, sb := newPrefixSet(a), newPrefixSet(b)
	out := []netip.Prefix{}
	for _, p := range a {
		if sb.covers(p) {
			out = append(out, p)
		}
	}
	for _, p := range b {
		if sa.covers(p) {
			out = append(out, p)
		}
	}
	return minimalPrefixes(out)
}

// minimalPrefixes sorts ps and drops duplicates and prefixes inside another one.
func minimalPrefixes(ps []netip.Prefix) []netip.Prefix {
	slices.SortFunc(ps, comparePrefix)
	out := ps[:0]
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Overlaps(p) {
			continue // sorted by first address, widest first: p is inside out[n-1]
		}
		out = append(out, p)
	}
	return out
}

// comparePrefix orders IPv4 before IPv6, then by address, then widest first.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}
