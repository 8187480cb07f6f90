package flowlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// copyRange is how much of each logged packet the kernel copies: an IPv4 header with the
// longest options (60 bytes) and the first bytes of TCP, UDP or ICMP.
const copyRange = 128

// socketBuffer is the receive buffer asked for each socket: room for some thousands of
// records while the reader is descheduled.
const socketBuffer = 4 << 20

// nflogSource is a netlink socket bound to one NFLOG group.
type nflogSource struct {
	c      *netlink.Conn
	r      *Reader
	once   sync.Once
	queued []netlink.Message // packets that came in before the bind was acknowledged
	seen   *repeats
}

func (r *Reader) openNFLOG() (*nflogSource, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: r.NetNSFd})
	if err != nil {
		return nil, wrap("nflog: netlink", err)
	}
	s := &nflogSource{c: c, r: r, seen: newRepeats(r.Repeat)}
	_ = setReadBuffer(c, socketBuffer) // best effort: overflows are counted anyway
	if err := s.bind(r.group()); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// configMessage is NFULNL_MSG_CONFIG for group: bind it, copy packets (copyRange bytes),
// send each at once.
func configMessage(group uint16) (netlink.Message, error) {
	mode := make([]byte, 6) // struct nfulnl_msg_config_mode { __be32 copy_range; __u8 copy_mode; __u8 _pad; }
	binary.BigEndian.PutUint32(mode, copyRange)
	mode[4] = nfulnlCopyPacket
	return netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysULOG,
		MessageType: nfulnlMsgConfig,
		Family:      unix.AF_UNSPEC,
		ResourceID:  group,
		Flags:       netlink.Request | netlink.Acknowledge,
	}, []netfilter.Attribute{
		{Type: nfulaCfgCmd, Data: []byte{nfulnlCfgCmdBind}},
		{Type: nfulaCfgMode, Data: mode},
		{Type: nfulaCfgQThresh, Data: netfilter.Uint32Bytes(1)},
	})
}

// bind sends the config message and waits for its acknowledgement. Packets of the group
// may come in before it (another CPU logging at once): they are kept for read.
func (s *nflogSource) bind(group uint16) error {
	m, err := configMessage(group)
	if err != nil {
		return wrap("nflog: config message", err)
	}
	sent, err := s.c.Send(m)
	if err != nil {
		return wrap(fmt.Sprintf("nflog: bind group %d", group), err)
	}
	_ = s.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer s.c.SetReadDeadline(time.Time{})
	for range 1000 { // bounded: the answer is among the first messages
		msgs, err := s.c.Receive()
		if err != nil {
			return wrap(fmt.Sprintf("nflog: bind group %d", group), err)
		}
		for _, m := range msgs {
			if m.Header.Type == netlink.Error && m.Header.Sequence == sent.Header.Sequence {
				return nil // an ack: Receive returns an error for a nack
			}
			s.queued = append(s.queued, m)
		}
	}
	return wrap(fmt.Sprintf("nflog: bind group %d", group), errors.New("no answer"))
}

func (s *nflogSource) close() { s.once.Do(func() { _ = s.c.Close() }) }

// read parses packets into q until the socket is closed.
func (s *nflogSource) read(ctx context.Context, q chan<- record) error {
	handle := func(msgs []netlink.Message) {
		for _, m := range msgs {
			if m.Header.Type != netlink.HeaderType(uint16(netfilter.NFSubsysULOG)<<8|nfulnlMsgPacket) {
				continue // NLMSG_DONE of a batch, or an answer
			}
			a, err := ParsePacket(m.Data, time.Now())
			if err != nil {
				s.r.malformed.Add(1)
				continue
			}
			if s.seen.repeat(a, time.Now()) {
				s.r.repeats.Add(1)
				continue
			}
			offer(q, record{attempt: &a}, &s.r.attemptsDropped)
		}
	}
	handle(s.queued)
	s.queued = nil
	for {
		msgs, err := s.c.Receive()
		switch {
		case err == nil:
			handle(msgs)
		case closed(ctx, err):
			return nil
		case errors.Is(err, unix.ENOBUFS):
			s.r.kernelLost.Add(1) // the kernel dropped packets for us; the socket goes on
		default:
			return wrap("nflog: receive", err)
		}
	}
}

// setReadBuffer asks for n bytes of receive buffer, beyond net.core.rmem_max if the
// process may (SO_RCVBUFFORCE, CAP_NET_ADMIN).
func setReadBuffer(c *netlink.Conn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n); serr != nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// repeats remembers the attempts reported within a window, bounded: past maxRepeats
// entries, those out of the window go, and if that is not enough, all (a flood of
// distinct attempts is limited by the log rule anyway).
type repeats struct {
	window time.Duration
	last   map[attemptKey]time.Time
}

type attemptKey struct {
	src, dst       [4]byte
	sport, dport   uint16
	proto, icmpTyp uint8
}

const maxRepeats = 4096

func newRepeats(window time.Duration) *repeats {
	if window == 0 {
		window = 10 * time.Second
	}
	return &repeats{window: window, last: map[attemptKey]time.Time{}}
}

// repeat reports whether a was reported within the window before now, and notes it.
func (r *repeats) repeat(a Attempt, now time.Time) bool {
	if r.window < 0 {
		return false
	}
	k := attemptKey{a.Src.As4(), a.Dst.As4(), a.SrcPort, a.Port, a.Proto, a.ICMPType}
	if t, ok := r.last[k]; ok && now.Sub(t) < r.window {
		return true
	}
	if len(r.last) >= maxRepeats {
		for k, t := range r.last {
			if now.Sub(t) >= r.window {
				delete(r.last, k)
			}
		}
		if len(r.last) >= maxRepeats {
			clear(r.last)
		}
	}
	r.last[k] = now
	return false
}
