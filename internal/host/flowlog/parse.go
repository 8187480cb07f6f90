package flowlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mdlayher/netlink"
)

// nfnetlink_log's message types and attributes (linux/netfilter/nfnetlink_log.h).
const (
	nfulnlMsgPacket = 0
	nfulnlMsgConfig = 1

	nfulaPacketHdr = 1
	nfulaTimestamp = 3
	nfulaPayload   = 9
	nfulaPrefix    = 10

	nfulaCfgCmd     = 1
	nfulaCfgMode    = 2
	nfulaCfgQThresh = 5

	nfulnlCfgCmdBind   = 1
	nfulnlCopyPacket   = 2
	nfgenHeaderLen     = 4 // struct nfgenmsg: family, version, res_id
	maxPrefixLen       = 128
	protoICMP          = 1
	protoTCP           = 6
	protoUDP           = 17
	ipv4MinHeaderBytes = 20
)

var errNotIPv4 = errors.New("not an IPv4 packet")

// ParsePacket reads one NFULNL_MSG_PACKET message's data (the nfgenmsg header and the
// attributes after it) into an Attempt. now is the time used when the message has no
// timestamp. The packet is the sandbox's: every length is checked before it is read.
func ParsePacket(data []byte, now time.Time) (Attempt, error) {
	var a Attempt
	if len(data) < nfgenHeaderLen {
		return a, fmt.Errorf("flowlog: packet message of %d bytes", len(data))
	}
	ad, err := netlink.NewAttributeDecoder(data[nfgenHeaderLen:])
	if err != nil {
		return a, fmt.Errorf("flowlog: packet attributes: %w", err)
	}
	var payload []byte
	a.At = now
	for ad.Next() {
		b := ad.Bytes()
		switch ad.Type() {
		case nfulaPrefix:
			a.Prefix = cString(b)
		case nfulaPayload:
			payload = b
		case nfulaTimestamp:
			// struct nfulnl_msg_packet_timestamp { __be64 sec; __be64 usec; }
			if len(b) >= 16 {
				sec, usec := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:16])
				if sec > 0 && sec < 1<<40 && usec < 1e6 {
					a.At = time.Unix(int64(sec), int64(usec)*1000)
				}
			}
		}
	}
	if err := ad.Err(); err != nil {
		return Attempt{}, fmt.Errorf("flowlog: packet attributes: %w", err)
	}
	if payload == nil {
		return Attempt{}, errors.New("flowlog: packet message without payload")
	}
	if err := parseIPv4(payload, &a); err != nil {
		return Attempt{}, fmt.Errorf("flowlog: payload: %w", err)
	}
	return a, nil
}

// cString is a NUL-terminated attribute as a string, bounded.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			b = b[:i]
			break
		}
	}
	if len(b) > maxPrefixLen {
		b = b[:maxPrefixLen]
	}
	return string(b)
}

// parseIPv4 reads the addresses, protocol and destination port (TCP, UDP) or type and
// code (ICMP) of an IPv4 packet, possibly cut short after its first bytes.
func parseIPv4(p []byte, a *Attempt) error {
	if len(p) < ipv4MinHeaderBytes || p[0]>>4 != 4 {
		return errNotIPv4
	}
	ihl := int(p[0]&0x0f) * 4
	if ihl < ipv4MinHeaderBytes || ihl > len(p) {
		return fmt.Errorf("IPv4 header length %d of %d bytes", ihl, len(p))
	}
	a.Proto = p[9]
	a.Src = netip.AddrFrom4([4]byte(p[12:16]))
	a.Dst = netip.AddrFrom4([4]byte(p[16:20]))
	if binary.BigEndian.Uint16(p[6:8])&0x1fff != 0 {
		return nil // a fragment after the first: no transport header
	}
	l4 := p[ihl:]
	switch a.Proto {
	case protoTCP, protoUDP:
		if len(l4) >= 4 {
			a.SrcPort = binary.BigEndian.Uint16(l4[0:2])
			a.Port = binary.BigEndian.Uint16(l4[2:4])
		}
	case protoICMP:
		if len(l4) >= 2 {
			a.ICMPType, a.ICMPCode = l4[0], l4[1]
		}
	}
	return nil
}
