package fastpath

import (
	"net/netip"
	"testing"
	"time"

	fp "github.com/egressd/egressd/internal/host/fastpath/fastpathtest"
)

type nopVerdicts struct{}

func (nopVerdicts) SetVerdict(uint32, Verdict, Flow) error { return nil }

type allowJudge struct{}

func (allowJudge) Judge(f Flow, h Hello) bool { return h.Err == nil }

// BenchmarkHandle: the verifier's cost for one connection: SYN, ACK, a one-segment
// ClientHello (judged and passed). Packets are built beforehand for 1,024 source ports;
// a Sweep after each round forgets the verified flows, as the 100 ms ticker would.
func BenchmarkHandle(b *testing.B) {
	hellos(b)
	for _, tc := range []struct {
		name  string
		hello []byte
	}{{"small", goodHello}, {"big", bigGood}} {
		b.Run(tc.name, func(b *testing.B) {
			const ports = 1024
			conns := make([][3][]byte, ports)
			for i := range conns {
				src := netip.AddrPortFrom(vmAddr.Addr(), uint16(20000+i))
				conns[i] = [3][]byte{
					fp.Segment{Src: src, Dst: srvAddr, Seq: 1000, Flags: fp.SYN}.Bytes(),
					fp.Segment{Src: src, Dst: srvAddr, Seq: 1001, Ack: 5000, Flags: fp.ACK}.Bytes(),
					fp.Segment{Src: src, Dst: srvAddr, Seq: 1001, Ack: 5000, Flags: fp.ACK | fp.PSH, Payload: tc.hello}.Bytes(),
				}
			}
			v := New(nopVerdicts{}, allowJudge{}, Limits{})
			now := t0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				c := conns[i%ports]
				for j, p := range c {
					v.Handle(Packet{ID: uint32(3*i + j), Data: p}, now)
				}
				if i%ports == ports-1 {
					now = now.Add(3 * time.Second)
					v.Sweep(now)
				}
			}
			b.StopTimer()
			if s := v.Stats(); s.Verified == 0 || s.Reset != 0 {
				b.Fatalf("stats %+v", s)
			}
		})
	}
}
