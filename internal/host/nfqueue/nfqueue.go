package nfqueue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Verdict is what becomes of a queued packet.
type Verdict uint32

const (
	Drop   Verdict = 0 // NF_DROP
	Accept Verdict = 1 // NF_ACCEPT: continues with the next hook
	Repeat Verdict = 4 // NF_REPEAT: the packet traverses the same hook again from its first rule
)

// Packet is one queued packet.
type Packet struct {
	ID            uint32 // the kernel's packet id, for SetVerdict
	Hook          uint8
	Payload       []byte // the network packet (IPv4 from its header), whole; owned by the caller
	InDev, OutDev uint32 // interface indexes, 0 when none
}

// Config configures a queue. The zero value is this namespace and the default length.
type Config struct {
	NetNSFd int    // network namespace of the queue (0: the caller's); like flowlog.Reader.NetNSFd
	MaxLen  uint32 // queue length in the kernel (NFQA_CFG_QUEUE_MAXLEN); 0 means 4096. Full → the kernel drops (never fail-open).
}

// Stats are the queue's counters since Open.
type Stats struct {
	Received uint64 // packets handed to Run's callback
	Verdicts uint64 // verdicts sent
	// Errors: failed sends, verdicts the kernel refused (an unknown id: answered twice,
	// or too late), and messages that could not be parsed (their packets were dropped).
	Errors uint64
	// Kernel counters of the queue (/proc/net/netfilter/nfnetlink_queue of its
	// namespace), when readable: packets dropped because the queue was full, and
	// because they could not be delivered to the socket (its buffer full).
	QueueDropped, UserDropped uint64
}

// Queue is one bound NFQUEUE queue.
type Queue struct {
	num  uint16
	c    *netlink.Conn
	rc   syscall.RawConn
	proc *os.File // the kernel's queue table in the queue's namespace, or nil

	pending [][]byte // packet messages that came in before the bind was acknowledged
	rd      reader   // Run's receive buffer and call, reused
	send    sync.Pool

	received, verdicts, errs atomic.Uint64
	closeOnce                sync.Once
}

// recvBuffer is Run's buffer: one netlink datagram, at most the largest packet (64 KiB)
// and its attributes. The socket's own buffer holds many of them.
const recvBuffer = 96 << 10

// socketBuffer is the receive buffer asked for the socket: some thousands of queued
// packets while the reader is descheduled (the queue itself is bounded by MaxLen).
const socketBuffer = 16 << 20

// Open binds queue num in the configured namespace: copy mode packet (range 0xffff), no
// flags (no F_FAIL_OPEN, no F_GSO, no F_CONNTRACK; see the package doc).
func Open(num uint16, cfg Config) (*Queue, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: cfg.NetNSFd})
	if err != nil {
		return nil, fmt.Errorf("nfqueue %d: netlink: %w", num, err)
	}
	q := &Queue{num: num, c: c}
	q.rd.buf = make([]byte, recvBuffer)
	q.rd.fn = q.rd.read
	if q.rc, err = c.SyscallConn(); err != nil {
		c.Close()
		return nil, fmt.Errorf("nfqueue %d: %w", num, err)
	}
	_ = q.setReadBuffer(socketBuffer) // best effort: losses show in UserDropped
	// Overflows are counted by the kernel (UserDropped); an ENOBUFS error would only
	// interrupt Run.
	_ = c.SetOption(netlink.NoENOBUFS, true)
	maxLen := cfg.MaxLen
	if maxLen == 0 {
		maxLen = defaultMaxLen
	}
	if err := q.bind(maxLen); err != nil {
		c.Close()
		return nil, err
	}
	q.proc = openProc(cfg.NetNSFd) // optional: nil leaves the kernel counters at 0
	q.send.New = func() any { return new(sender) }
	return q, nil
}

// bind sends the config message and waits for its acknowledgement. Packets of the queue
// may come in before it (another CPU queueing at once): they are kept for Run.
func (q *Queue) bind(maxLen uint32) error {
	m, err := configMessage(q.num, maxLen, true)
	if err != nil {
		return fmt.Errorf("nfqueue %d: config message: %w", q.num, err)
	}
	sent, err := q.c.Send(m)
	if err != nil {
		return fmt.Errorf("nfqueue %d: bind: %w", q.num, err)
	}
	_ = q.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer q.c.SetReadDeadline(time.Time{})
	for range 1000 { // bounded: the answer is among the first messages
		msgs, err := q.c.Receive()
		if err != nil { // a nack: EBUSY when another socket has the queue, EPERM without CAP_NET_ADMIN
			return fmt.Errorf("nfqueue %d: bind: %w", q.num, err)
		}
		for _, m := range msgs {
			if m.Header.Type == netlink.Error && m.Header.Sequence == sent.Header.Sequence {
				return nil
			}
			if uint16(m.Header.Type) == typePacket {
				q.pending = append(q.pending, m.Data) // Receive's buffer is not reused
			}
		}
	}
	return fmt.Errorf("nfqueue %d: bind: no answer", q.num)
}

func (q *Queue) setReadBuffer(n int) error {
	var serr error
	err := q.rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n); serr != nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		}
	})
	return errors.Join(err, serr)
}

