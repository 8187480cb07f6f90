package firewall

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/internal/host/nfqueue"
)

// queueReader reads a queue with package nfqueue, standing in for egressd's verifier in
// these tests: it answers every packet with what decide says. A decision with a mark sets
// it on the packet's conntrack entry first (ctnetlink: this kernel lacks the NFQA_CT
// verdict attribute, CONFIG_NETFILTER_NETLINK_GLUE_CT), then gives the verdict: NF_REPEAT
// makes the packet meet the forward chain again, mark and all, the way egressd resets a
// refused flow; NF_ACCEPT lets it go on, the way egressd releases and confirms one (doc.go
// "The fast path").
type queueReader struct {
	q      *nfqueue.Queue
	ct     *conntrack.Conn
	decide func(p queued) (verdict, mark uint32)
	mu     sync.Mutex
	seen   []queued
}

// queued is the part of a queued packet the tests look at: a TCP segment from a sandbox,
// or from a server (source port 443) to a sandbox.
type queued struct {
	src, dst netip.AddrPort
	flags    byte
	payload  int
}

func (q queued) String() string {
	return fmt.Sprintf("%s>%s %#02x +%d", q.src, q.dst, q.flags, q.payload)
}

// The verdicts decide returns, as numbers (nfqueue's).
const (
	nfDrop   = uint32(nfqueue.Drop)
	nfAccept = uint32(nfqueue.Accept)
	nfRepeat = uint32(nfqueue.Repeat)
)

// readQueue binds queue num in ns and answers its packets until the test ends.
func readQueue(t *testing.T, ns *netNS, num uint16, decide func(queued) (verdict, mark uint32)) *queueReader {
	t.Helper()
	q, err := nfqueue.Open(num, nfqueue.Config{NetNSFd: int(ns.h)})
	if err != nil {
		t.Fatalf("bind queue %d: %v", num, err)
	}
	ct, err := conntrack.Dial(&netlink.Config{NetNS: int(ns.h)})
	if err != nil {
		q.Close()
		t.Fatal(err)
	}
	r := &queueReader{q: q, ct: ct, decide: decide}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		q.Run(ctx, func(p nfqueue.Packet) { r.answer(t, p) })
	}()
	t.Cleanup(func() { cancel(); <-done; q.Close(); ct.Close() })
	return r
}

// answer gives p the verdict decide says, after its mark if any.
func (r *queueReader) answer(t *testing.T, pkt nfqueue.Packet) {
	p := parseTCP(pkt.Payload)
	verdict, mark := r.decide(p)
	r.mu.Lock()
	r.seen = append(r.seen, p)
	r.mu.Unlock()
	if mark != 0 {
		src, dst := p.src, p.dst
		if src.Port() == webPortHTTPS { // a server's packet: its flow is the reverse
			src, dst = dst, src
		}
		f := conntrack.NewFlow(unix.IPPROTO_TCP, 0, src.Addr(), dst.Addr(), src.Port(), dst.Port(), 0, mark)
		f.TupleReply = conntrack.Tuple{} // the original tuple finds the entry
		if err := r.ct.Update(f); err != nil {
			t.Errorf("conntrack mark %#x on %s: %v", mark, p, err)
		}
	}
	if err := r.q.SetVerdict(pkt.ID, nfqueue.Verdict(verdict)); err != nil {
		t.Errorf("verdict on %s: %v", p, err)
	}
}

// packets are the packets the reader answered so far.
func (r *queueReader) packets() []queued {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]queued(nil), r.seen...)
}

func parseTCP(b []byte) queued {
	if len(b) < 20 || b[0]>>4 != 4 {
		return queued{}
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if b[9] != unix.IPPROTO_TCP || len(b) < ihl+20 || total > len(b) {
		return queued{}
	}
	tcp := b[ihl:]
	return queued{
		src:     netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[12:16])), binary.BigEndian.Uint16(tcp[0:])),
		dst:     netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[16:20])), binary.BigEndian.Uint16(tcp[2:])),
		flags:   tcp[13],
		payload: total - ihl - int(tcp[12]>>4)*4,
	}
}

// handshakeThen is a decision that lets a flow's segments without data through (the
// handshake, its ACKs) and gives its first data segment the mark; with mark 0 it drops.
func handshakeThen(mark uint32) func(queued) (uint32, uint32) {
	return func(p queued) (uint32, uint32) {
		switch {
		case p.payload == 0:
			return nfAccept, 0
		case mark == 0:
			return nfDrop, 0
		}
		return nfRepeat, mark
	}
}

// waitFor polls cond (bounded: every 20 ms, for at most within).
func waitFor(within time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
