package firewall

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// queueReader is a minimal NFQUEUE reader, standing in for egressd's in these tests: it
// binds a queue in the gateway's namespace and answers every packet with what decide
// says. A decision with a mark sets it on the packet's conntrack entry first (ctnetlink:
// this kernel lacks the NFQA_CT verdict attribute, CONFIG_NETFILTER_NETLINK_GLUE_CT) and
// is then given as NF_REPEAT, so that the packet meets the forward chain again, mark and
// all: the way egressd hands a flow to the kernel (doc.go "The fast path").
type queueReader struct {
	nl     *netlink.Conn
	ct     *conntrack.Conn
	num    uint16
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

// Netfilter queue constants (linux/netfilter/nfnetlink_queue.h).
const (
	nfqnlMsgPacket  = 0
	nfqnlMsgVerdict = 1
	nfqnlMsgConfig  = 2
	nfqaPacketHdr   = 1
	nfqaVerdictHdr  = 2
	nfqaPayload     = 10
	nfqaCfgCmd      = 1
	nfqaCfgParams   = 2
	nfqnlCmdBind    = 1
	nfqnlCopyPacket = 2
	nfDrop          = 0
	nfAccept        = 1
	nfRepeat        = 4
)

// readQueue binds queue num in ns and answers its packets until the test ends.
func readQueue(t *testing.T, ns *netNS, num uint16, decide func(queued) (verdict, mark uint32)) *queueReader {
	t.Helper()
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: int(ns.h)})
	if err != nil {
		t.Fatal(err)
	}
	ct, err := conntrack.Dial(&netlink.Config{NetNS: int(ns.h)})
	if err != nil {
		nl.Close()
		t.Fatal(err)
	}
	q := &queueReader{nl: nl, ct: ct, num: num, decide: decide}
	params := binary.BigEndian.AppendUint32(nil, 0xffff) // copy_range
	if _, err := nl.Execute(q.msg(nfqnlMsgConfig, netlink.Request|netlink.Acknowledge,
		netfilter.Attribute{Type: nfqaCfgCmd, Data: []byte{nfqnlCmdBind, 0, 0, 0}},
		netfilter.Attribute{Type: nfqaCfgParams, Data: append(params, nfqnlCopyPacket)})); err != nil {
		t.Fatalf("bind queue %d: %v", num, err)
	}
	done := make(chan struct{})
	go q.run(t, done)
	t.Cleanup(func() { nl.Close(); <-done; ct.Close() })
	return q
}

func (q *queueReader) msg(typ netfilter.MessageType, flags netlink.HeaderFlags, attrs ...netfilter.Attribute) netlink.Message {
	m, err := netfilter.MarshalNetlink(netfilter.Header{SubsystemID: netfilter.NFSubsysQueue, MessageType: typ,
		Family: netfilter.ProtoUnspec, ResourceID: q.num, Flags: flags}, attrs)
	if err != nil {
		panic(err) // fixed attributes: cannot fail
	}
	return m
}

// run answers packets until the socket is closed; at most 10,000 (a bound, never met).
func (q *queueReader) run(t *testing.T, done chan struct{}) {
	defer close(done)
	for n := 0; n < 10000; {
		msgs, err := q.nl.Receive()
		if err != nil {
			return // closed at the end of the test
		}
		for _, m := range msgs {
			h, attrs, err := netfilter.UnmarshalNetlink(m)
			if err != nil || h.MessageType != nfqnlMsgPacket {
				continue
			}
			n++
			var id uint32
			var p queued
			for _, a := range attrs {
				switch a.Type {
				case nfqaPacketHdr:
					id = binary.BigEndian.Uint32(a.Data)
				case nfqaPayload:
					p = parseTCP(a.Data)
				}
			}
			verdict, mark := q.decide(p)
			q.mu.Lock()
			q.seen = append(q.seen, p)
			q.mu.Unlock()
			if mark != 0 {
				src, dst := p.src, p.dst
				if src.Port() == webPortHTTPS { // a server's packet: its flow is the reverse
					src, dst = dst, src
				}
				f := conntrack.NewFlow(unix.IPPROTO_TCP, 0, src.Addr(), dst.Addr(), src.Port(), dst.Port(), 0, mark)
				f.TupleReply = conntrack.Tuple{} // the original tuple finds the entry
				if err := q.ct.Update(f); err != nil {
					t.Errorf("conntrack mark %#x on %s: %v", mark, p, err)
				}
			}
			hdr := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, verdict), id)
			if _, err := q.nl.Send(q.msg(nfqnlMsgVerdict, netlink.Request, netfilter.Attribute{Type: nfqaVerdictHdr, Data: hdr})); err != nil {
				return
			}
		}
	}
}

// packets are the packets the reader answered so far.
func (q *queueReader) packets() []queued {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]queued(nil), q.seen...)
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
