// Package fastpathtest builds IPv4/TCP packets as a sandbox could send them, right or
// wrong on purpose, for tests of package fastpath and of the evasion suite.
//
//	p := fastpathtest.Segment{Src: vm, Dst: srv, Seq: isn + 1, Ack: 1, Flags: fastpathtest.ACK|fastpathtest.PSH, Payload: hello}.Bytes()
//
// The zero values give a well-formed packet: TTL 64, no options, right checksums,
// not a fragment. Each field that can be wrong says how.
package fastpathtest

import (
	"encoding/binary"
	"net/netip"
)

// TCP flags.
const (
	FIN = 0x01
	SYN = 0x02
	RST = 0x04
	PSH = 0x08
	ACK = 0x10
	URG = 0x20
)

// Segment is one IPv4 packet carrying one TCP segment.
type Segment struct {
	Src, Dst netip.AddrPort // IPv4 addresses
	Seq, Ack uint32
	Flags    uint8
	Window   uint16 // 0 means 64240
	Urgent   uint16 // the urgent pointer, whatever Flags says
	TTL      uint8  // 0 means 64
	ID       uint16 // IPv4 identification
	// Options are the TCP options, padded here with end-of-options to 4 bytes.
	Options []byte
	// IPOptions are IPv4 options, padded likewise.
	IPOptions []byte
	Payload   []byte
	// BadChecksum flips the TCP checksum; BadIPChecksum the IPv4 header's.
	BadChecksum, BadIPChecksum bool
	// MoreFragments and FragOffset (in 8-byte units) make the packet a fragment; the
	// TCP header is still written whole (it is what a first fragment looks like).
	MoreFragments bool
	FragOffset    uint16
	// Protocol overrides the IPv4 protocol number (6, TCP) to make a non-TCP packet.
	Protocol uint8
}

// Bytes is the packet, from the IPv4 header on, as the queue hands it over.
func (s Segment) Bytes() []byte {
	ipo, tcpo := pad(s.IPOptions), pad(s.Options)
	ihl, doff := 20+len(ipo), 20+len(tcpo)
	b := make([]byte, ihl+doff+len(s.Payload))
	b[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], s.ID)
	frag := s.FragOffset & 0x1fff
	if s.MoreFragments {
		frag |= 0x2000
	} else {
		frag |= 0x4000 // don't fragment, as a TCP stack sets it
	}
	binary.BigEndian.PutUint16(b[6:], frag)
	b[8] = s.TTL
	if b[8] == 0 {
		b[8] = 64
	}
	b[9] = s.Protocol
	if b[9] == 0 {
		b[9] = 6
	}
	src, dst := s.Src.Addr().As4(), s.Dst.Addr().As4()
	copy(b[12:], src[:])
	copy(b[16:], dst[:])
	copy(b[20:], ipo)
	binary.BigEndian.PutUint16(b[10:], ^fold(sum(0, b[:ihl])))
	if s.BadIPChecksum {
		b[10] ^= 0xff
	}

	t := b[ihl:]
	binary.BigEndian.PutUint16(t[0:], s.Src.Port())
	binary.BigEndian.PutUint16(t[2:], s.Dst.Port())
	binary.BigEndian.PutUint32(t[4:], s.Seq)
	binary.BigEndian.PutUint32(t[8:], s.Ack)
	t[12] = byte(doff/4) << 4
	t[13] = s.Flags
	w := s.Window
	if w == 0 {
		w = 64240
	}
	binary.BigEndian.PutUint16(t[14:], w)
	binary.BigEndian.PutUint16(t[18:], s.Urgent)
	copy(t[20:], tcpo)
	copy(t[doff:], s.Payload)
	ps := sum(0, b[12:20]) + 6 + uint32(len(t))
	binary.BigEndian.PutUint16(t[16:], ^fold(sum(ps, t)))
	if s.BadChecksum {
		t[16] ^= 0x5a
	}
	return b
}

// Timestamps is the TCP timestamps option (two no-ops first, as stacks align it).
func Timestamps(val, echo uint32) []byte {
	o := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(o[4:], val)
	binary.BigEndian.PutUint32(o[8:], echo)
	return o
}

func pad(o []byte) []byte {
	for len(o)%4 != 0 {
		o = append(o[:len(o):len(o)], 0)
	}
	return o
}

func sum(s uint32, b []byte) uint32 {
	for ; len(b) >= 2; b = b[2:] {
		s += uint32(b[0])<<8 | uint32(b[1])
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// Conn makes the segments of one connection from a sandbox, as its stack would send them
// before the server has answered the ClientHello. The segments are values: change any
// field before calling Bytes to make one wrong.
type Conn struct {
	Src, Dst netip.AddrPort
	ISN      uint32 // the SYN's sequence number; data starts at ISN+1
	Ack      uint32 // the server's ISN+1, acknowledged by every segment after the SYN
	// TSval, if not zero, puts the timestamps option on every segment with this value.
	TSval uint32
}

// SYN is the connection's SYN, with the options of a Linux client.
func (c Conn) SYN() Segment {
	o := []byte{2, 4, 5, 0xb4, 4, 2, 1, 3, 3, 7}
	if c.TSval != 0 {
		o = append(o, Timestamps(c.TSval, 0)...)
	}
	return Segment{Src: c.Src, Dst: c.Dst, Seq: c.ISN, Flags: SYN, Options: o}
}

// ACK is a pure acknowledgement (the handshake's last packet).
func (c Conn) ACK() Segment { return c.Data(0, nil) }

// Data carries b at flow offset off (0: the first byte after the SYN).
func (c Conn) Data(off int, b []byte) Segment {
	s := Segment{Src: c.Src, Dst: c.Dst, Seq: c.ISN + 1 + uint32(off), Ack: c.Ack, Flags: ACK, Payload: b}
	if len(b) > 0 {
		s.Flags |= PSH
	}
	if c.TSval != 0 {
		s.Options = Timestamps(c.TSval, 1)
	}
	return s
}

// Split cuts b into pieces of at most size bytes (an MSS), with their offsets.
func Split(b []byte, size int) (offs []int, pieces [][]byte) {
	for off := 0; off < len(b); off += size {
		offs = append(offs, off)
		pieces = append(pieces, b[off:min(off+size, len(b))])
	}
	return offs, pieces
}
