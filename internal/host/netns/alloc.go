package netns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

const subnetBits = 30 // every sandbox gets a point-to-point /30: network, gateway, sandbox, broadcast

// ErrExhausted is returned by Allocator.Take when every subnet of the range is in use.
var ErrExhausted = errors.New("netns: the sandbox range has no free subnet")

// Allocator hands out the /30 subnets of the sandbox range in order: index i is the range's
// i-th /30 (100.96.0.0/16 → 100.96.0.0/30, 100.96.0.4/30, …, 16,384 in all). It holds no
// state: Take is given what is in use (from the store, or from the attachments present)
// and returns the lowest free subnet, so callers that may run at once must serialise
// Take and the recording of its answer.
type Allocator struct {
	base  netip.Prefix
	start uint32 // first address of the range
	n     int    // number of /30 subnets
}

// NewAllocator checks the sandbox range: IPv4, no host bits set, between /8 and /30.
func NewAllocator(sandboxCIDR netip.Prefix) (*Allocator, error) {
	p := sandboxCIDR
	switch {
	case !p.IsValid():
		return nil, errors.New("netns: no sandbox range given")
	case !p.Addr().Is4():
		return nil, fmt.Errorf("netns: sandbox range %s is not IPv4 (sandboxes are IPv4 only; IPv6 is switched off inside them)", p)
	case p.Masked() != p:
		return nil, fmt.Errorf("netns: sandbox range %s has host bits set; did you mean %s?", p, p.Masked())
	case p.Bits() > subnetBits:
		return nil, fmt.Errorf("netns: sandbox range %s is smaller than one /%d", p, subnetBits)
	case p.Bits() < 8:
		return nil, fmt.Errorf("netns: sandbox range %s is too large (at most a /8)", p)
	}
	return &Allocator{base: p, start: u32(p.Addr()), n: 1 << (subnetBits - p.Bits())}, nil
}

// Range is the sandbox range.
func (a *Allocator) Range() netip.Prefix { return a.base }

// Len is the number of /30 subnets in the range.
func (a *Allocator) Len() int { return a.n }

// Subnet is the i-th /30 of the range.
func (a *Allocator) Subnet(i int) (netip.Prefix, error) {
	if i < 0 || i >= a.n {
		return netip.Prefix{}, fmt.Errorf("netns: subnet index %d is outside %s (0 to %d)", i, a.base, a.n-1)
	}
	return netip.PrefixFrom(addr(a.start+uint32(i)<<2), subnetBits), nil
}

// Take returns the lowest /30 of the range that overlaps none of inUse. Prefixes outside
// the range, and IPv6 ones, are ignored; a prefix larger than a /30 blocks every subnet it
// covers. It returns ErrExhausted when none is free.
func (a *Allocator) Take(inUse []netip.Prefix) (netip.Prefix, error) {
	used := make([]uint64, (a.n+63)/64)
	end := uint64(a.start) + uint64(a.n)<<2 // one past the range's last address
	for _, p := range inUse {
		if !p.IsValid() || !p.Addr().Is4() {
			continue
		}
		p = p.Masked()
		lo := uint64(u32(p.Addr()))
		hi := lo + uint64(1)<<(32-p.Bits()) // one past
		lo, hi = max(lo, uint64(a.start)), min(hi, end)
		if lo >= hi {
			continue
		}
		for i := (lo - uint64(a.start)) >> 2; i <= (hi-1-uint64(a.start))>>2; i++ {
			used[i/64] |= 1 << (i % 64)
		}
	}
	for w, bits := range used {
		if bits == ^uint64(0) {
			continue
		}
		for b := 0; b < 64; b++ {
			i := w*64 + b
			if i >= a.n {
				break
			}
			if bits&(1<<b) == 0 {
				return a.Subnet(i)
			}
		}
	}
	return netip.Prefix{}, fmt.Errorf("%w (%s: %d subnets in use)", ErrExhausted, a.base, a.n)
}

func u32(ip netip.Addr) uint32 {
	b := ip.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}
