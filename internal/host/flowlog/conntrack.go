package flowlog

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/host/firewall"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// maxOpen bounds the start times kept between a flow's NEW and DESTROY events (used when
// conntrack timestamps are off); past it a flow's Start is left zero.
const maxOpen = 1 << 16

// Conntrack's TCP states in which a connection has ended (TCP_CONNTRACK_TIME_WAIT,
// TCP_CONNTRACK_CLOSE): the entry lingers (120 s, 10 s) but no more data flows.
const (
	tcpTimeWait = 7
	tcpClose    = 8
)

// ctSource is a netlink socket in conntrack's NEW, UPDATE and DESTROY multicast groups,
// and a request socket that reads an ended connection's counters.
type ctSource struct {
	c     *netlink.Conn
	get   *conntrack.Conn
	r     *Reader
	once  sync.Once
	start map[uint32]time.Time // by conntrack ID; used by the read goroutine only
	ended map[uint32]bool      // flows reported when their TCP connection ended
}

func (r *Reader) openConntrack() (*ctSource, error) {
	groups := uint32(1)<<(netfilter.GroupCTNew-1) | uint32(1)<<(netfilter.GroupCTUpdate-1) | uint32(1)<<(netfilter.GroupCTDestroy-1)
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: r.NetNSFd, Groups: groups})
	if err != nil {
		return nil, wrap("conntrack events: netlink", err)
	}
	get, err := conntrack.Dial(&netlink.Config{NetNS: r.NetNSFd})
	if err != nil {
		c.Close()
		return nil, wrap("conntrack requests: netlink", err)
	}
	_ = setReadBuffer(c, socketBuffer) // best effort: overflows are counted anyway
	return &ctSource{c: c, get: get, r: r, start: map[uint32]time.Time{}, ended: map[uint32]bool{}}, nil
}

func (s *ctSource) close() {
	s.once.Do(func() {
		_ = s.c.Close()
		_ = s.get.Close()
	})
}

// read turns events into records in q until the socket is closed.
func (s *ctSource) read(ctx context.Context, q chan<- record) error {
	for {
		msgs, err := s.c.Receive()
		switch {
		case err == nil:
		case closed(ctx, err):
			return nil
		case errors.Is(err, unix.ENOBUFS):
			s.r.kernelLost.Add(1) // events lost; the socket goes on
			continue
		default:
			return wrap("conntrack events: receive", err)
		}
		now := time.Now()
		for _, m := range msgs {
			var ev conntrack.Event
			if err := ev.Unmarshal(m); err != nil || ev.Flow == nil {
				s.r.malformed.Add(1)
				continue
			}
			if rec, ok := s.record(ev, now); ok {
				offer(q, rec, &s.r.flowsDropped)
			}
		}
	}
}

// record turns an event into a record if its flow is one to report.
func (s *ctSource) record(ev conntrack.Event, now time.Time) (record, bool) {
	f := ev.Flow
	orig, reply := f.TupleOrig, f.TupleReply
	fl := Flow{
		Src: orig.IP.SourceAddress.Unmap(), Dst: orig.IP.DestinationAddress.Unmap(),
		SrcPort: orig.Proto.SourcePort, Port: orig.Proto.DestinationPort, Proto: orig.Proto.Protocol,
		Marked: f.Mark&firewall.MarkTCP != 0,
		Fast:   f.Mark&(firewall.MarkFast|firewall.MarkFastWait) != 0, // released flows were judged allowed too
	}
	// A flow DNATed to the gateway's own listeners answers from another address than
	// the one dialled: the proxy and the DNS filter record those.
	forwarded := reply.IP.SourceAddress.Unmap() == fl.Dst
	switch {
	case !fl.Src.Is4() || !forwarded:
		return record{}, false
	case fl.Marked, fl.Fast:
	case s.r.Sandboxes.IsValid() && s.r.Sandboxes.Contains(fl.Src):
	default:
		return record{}, false
	}
	switch ev.Type {
	case conntrack.EventUpdate:
		// A TCP connection that ended is reported now rather than when conntrack forgets
		// it (TIME_WAIT lasts 120 s): its counters are read with a request, since update
		// events carry none. Once only: its DESTROY is then left out.
		tcp := f.ProtoInfo.TCP
		if tcp == nil || (tcp.State != tcpTimeWait && tcp.State != tcpClose) || s.ended[f.ID] || len(s.ended) >= maxOpen {
			return record{}, false
		}
		full, err := s.get.Get(*f)
		if err != nil {
			return record{}, false // gone already: its DESTROY reports it
		}
		s.ended[f.ID] = true
		fl.Start, fl.End = full.Timestamp.Start, now
		if st, ok := s.start[f.ID]; ok && fl.Start.IsZero() {
			fl.Start = st
		}
		delete(s.start, f.ID)
		fl.BytesOut, fl.PacketsOut = full.CountersOrig.Bytes, full.CountersOrig.Packets
		fl.BytesIn, fl.PacketsIn = full.CountersReply.Bytes, full.CountersReply.Packets
		return record{flow: &fl}, true
	case conntrack.EventNew:
		fl.Start = f.Timestamp.Start
		if fl.Start.IsZero() {
			fl.Start = now
		}
		if len(s.start) < maxOpen {
			s.start[f.ID] = fl.Start
		}
		return record{flow: &fl, open: true}, s.r.OnOpen != nil
	case conntrack.EventDestroy:
		if s.ended[f.ID] {
			delete(s.ended, f.ID)
			return record{}, false // reported when it ended
		}
		fl.Start, fl.End = f.Timestamp.Start, f.Timestamp.Stop
		if st, ok := s.start[f.ID]; ok {
			if fl.Start.IsZero() {
				fl.Start = st
			}
			delete(s.start, f.ID)
		}
		if fl.End.IsZero() {
			fl.End = now
		}
		fl.BytesOut, fl.PacketsOut = f.CountersOrig.Bytes, f.CountersOrig.Packets
		fl.BytesIn, fl.PacketsIn = f.CountersReply.Bytes, f.CountersReply.Packets
		return record{flow: &fl}, true
	}
	return record{}, false
}
