package fastpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// TCP flags, as in the header's 13th byte.
const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagPSH = 0x08
	flagACK = 0x10
	flagURG = 0x20
)

// errNotTCP: an IPv4 packet of another protocol. It cannot belong to a TCP flow, so it is
// dropped without refusing anything.
var errNotTCP = errors.New("not TCP")

// segment is a parsed IPv4/TCP packet. Payload and opts alias the queued bytes.
type segment struct {
	flow      Flow
	ttl       uint8
	ipOptions bool // IHL > 5
	seq, ack  uint32
	flags     uint8
	urgent    uint16
	opts      []byte
	payload   []byte
}

// parse reads an IPv4/TCP packet. On error, flow is filled in as far as the packet allows
// (tupleOK says whether it is complete), so that the caller can refuse the flow it came on.
// Errors wrap errNotTCP, ErrMalformed, ErrFragment or ErrChecksum.
func parse(b []byte) (s segment, tupleOK bool, err error) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return s, false, fmt.Errorf("%w: not an IPv4 header", ErrMalformed)
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < 20 || total < ihl || total > len(b) {
		return s, false, fmt.Errorf("%w: IPv4 header length %d, total length %d, %d bytes queued", ErrMalformed, ihl, total, len(b))
	}
	b = b[:total] // link-layer padding is not the packet's
	if b[9] != 6 {
		return s, false, fmt.Errorf("%w: protocol %d", errNotTCP, b[9])
	}
	src := netip.AddrFrom4([4]byte(b[12:16]))
	dst := netip.AddrFrom4([4]byte(b[16:20]))
	s.ttl, s.ipOptions = b[8], ihl > 20
	frag := binary.BigEndian.Uint16(b[6:])
	t := b[ihl:]
	if len(t) >= 4 && frag&0x1fff == 0 { // the first fragment still names its flow
		s.flow = Flow{netip.AddrPortFrom(src, binary.BigEndian.Uint16(t)), netip.AddrPortFrom(dst, binary.BigEndian.Uint16(t[2:]))}
		tupleOK = true
	}
	if checksum(0, b[:ihl]) != 0xffff {
		return s, tupleOK, fmt.Errorf("%w: IPv4 header checksum does not match the header", ErrChecksum)
	}
	if frag&0x3fff != 0 { // more fragments, or an offset
		return s, tupleOK, fmt.Errorf("%w: IPv4 fragment (offset %d bytes)", ErrFragment, int(frag&0x1fff)*8)
	}
	if len(t) < 20 {
		return s, tupleOK, fmt.Errorf("%w: TCP header cut short (%d bytes)", ErrMalformed, len(t))
	}
	off := int(t[12]>>4) * 4
	if off < 20 || off > len(t) {
		return s, tupleOK, fmt.Errorf("%w: TCP data offset %d in a %d-byte segment", ErrMalformed, off, len(t))
	}
	// The pseudo-header (RFC 793 §3.1): the checksum the server will verify.
	sum := checksum(0, b[12:20])
	sum += 6 + uint32(len(t))
	if checksum(sum, t) != 0xffff {
		return s, tupleOK, fmt.Errorf("%w: TCP checksum does not match the segment", ErrChecksum)
	}
	s.seq = binary.BigEndian.Uint32(t[4:])
	s.ack = binary.BigEndian.Uint32(t[8:])
	s.flags = t[13]
	s.urgent = binary.BigEndian.Uint16(t[18:])
	s.opts = t[20:off]
	s.payload = t[off:]
	return s, true, nil
}

// checksum adds b to the one's-complement sum and folds it to 16 bits; a packet whose
// checksum field is right sums to 0xffff.
func checksum(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum
}

// tcpOptions are the options of a segment that matter to the server's acceptance of it.
type tcpOptions struct {
	hasTS bool
	tsval uint32
}

// parseOptions walks the TCP options. Only the options a client's stack sends are let
// through: an option the server does not expect can make it drop the segment (Linux drops
// a segment with an unexpected MD5 signature), and then the bytes it goes on to accept
// would not be the bytes judged.
func parseOptions(o []byte, syn bool) (tcpOptions, error) {
	var r tcpOptions
	for len(o) > 0 {
		kind := o[0]
		if kind == 0 { // end of options
			break
		}
		if kind == 1 { // no-operation
			o = o[1:]
			continue
		}
		if len(o) < 2 || int(o[1]) < 2 || int(o[1]) > len(o) {
			return r, fmt.Errorf("%w: TCP option %d has a bad length", ErrOption, kind)
		}
		n := int(o[1])
		switch {
		case kind == 8 && n == 10: // timestamps
			r.hasTS, r.tsval = true, binary.BigEndian.Uint32(o[2:])
		case kind == 5 && !syn && n >= 10 && (n-2)%8 == 0: // SACK blocks
		case syn && (kind == 2 && n == 4 || kind == 3 && n == 3 || kind == 4 && n == 2 || kind == 34 && n == 2):
			// MSS, window scale, SACK permitted, an empty Fast Open cookie request (data
			// on the SYN is refused anyway): only on the SYN.
		default:
			return r, fmt.Errorf("%w: TCP option %d (length %d) is not one a client sends", ErrOption, kind, n)
		}
		o = o[n:]
	}
	return r, nil
}
