package nfqueue

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/egressd/egressd/internal/host/netns"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// How a verdict reaches a flow without conntrack in the queue (see the package doc): the
// first data packet of a TCP connection (queued after its handshake, so that its entry is
// confirmed) is held, its flow's ct mark is set by a ctnetlink update, and the packet is
// answered Repeat. It meets the output chain again from its first rule: with the pass
// mark, the `ct mark` accept rule lets it and the flow's later packets go without the
// queue, and the server reads all the data; with the reject mark the reject rule meets
// it, and the server reads nothing. Either way no packet of the flow is queued again.
func TestMarkByConntrackThenRepeat(t *testing.T) {
	for _, tt := range []struct {
		name string
		num  uint16
		mark uint32
	}{
		{"pass", 22, markPass},
		{"reject", 21, markReject},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := newLab(t, tt.num)
			read := l.tcpServer(t)
			q := l.open(t)
			pkts := l.run(t, q)
			dialed := make(chan net.Conn, 1)
			go func() {
				c, err := netns.DialIn(l.path())(t.Context(), "tcp4", "127.0.0.1:9100")
				if err != nil {
					t.Error(err)
					dialed <- nil
					return
				}
				_, _ = c.Write([]byte("held data"))
				dialed <- c
			}()
			p := holdData(t, q, pkts)
			sport := binary.BigEndian.Uint16(p.Payload[20:])
			cc, err := conntrack.Dial(&netlink.Config{NetNS: int(l.h)})
			if err != nil {
				t.Fatal(err)
			}
			lo := netip.MustParseAddr("127.0.0.1")
			err = cc.Update(conntrack.NewFlow(unix.IPPROTO_TCP, 0, lo, lo, sport, tcpPort, 0, tt.mark))
			cc.Close()
			if err != nil {
				t.Fatalf("conntrack update: %v", err)
			}
			if err := q.SetVerdict(p.ID, Repeat); err != nil {
				t.Fatal(err)
			}
			c, ok := recv(dialed, wait)
			if !ok || c == nil {
				t.Fatal("no connection")
			}
			defer c.Close()
			if tt.mark == markPass {
				if s, ok := recv(read, wait); !ok || s != "held data" {
					t.Fatalf("the server read %q, %v", s, ok)
				}
				if _, err := c.Write([]byte("more")); err != nil {
					t.Fatal(err)
				}
				if s, ok := recv(read, wait); !ok || s != "more" {
					t.Fatalf("the server read %q, %v after the pass mark", s, ok)
				}
			} else if s, ok := recv(read, quiet); ok {
				t.Errorf("the server read %q", s)
			}
			for range 100 { // bounded: the lab sends nothing else
				p, ok := recv(pkts, quiet)
				if !ok {
					break
				}
				if binary.BigEndian.Uint16(p.Payload[20:]) == sport {
					t.Fatalf("a packet of the marked flow was queued again: % x", p.Payload)
				}
				_ = q.SetVerdict(p.ID, Drop)
			}
			if m, ok := l.ctMark(t, sport, tcpPort); !ok || m != tt.mark {
				t.Errorf("ct mark %#x, %v", m, ok)
			}
		})
	}
}

// holdData accepts the queued packets of a TCP connection's handshake and returns its
// first packet with data, held: the caller gives it its verdict.
func holdData(t *testing.T, q *Queue, pkts <-chan Packet) Packet {
	t.Helper()
	for range 10 { // the handshake's packets, then the data
		p, ok := recv(pkts, wait)
		if !ok {
			t.Fatal("no data packet queued")
		}
		ip := p.Payload
		if len(ip) < 40 || ip[0] != 0x45 || ip[9] != unix.IPPROTO_TCP {
			t.Fatalf("queued % x", ip)
		}
		if tcp := ip[20:]; len(tcp[int(tcp[12]>>4)*4:]) > 0 {
			return p
		}
		_ = q.SetVerdict(p.ID, Accept)
	}
	t.Fatal("no data packet among the first ten")
	return Packet{}
}
