package fastpath

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/sni"
	fp "github.com/egressd/egressd/internal/host/fastpath/fastpathtest"
)

// seedPackets are packets of every shape the tests build, for the fuzzers' corpus.
func seedPackets(t testing.TB) [][]byte {
	hellos(t)
	s := fp.Segment{Src: vmAddr, Dst: srvAddr, Seq: 1001, Ack: 5000, Flags: fp.ACK | fp.PSH, Payload: goodHello[:40]}
	out := [][]byte{
		fp.Segment{Src: vmAddr, Dst: srvAddr, Seq: 1000, Flags: fp.SYN, Options: fp.Timestamps(1, 0)}.Bytes(),
		s.Bytes(),
		{0x45, 0, 0, 20},
		// A whole hello, then the server's side: its acknowledgement of it, its RST.
		fp.Segment{Src: vmAddr, Dst: srvAddr, Seq: 1001, Ack: 5000, Flags: fp.ACK | fp.PSH, Payload: goodHello}.Bytes(),
		fp.Segment{Src: srvAddr, Dst: vmAddr, Seq: 4999, Ack: 1001 + uint32(len(goodHello)), Flags: fp.ACK}.Bytes(),
		fp.Segment{Src: srvAddr, Dst: vmAddr, Seq: 5000, Ack: 1001, Flags: fp.RST | fp.ACK}.Bytes(),
	}
	for _, m := range []func(*fp.Segment){badSum, fragment(0), fragment(3), ipOpts(7, 7, 4, 0), opts(19, 4, 0, 0), opts(5, 10, 0, 0, 0, 0, 0, 0, 0, 0)} {
		c := s
		m(&c)
		out = append(out, c.Bytes())
	}
	return out
}

// FuzzParse: the packet parser never panics, and what it returns lies within the packet.
func FuzzParse(f *testing.F) {
	for _, p := range seedPackets(f) {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, _, err := parse(b)
		if err != nil {
			return
		}
		if len(s.payload)+len(s.opts)+40 > len(b) {
			t.Fatalf("payload %d and options %d from %d bytes", len(s.payload), len(s.opts), len(b))
		}
		_, _ = parseOptions(s.opts, s.flags&flagSYN != 0)
	})
}

// FuzzWalk: the record walker never panics, and a complete hello ends within the bytes
// and the limit.
func FuzzWalk(f *testing.F) {
	hellos(f)
	for _, h := range [][]byte{goodHello, bigGood, records(goodHello, 64), goodHello[:7], {0x16, 3, 1, 0, 0}} {
		f.Add(h, 4096)
	}
	f.Fuzz(func(t *testing.T, p []byte, limit int) {
		limit = max(0, min(limit, sni.MaxHelloBytes))
		end, err := sni.HelloEnd(p, limit)
		if err != nil && end != 0 || end > len(p) || end > limit {
			t.Fatalf("end %d, err %v, for %d bytes, limit %d", end, err, len(p), limit)
		}
	})
}

// FuzzHandle: any sequence of packets, at any times, gets exactly one verdict per packet
// once every flow has timed out, the accounting returns to zero, and no flow is confirmed
// that was not judged allowed.
func FuzzHandle(f *testing.F) {
	var seed []byte
	for _, p := range seedPackets(f) {
		seed = binary.BigEndian.AppendUint16(seed, uint16(len(p)))
		seed = append(seed, p...)
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, in []byte) {
		c := newConn(t, Limits{Segments: 4, FlowsPerVM: 3, Flows: 5, BytesPerVM: 4096})
		var ids []uint32
		for len(in) >= 2 && len(ids) < 64 {
			n := min(int(binary.BigEndian.Uint16(in)), len(in)-2)
			ids = append(ids, c.raw(in[2:2+n]))
			in = in[2+n:]
			c.now = c.now.Add(time.Second)
			if n%7 == 0 {
				c.v.Sweep(c.now)
			}
		}
		c.v.Sweep(c.now.Add(time.Hour))
		for _, id := range ids {
			if c.r.got[id] == 0 {
				t.Fatalf("packet %d without a verdict", id)
			}
		}
		if s := c.v.Stats(); s.Flows != 0 || s.HeldBytes != 0 || len(c.v.vms) != 0 || len(c.v.flows) != 0 || len(c.v.live) != 0 {
			t.Fatalf("after every timeout: %+v, %d sandboxes, %d entries", s, len(c.v.vms), len(c.v.flows))
		}
		if s := c.v.Stats(); s.Confirmed > s.Verified {
			t.Fatalf("%d flows confirmed, %d judged allowed", s.Confirmed, s.Verified)
		}
	})
}

// TestChecksumRFC1071: the example of RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to
// ddf2 in one's complement; with the complement as checksum the total is ffff.
func TestChecksumRFC1071(t *testing.T) {
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := checksum(0, b); got != 0xddf2 {
		t.Fatalf("sum %04x, want ddf2", got)
	}
	if got := checksum(0, append(b, 0x22, 0x0d)); got != 0xffff {
		t.Fatalf("with the checksum %04x, want ffff", got)
	}
}
