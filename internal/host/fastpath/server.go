package fastpath

import "time"

// The server's side of a released flow. Pass does not hand a flow to the kernel: its held
// packets go, but the flow's packets keep coming to the queue, the client's and, by a
// rule of the firewall, the server's, until the server acknowledges the ClientHello's
// last byte. From then on the judged bytes are in the server's receive buffer, and any
// other bytes the sandbox sends at their offsets are duplicates the server's TCP drops;
// before, a retransmission racing the held packet could reach the server first, and the
// server keeps the first bytes it receives at an offset (issue 16, the evasion suite's
// "retransmissions racing the verdict").

// webPort is the port of every fast-path flow's server.
const webPort = 443

// reversed is the flow a server's packet belongs to, as the sandbox sent it.
func reversed(f Flow) Flow { return Flow{Src: f.Dst, Dst: f.Src} }

// fromServer reports whether a packet of tuple t is a server's: its reversed tuple is a
// flow tracked, or it is no tracked flow's and comes from port 443 to another port (a
// server's packet after a restart of egressd; a sandbox's flow goes to port 443, and a
// sandbox sending from port 443 to another port gets only a Drop for it).
func (v *Verifier) fromServer(t Flow) bool {
	if _, ok := v.flows[t]; ok {
		return false
	}
	if _, ok := v.flows[reversed(t)]; ok {
		return true
	}
	return t.Src.Port() == webPort && t.Dst.Port() != webPort
}

// server handles a server's packet (s.flow is the server's tuple; err is parse's). It is
// never answered with Reset: the firewall's reset would go to the server, and the packet
// is the server's, not the sandbox's to be judged by.
//
//   - A released flow: a packet with ACK whose acknowledgement covers the ClientHello's
//     last byte gets Confirm, and the flow is verified. Any other packet (the server's
//     acknowledgement of part of the ClientHello, a retransmitted SYN-ACK) gets Accept.
//     A RST: Accept, and the flow is forgotten (its client's next packets are an unknown
//     flow's: reset).
//   - A verified flow: Accept (the queue took it before the mark took effect).
//   - A packet the verifier cannot read, of a flow not tracked (a restart of egressd), or
//     of a flow in any other state: Drop.
func (v *Verifier) server(s *segment, err error, id uint32, now time.Time) {
	key := reversed(s.flow)
	f := v.flows[key]
	switch {
	case err != nil || f == nil:
		v.verdict(id, Drop)
	case f.state == verified:
		v.verdict(id, Accept)
	case f.state != released:
		v.verdict(id, Drop)
	case s.flags&flagRST != 0:
		delete(v.flows, key) // its fifo entry stays until it expires: pop sees the map moved on
		v.verdict(id, Accept)
	case s.flags&flagACK != 0 && int(int32(s.ack-(f.isn+1))) >= len(f.buf):
		// int32: an acknowledgement behind the flow's first byte is not one of the whole
		// ClientHello, whatever its unsigned distance.
		v.confirm(f, now)
		v.verdictOn(id, Confirm, key)
	default:
		v.verdict(id, Accept)
	}
}

// confirm makes a released flow verified: remembered for verifiedLinger, for the client's
// packets the queue took before the mark took effect. A new entry, not f: f stays queued
// in releasedQ until it expires.
func (v *Verifier) confirm(f *flow, now time.Time) {
	c := &flow{key: f.key, state: verified, isn: f.isn, buf: f.buf}
	v.flows[f.key] = c
	v.remember(&v.verified, c, now.Add(verifiedLinger))
}
