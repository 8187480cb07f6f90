package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/egressd/egressd/internal/host/netns"
	"golang.org/x/sys/unix"
)

// A cut fast-path flow is reset by the forward chain's first rule when the sandbox sends
// its next packet (MarkFastDeny). An idle flow (a kept-alive HTTPS connection) sends
// none, so CutFast makes the sandbox speak: it sends the sandbox a segment that seems to
// come from the server, with a sequence number outside the sandbox's receive window.
// RFC 793 (and RFC 5961) says such a segment is answered with an ACK, and Linux does
// (tcp_validate_incoming: the sequence is checked first, then tcp_send_dupack). That ACK
// goes from the sandbox to the server, meets the refused rule and is answered with a
// reset whose sequence number is the ACK's acknowledgement number, which is exactly what
// the sandbox expects: its connection is reset at once, as the proxy path would close it.
//
// The segment has FIN and ACK set, not ACK alone. The lab showed why: a bare ACK from the
// server to the sandbox is, to the gateway's conntrack, the first packet of a new flow
// (picked up mid-stream, nf_conntrack_tcp_loose) whose reply tuple is the cut flow's
// original one (the cut flow's own reply tuple has the uplink's address, masquerade), and
// NAT's null binding in postrouting gave it another source port to keep the tuples
// unique: the sandbox got it from a port it had no connection with and answered with a
// reset of its own. A FIN cannot start a conntrack flow, so conntrack lets the probe pass
// as invalid, untracked: no NAT, no entry (nothing for the flow log), and egressd's table
// has no filter rules on the gateway's own output. A FIN takes sequence space, so Linux
// answers it even within net.ipv4.tcp_invalid_ratelimit (tcp_oow_rate_limited spares
// segments with a length), and the sandbox's route back goes through the gateway, so its
// reverse-path filter accepts the server's address on its veth.
//
// The server's sequence numbers are not known here (conntrack does not report them), so
// the probe is two segments, 2^31 apart: a receive window is at most 2^30 bytes (a 16-bit
// window scaled by 14), so at least one of them is out of window for certain. The other
// may land in the window; it carries no data, and a sandbox's TCP reads its FIN only if
// its acknowledgement number is acceptable too (one chance in thousands at most, for a
// megabyte window); otherwise it is dropped or answered with a challenge ACK, which is
// reset like the other answer.
//
// The probe is sent in the gateway's network namespace through a raw socket with the IP
// header included (IPPROTO_RAW): the gateway routes it to the sandbox's address over the
// sandbox's veth.

// Sequence numbers of the two probe segments (see above): any value will do for the
// first, the second is half the sequence space away.
const (
	probeSeq  uint32 = 0x5eed_0000
	probeSpan uint32 = 1 << 31
)

// prober sends probe segments: a raw IPv4 socket (IPPROTO_RAW implies IP_HDRINCL) made in
// the firewall's network namespace, which it keeps whichever thread uses it.
type prober struct{ fd int }

// newProber opens the raw socket in the current network namespace, or in the one of the
// descriptor netnsFd (0: the current one), entered the way package netns enters every
// namespace: on a locked thread of its own, never the caller's.
func newProber(netnsFd int) (*prober, error) {
	open := func() (int, error) {
		return unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	}
	var fd int
	var err error
	if netnsFd == 0 {
		fd, err = open()
	} else {
		// The descriptor names the namespace; /proc/self/fd makes it a path for netns.Do.
		derr := netns.Do(fmt.Sprintf("/proc/self/fd/%d", netnsFd), func() error {
			fd, err = open()
			return nil
		})
		err = errors.Join(derr, err)
	}
	if err != nil {
		return nil, fmt.Errorf("firewall: probe socket: %w", err)
	}
	return &prober{fd: fd}, nil
}

// probe sends the two probe segments of the flow from client (the sandbox's address and
// port) to server (its original destination), as if server sent them.
func (p *prober) probe(client, server netip.AddrPort) error {
	for _, seq := range []uint32{probeSeq, probeSeq + probeSpan} {
		seg, err := probeSegment(server, client, seq, seq+probeSpan/2)
		if err != nil {
			return err
		}
		to := &unix.SockaddrInet4{Addr: client.Addr().Unmap().As4()} // IPv4: probeSegment checked
		if err := unix.Sendto(p.fd, seg, 0, to); err != nil {
			return fmt.Errorf("firewall: probe %s → %s: %w", server, client, err)
		}
	}
	return nil
}

func (p *prober) Close() error { return unix.Close(p.fd) }

// gone says whether a probe failed because the gateway has no route to the sandbox: its
// veth is gone with it, and there is no one left to tell.
func gone(err error) bool {
	return errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH)
}

// Sizes and fields of the probe segment: an IPv4 header without options, a TCP header
// without options.
const (
	ipv4HeaderLen = 20
	tcpHeaderLen  = 20
	probeTTL      = 64
	tcpFlagFIN    = 0x01
	tcpFlagACK    = 0x10
	ipFlagDF      = 0x4000
	probeWindow   = 0 // advertised window: read only if the ACK were acceptable (then the sandbox probes it)
)

// probeSegment is an IPv4 packet carrying a TCP segment from src to dst with FIN and ACK
// set, sequence number seq, acknowledgement number ack and no data, with correct checksums.
func probeSegment(src, dst netip.AddrPort, seq, ack uint32) ([]byte, error) {
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	if !s.Is4() || !d.Is4() {
		return nil, fmt.Errorf("firewall: probe %s → %s: not IPv4", src, dst)
	}
	s4, d4 := s.As4(), d.As4()
	pkt := make([]byte, ipv4HeaderLen+tcpHeaderLen)
	ip, tcp := pkt[:ipv4HeaderLen], pkt[ipv4HeaderLen:]
	ip[0] = 4<<4 | ipv4HeaderLen/4
	binary.BigEndian.PutUint16(ip[2:], uint16(len(pkt)))
	binary.BigEndian.PutUint16(ip[6:], ipFlagDF)
	ip[8], ip[9] = probeTTL, unix.IPPROTO_TCP
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	binary.BigEndian.PutUint16(ip[10:], ^onesSum(0, ip))

	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = tcpHeaderLen / 4 << 4
	tcp[13] = tcpFlagFIN | tcpFlagACK
	binary.BigEndian.PutUint16(tcp[14:], probeWindow)
	// The pseudo-header: source, destination, zero, protocol, TCP length.
	pseudo := append(append(s4[:], d4[:]...), 0, unix.IPPROTO_TCP, 0, 0)
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(tcp)))
	binary.BigEndian.PutUint16(tcp[16:], ^onesSum(onesSum(0, pseudo), tcp))
	return pkt, nil
}

// onesSum adds b, as big-endian 16-bit words (an odd last byte padded with zero), to sum
// in ones' complement arithmetic (RFC 1071): the Internet checksum is its complement.
func onesSum(sum uint16, b []byte) uint16 {
	s := uint32(sum)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
