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

// ctSource is a netlink socket in conntrack's NEW and DESTROY multicast groups.
type ctSource struct {
	c     *netlink.Conn
	r     *Reader
	once  sync.Once
	start map[uint32]time.Time // by conntrack ID; used by the read goroutine only
}

func (r *Reader) openConntrack() (*ctSource, error) {
	groups := uint32(1)<<(netfilter.GroupCTNew-1) | uint32(1)<<(netfilter.GroupCTDestroy-1)
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: r.NetNSFd, Groups: groups})
	if err != nil {
		return nil, wrap("conntrack events: netlink", err)
	}
	_ = setReadBuffer(c, socketBuffer) // best effort: overflows are counted anyway
	return &ctSource{c: c, r: r, start: map[uint32]time.Time{}}, nil
}

func (s *ctSource) close() { s.once.Do(func() { _ = s.c.Close() }) }

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
	}
	// A flow DNATed to the gateway's own listeners answers from another address than
	// the one dialled: the proxy and the DNS filter record those.
	forwarded := reply.IP.SourceAddress.Unmap() == fl.Dst
	switch {
	case !fl.Src.Is4() || !forwarded:
		return record{}, false
	case fl.Marked:
	case s.r.Sandboxes.IsValid() && s.r.Sandboxes.Contains(fl.Src):
	default:
		return record{}, false
	}
	switch ev.Type {
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