// Run reads packets and calls fn for each, in order, on the calling goroutine, until ctx
// ends or the socket fails. fn must not block long: the kernel holds the queued packets
// (at most MaxLen) meanwhile. Payload is a fresh copy per packet. A packet message that
// cannot be parsed is dropped here (SetVerdict Drop, when its id is known) and counted in
// Errors. Run returns ctx.Err() on cancel; only one Run at a time.
func (q *Queue) Run(ctx context.Context, fn func(Packet)) error {
	_ = q.c.SetReadDeadline(time.Time{}) // a previous Run's cancel set it
	stop := context.AfterFunc(ctx, func() { _ = q.c.SetReadDeadline(time.Now()) })
	defer stop()
	for _, d := range q.pending {
		q.handle(d, fn)
	}
	q.pending = nil
	for {
		n, err := q.recv()
		if err == nil {
			q.messages(q.rd.buf[:n], fn) // even after a cancel: the kernel holds them for us
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				q.errs.Add(1) // the kernel lost messages for us; the socket goes on
				continue
			}
			return fmt.Errorf("nfqueue %d: receive: %w", q.num, err)
		}
	}
}

// reader is Run's receive buffer and the function that fills it, made once so that a
// receive allocates nothing.
type reader struct {
	buf []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

// read is read(2), not recvfrom(2): x/sys's Recvfrom allocates the sender's address. The
// socket is non-blocking. A datagram longer than buf (none is) would be cut, and then
// fail to parse and be dropped.
func (r *reader) read(fd uintptr) bool {
	r.n, r.err = unix.Read(int(fd), r.buf)
	return r.err != unix.EAGAIN && r.err != unix.EINTR // false: wait (or retry) in the poller
}

// recv reads one datagram into q.rd.buf, waiting in the runtime's poller (so deadlines and
// Close interrupt it).
func (q *Queue) recv() (int, error) {
	q.rd.n, q.rd.err = 0, nil
	if err := q.rc.Read(q.rd.fn); err != nil {
		return 0, err
	}
	if q.rd.err != nil {
		return 0, q.rd.err
	}
	return q.rd.n, nil
}

// messages handles each netlink message of one datagram.
func (q *Queue) messages(b []byte, fn func(Packet)) {
	for len(b) >= nlmsgHdrLen {
		l := int(binary.NativeEndian.Uint32(b))
		if l < nlmsgHdrLen || l > len(b) {
			q.errs.Add(1)
			return
		}
		switch typ := binary.NativeEndian.Uint16(b[4:]); typ {
		case typePacket:
			q.handle(b[nlmsgHdrLen:l], fn)
		case unix.NLMSG_ERROR:
			// A refused verdict (verdicts ask for no acknowledgement, so every
			// answer is an error), or the answer to the unbind of Close.
			if l >= nlmsgHdrLen+4 && binary.NativeEndian.Uint32(b[nlmsgHdrLen:]) != 0 {
				q.errs.Add(1)
			}
		}
		b = b[min(align4(l), len(b)):]
	}
}

// handle parses one packet message and hands it to fn with its payload copied.
func (q *Queue) handle(data []byte, fn func(Packet)) {
	var p Packet
	if err := parsePacket(data, &p); err != nil {
		q.errs.Add(1)
		if p.ID != 0 { // the header was read: the kernel holds the packet
			_ = q.SetVerdict(p.ID, Drop) // fail closed rather than hold it until the queue fills
		}
		return
	}
	p.Payload = append([]byte(nil), p.Payload...)
	q.received.Add(1)
	fn(p)
}

// sender is one verdict's buffer and the function that writes it, kept in a pool so
// that a verdict allocates nothing.
type sender struct {
	b   [verdictLen]byte
	err error
	fn  func(fd uintptr) bool
}

func (s *sender) write(fd uintptr) bool {
	_, s.err = unix.Write(int(fd), s.b[:])
	return s.err != unix.EAGAIN && s.err != unix.EINTR // false: wait (or retry) in the poller
}

// SetVerdict answers packet id. It does not wait for the kernel: a refused verdict shows
// in Stats.Errors. Safe for concurrent use with Run and other SetVerdict calls. To change
// the flow's conntrack mark with the verdict, update the entry through ctnetlink first,
// then answer Repeat (see the package doc).
func (q *Queue) SetVerdict(id uint32, v Verdict) error {
	s := q.send.Get().(*sender)
	defer q.send.Put(s)
	if s.fn == nil {
		s.fn = s.write
	}
	putVerdict(s.b[:], q.num, id, v) // always verdictLen bytes
	s.err = nil
	err := q.rc.Write(s.fn)
	if err == nil {
		err = s.err
	}
	if err != nil {
		q.errs.Add(1)
		return fmt.Errorf("nfqueue %d: verdict for packet %d: %w", q.num, id, err)
	}
	q.verdicts.Add(1)
	return nil
}

// Close unbinds and closes. Packets still queued are dropped by the kernel (closing the
// socket alone would do; the unbind says it).
func (q *Queue) Close() error {
	var err error
	q.closeOnce.Do(func() {
		if m, merr := configMessage(q.num, 0, false); merr == nil {
			m.Header.Flags = netlink.Request // no answer awaited: Run may be reading
			_, _ = q.c.Send(m)
		}
		if q.proc != nil {
			q.proc.Close()
		}
		err = q.c.Close()
	})
	return err
}

// Stats returns the counters. The kernel's are read from its queue table when that could
// be opened, and are 0 otherwise.
func (q *Queue) Stats() Stats {
	s := Stats{Received: q.received.Load(), Verdicts: q.verdicts.Load(), Errors: q.errs.Load()}
	if q.proc != nil {
		s.QueueDropped, s.UserDropped = readProc(q.proc, q.num)
	}
	return s
}
