package fastpath

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/egressd/egressd/internal/dataplane/sni"
)

// Packet is one packet from the queue: its queue id and the IPv4 packet from the header on.
type Packet struct {
	ID   uint32
	Data []byte
}

// Verdict is what to do with one queued packet.
type Verdict uint8

const (
	Accept  Verdict = iota + 1 // let this packet go, and nothing more (SYN, pure ACK, a checked packet of a released flow)
	Pass                       // let it go and mark the flow released: its ClientHello was judged allowed, the server is to get it; the kernel still queues the flow
	Drop                       // drop this packet only
	Reset                      // refuse the flow: mark it refused (the firewall answers it, and every later packet, with a TCP reset)
	Confirm                    // a server's packet acknowledging the whole ClientHello: let it go and mark the flow verified: the kernel forwards the rest
)

func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Pass:
		return "pass"
	case Drop:
		return "drop"
	case Reset:
		return "reset"
	case Confirm:
		return "confirm"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Verdicts receives the verdict of each packet, exactly one per Packet.ID, in the order
// decided. f is the packet's flow for Pass, Reset and Confirm, the verdicts that mark
// their flow (the firewall's conntrack mark), as the sandbox sent it (also for Confirm,
// which is given to a server's packet), and the zero Flow for the others and for a Reset
// of a packet without a flow (an IP fragment without ports), which can only be dropped.
type Verdicts interface {
	SetVerdict(id uint32, v Verdict, f Flow) error
}

// Flow is a TCP flow as the sandbox sent it (Src: the sandbox).
type Flow struct{ Src, Dst netip.AddrPort }

// Hello is what was read from a flow: the server name of its ClientHello (as sent: the judge
// normalises) and the ClientHello bytes; or Err, why the flow cannot be verified (then Name
// is ""; Bytes holds what had arrived in order, possibly nothing). The judge may keep
// Bytes but must not change it: a verified flow's late packets are compared with it.
type Hello struct {
	Name  string
	Bytes []byte
	Err   error
}

// Judge decides a flow once: true lets the kernel forward it. It is also told of every
// refusal (Err set) so that the refusal is recorded; its answer is then ignored.
type Judge interface {
	Judge(f Flow, h Hello) bool
}

// Limits bound what the verifier holds. Zero values take the defaults.
type Limits struct {
	// HelloBytes: most bytes of a ClientHello, record headers included. Default
	// sni.MaxHelloBytes: sni.ServerName reads no more than that, record headers included,
	// so a larger bound would only hold bytes to refuse later.
	HelloBytes int
	Segments   int           // most data segments held per flow (default 32)
	Hold       time.Duration // most time a flow may hold data before it is refused (default 5 s); also most time a released flow waits for its server's confirmation before it is forgotten
	Idle       time.Duration // a flow seen (SYN) but sending nothing is forgotten after this (default 30 s); refused flows are remembered this long
	FlowsPerVM int           // most unverified flows tracked per sandbox address (default 512)
	// PacketsPerVM: most data packets held per sandbox address (default 256). Each held
	// packet stays in the kernel's queue, which every sandbox shares and which drops what
	// does not fit (nfqueue's MaxLen, 4096 by default): without this bound, FlowsPerVM
	// flows of Segments tiny segments each would let one sandbox fill it.
	PacketsPerVM int
	BytesPerVM   int // most held bytes per sandbox address (default 1 MiB)
	Flows        int // most unverified flows overall (default 1<<16); also most verified or refused flows remembered
}

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.HelloBytes, sni.MaxHelloBytes)
	def(&l.Segments, 32)
	def(&l.FlowsPerVM, 512)
	def(&l.BytesPerVM, 1<<20)
	def(&l.PacketsPerVM, 256)
	def(&l.Flows, 1<<16)
	if l.Hold <= 0 {
		l.Hold = 5 * time.Second
	}
	if l.Idle <= 0 {
		l.Idle = 30 * time.Second
	}
	return l
}

// Verified flows are remembered this long after Confirm, for the packets the queue took
// before the mark took effect.
const verifiedLinger = 2 * time.Second

// maxRememberedBytes bounds the ClientHellos kept for verified flows (for comparing late
// retransmissions); past it the oldest are forgotten early.
const maxRememberedBytes = 64 << 20

type state uint8

const (
	unverified state = iota
	verified
	refused
	closed   // the client sent RST, or FIN before any data
	released // judged allowed (Pass), waiting for the server to acknowledge the ClientHello (Confirm)
)

// span is a range [lo, hi) of flow offsets whose bytes have arrived.
type span struct{ lo, hi int }

// heldPacket is a queued packet without a verdict yet, with its payload's range.
type heldPacket struct {
	id     uint32
	lo, hi int
}

type flow struct {
	key    Flow
	state  state
	isn    uint32
	synTTL uint8
	synTS  bool   // the SYN had timestamps: every later segment must too
	maxTS  uint32 // newest TSval sent so far, if tsSeen
	tsSeen bool
	ack    uint32 // the acknowledgement number every segment must carry
	ackSet bool
	// last: the last packet (unverified), or when the entry expires (released, verified, refused).
	last      time.Time
	holdSince time.Time // arrival of the oldest held packet
	held      []heldPacket
	heldBytes int    // payload bytes of the held packets
	sawData   bool   // a payload byte has arrived
	buf       []byte // the flow's bytes from offset 0; len is the furthest byte seen
	known     []span // the parts of buf that arrived, sorted and merged
	cost      int    // bytes charged to the sandbox: max(len(buf), heldBytes)
}

// vmUse is what one sandbox address holds: unverified flows, bytes charged, held packets.
type vmUse struct{ flows, bytes, packets int }

// Stats counts outcomes since New.
type Stats struct {
	Packets                          uint64
	Accepted, Passed, Dropped, Reset uint64 // verdicts given
	Confirmed                        uint64 // Confirm verdicts given: flows the server acknowledged
	VerdictErrors                    uint64 // SetVerdict failed
	Unparsed                         uint64 // packets dropped without a flow: not IPv4/TCP, or malformed before the ports
	Verified                         uint64 // flows the judge let through
	Refused                          map[string]uint64
	// Now:
	Flows     int // unverified flows tracked
	HeldBytes int // bytes charged to sandboxes
}

// Verifier turns queued packets into verdicts. It is not safe for concurrent use: Handle and
// Sweep are called from the queue reader's goroutine.
type Verifier struct {
	out   Verdicts
	judge Judge
	lim   Limits

	flows     map[Flow]*flow
	live      map[*flow]struct{} // the unverified entries of flows, for Sweep
	vms       map[netip.Addr]*vmUse
	heldBytes int
	// Released, verified, and refused or closed, entries, oldest first (their expiry is
	// flow.last).
	releasedQ, verified, refusedQ fifo
	memBytes                      int // ClientHello bytes of the released and verified entries

	stats   Stats
	refused map[string]uint64
}

// New returns a Verifier that sends verdicts to out and asks j about complete ClientHellos.
func New(out Verdicts, j Judge, l Limits) *Verifier {
	return &Verifier{
		out: out, judge: j, lim: l.withDefaults(),
		flows:   make(map[Flow]*flow),
		live:    make(map[*flow]struct{}),
		vms:     make(map[netip.Addr]*vmUse),
		refused: make(map[string]uint64),
	}
}

// Stats returns the counters.
func (v *Verifier) Stats() Stats {
	s := v.stats
	s.Refused = make(map[string]uint64, len(v.refused))
	for k, n := range v.refused {
		s.Refused[k] = n
	}
	s.Flows, s.HeldBytes = len(v.live), v.heldBytes
	return s
}

func (v *Verifier) verdict(id uint32, d Verdict) { v.verdictOn(id, d, Flow{}) }

// verdictOn gives packet id of flow f the verdict d.
func (v *Verifier) verdictOn(id uint32, d Verdict, f Flow) {
	switch d {
	case Accept:
		v.stats.Accepted++
	case Pass:
		v.stats.Passed++
	case Drop:
		v.stats.Dropped++
	case Reset:
		v.stats.Reset++
	case Confirm:
		v.stats.Confirmed++
	}
	if err := v.out.SetVerdict(id, d, f); err != nil {
		v.stats.VerdictErrors++
	}
}

// Handle decides one queued packet: a verdict for it now, or it is held until its flow's
// ClientHello is judged (then verdicts for every held packet of the flow).
func (v *Verifier) Handle(p Packet, now time.Time) {
	v.stats.Packets++
	s, tupleOK, err := parse(p.Data)
	if tupleOK && v.fromServer(s.flow) {
		v.server(&s, err, p.ID, now)
		return
	}
	if err != nil {
		var f *flow
		if tupleOK {
			f = v.flows[s.flow]
		}
		switch {
		case f != nil && f.state == refused:
			v.verdict(p.ID, Drop)
		case errors.Is(err, ErrFragment), errors.Is(err, ErrChecksum):
			// A packet the server would see differently from the verifier: refuse the flow
			// whether known or not.
			v.refuse(f, s.flow, p.ID, true, err, now)
		case f != nil:
			v.refuse(f, s.flow, p.ID, true, err, now)
		default:
			v.stats.Unparsed++
			v.verdict(p.ID, Drop)
		}
		return
	}
	f := v.flows[s.flow]
	switch {
	case f != nil && f.state == refused:
		v.verdict(p.ID, Drop)
	case f != nil && f.state == closed && s.flags&flagSYN == 0:
		// The last ACKs of a closed flow are harmless; data after the close is not.
		if len(s.payload) > 0 {
			v.refuse(f, s.flow, p.ID, true, fmt.Errorf("%w: %d bytes after the client closed", ErrFIN, len(s.payload)), now)
		} else {
			v.verdict(p.ID, Accept)
		}
	case s.flags&flagSYN != 0:
		v.syn(f, &s, p.ID, now)
	case f == nil:
		v.refuse(nil, s.flow, p.ID, true, fmt.Errorf("%w (flags %s)", ErrUnknownFlow, flagString(s.flags)), now)
	case f.state == verified || f.state == released:
		v.late(f, &s, p.ID, now)
	default:
		v.segment(f, &s, p.ID, now)
	}
}

// syn handles a SYN: a new flow, a retransmission, or a second SYN.
func (v *Verifier) syn(f *flow, s *segment, id uint32, now time.Time) {
	if f != nil && f.state == closed {
		f = nil // a new connection on the tuple of one that ended
	}
	fail := func(err error) { v.refuse(f, s.flow, id, true, err, now) }
	opts, err := parseOptions(s.opts, true)
	switch {
	case s.flags&(flagACK|flagFIN|flagRST|flagURG) != 0:
		fail(fmt.Errorf("%w: SYN with flags %s", ErrMalformed, flagString(s.flags)))
	case len(s.payload) > 0:
		fail(fmt.Errorf("%w: %d bytes on the SYN", ErrFastOpen, len(s.payload)))
	case s.ipOptions:
		fail(fmt.Errorf("%w: IP options on the SYN", ErrOption))
	case err != nil:
		fail(err)
	case f != nil && (f.state == verified || f.state == released):
		fail(fmt.Errorf("%w: on a verified flow", ErrSecondSYN))
	case f != nil && (f.isn != s.seq || f.sawData):
		fail(fmt.Errorf("%w: sequence %d after %d", ErrSecondSYN, s.seq, f.isn))
	case f != nil: // a retransmission
		f.last = now
		v.verdict(id, Accept)
	default:
		vm := v.vms[s.flow.Src.Addr()]
		if vm != nil && vm.flows >= v.lim.FlowsPerVM {
			fail(fmt.Errorf("%w: sandbox %s has %d flows waiting for verification", ErrLimit, s.flow.Src.Addr(), vm.flows))
			return
		}
		if len(v.live) >= v.lim.Flows {
			fail(fmt.Errorf("%w: %d flows waiting for verification", ErrLimit, len(v.live)))
			return
		}
		if vm == nil {
			vm = &vmUse{}
			v.vms[s.flow.Src.Addr()] = vm
		}
		vm.flows++
		f := &flow{key: s.flow, isn: s.seq, synTTL: s.ttl, synTS: opts.hasTS, tsSeen: opts.hasTS, maxTS: opts.tsval, last: now}
		v.flows[s.flow] = f
		v.live[f] = struct{}{}
		v.verdict(id, Accept)
	}
}

// segment handles a non-SYN packet of an unverified flow.
func (v *Verifier) segment(f *flow, s *segment, id uint32, now time.Time) {
	fail := func(err error) { v.refuse(f, s.flow, id, true, err, now) }
	if s.flags&flagRST != 0 {
		// The client gave up. Its held packets can never be verified.
		v.close(f, now)
		v.verdict(id, Accept)
		return
	}
	opts, err := parseOptions(s.opts, false)
	data := len(s.payload) > 0
	switch {
	case s.flags&flagURG != 0 || s.urgent != 0:
		fail(fmt.Errorf("%w: urgent pointer %d", ErrUrgent, s.urgent))
		return
	case s.ipOptions:
		fail(fmt.Errorf("%w: IP options", ErrOption))
		return
	case err != nil:
		fail(err)
		return
	case s.flags&flagACK == 0:
		// A server drops a segment without ACK on an established connection.
		fail(fmt.Errorf("%w: segment without ACK (flags %s)", ErrAck, flagString(s.flags)))
		return
	case f.ackSet && s.ack != f.ack:
		// Until the server has the ClientHello it sends nothing, so every segment
		// acknowledges the same byte; another number may be one the server drops.
		fail(fmt.Errorf("%w: acknowledges %d after %d", ErrAck, s.ack, f.ack))
		return
	case f.synTS && !opts.hasTS:
		fail(fmt.Errorf("%w: segment without a timestamp after a SYN with one", ErrTimestamp))
		return
	case data && opts.hasTS && f.tsSeen && int32(opts.tsval-f.maxTS) < 0:
		// PAWS: the server drops a segment with a timestamp older than one it has seen.
		fail(fmt.Errorf("%w: %d after %d", ErrTimestamp, opts.tsval, f.maxTS))
		return
	case data && s.ttl < f.synTTL:
		// It may expire before the server, which then takes other bytes in its place.
		fail(fmt.Errorf("%w: %d after %d", ErrTTL, s.ttl, f.synTTL))
		return
	}
	f.ack, f.ackSet = s.ack, true
	if opts.hasTS && (!f.tsSeen || int32(opts.tsval-f.maxTS) > 0) {
		f.maxTS, f.tsSeen = opts.tsval, true
	}
	f.last = now
	switch {
	case s.flags&flagFIN != 0 && !f.sawData && !data:
		v.close(f, now)
		v.verdict(id, Accept)
	case s.flags&flagFIN != 0:
		fail(fmt.Errorf("%w: the client closed after %d bytes", ErrFIN, len(f.buf)+len(s.payload)))
	case !data:
		v.verdict(id, Accept)
	default:
		v.hold(f, s, id, now)
	}
}

// hold keeps a data segment of an unverified flow, then judges the flow if its
// ClientHello is complete.
func (v *Verifier) hold(f *flow, s *segment, id uint32, now time.Time) {
	fail := func(err error) { v.refuse(f, s.flow, id, true, err, now) }
	off := int(int32(s.seq - (f.isn + 1)))
	end := off + len(s.payload)
	switch {
	case off < 0:
		fail(fmt.Errorf("%w: bytes before the first data byte (offset %d)", ErrOverlap, off))
		return
	case end > v.lim.HelloBytes:
		fail(fmt.Errorf("%w: byte %d is past the %d bytes a ClientHello may take", ErrTooLarge, end, v.lim.HelloBytes))
		return
	case len(f.held) >= v.lim.Segments:
		fail(fmt.Errorf("%w: more than %d segments", ErrTooManySegments, v.lim.Segments))
		return
	case v.vms[f.key.Src.Addr()].packets >= v.lim.PacketsPerVM:
		fail(fmt.Errorf("%w: sandbox %s holds %d packets", ErrLimit, f.key.Src.Addr(), v.lim.PacketsPerVM))
		return
	}
	for _, k := range f.known {
		lo, hi := max(k.lo, off), min(k.hi, end)
		if lo >= hi {
			continue
		}
		if i := mismatch(f.buf[lo:hi], s.payload[lo-off:hi-off]); i >= 0 {
			fail(fmt.Errorf("%w: overlapping segments disagree at byte %d", ErrOverlap, lo+i))
			return
		}
	}
	cost := max(len(f.buf), end, f.heldBytes+len(s.payload))
	vm := v.vms[f.key.Src.Addr()]
	if vm.bytes-f.cost+cost > v.lim.BytesPerVM {
		fail(fmt.Errorf("%w: sandbox %s would hold %d bytes", ErrLimit, f.key.Src.Addr(), vm.bytes-f.cost+cost))
		return
	}
	vm.bytes += cost - f.cost
	vm.packets++
	v.heldBytes += cost - f.cost
	f.cost = cost
	if end > len(f.buf) {
		if end > cap(f.buf) {
			nb := make([]byte, end, min(max(end, 2*cap(f.buf), 2048), v.lim.HelloBytes))
			copy(nb, f.buf)
			f.buf = nb
		}
		f.buf = f.buf[:end]
	}
	copy(f.buf[off:], s.payload)
	f.known = addSpan(f.known, span{off, end})
	if len(f.held) == 0 {
		f.holdSince = now
	}
	f.held = append(f.held, heldPacket{id, off, end})
	f.heldBytes += len(s.payload)
	f.sawData = true

	var prefix []byte
	if f.known[0].lo == 0 {
		prefix = f.buf[:f.known[0].hi]
	}
	helloEnd, err := sni.HelloEnd(prefix, v.lim.HelloBytes)
	switch {
	case err != nil:
		fail(err)
		return
	case helloEnd == 0:
		return
	case len(f.buf) > helloEnd:
		fail(fmt.Errorf("%w: bytes held up to offset %d, past the ClientHello's end at %d", ErrBeyondHello, len(f.buf), helloEnd))
		return
	}
	hello := f.buf[:helloEnd:helloEnd]
	name, _, err := sni.ServerName(bytes.NewReader(hello))
	if err != nil {
		fail(fmt.Errorf("reading the ClientHello: %w", err))
		return
	}
	if !v.judge.Judge(f.key, Hello{Name: name, Bytes: hello}) {
		v.refuse(f, f.key, id, false, fmt.Errorf("%w: %s", errDenied, name), now)
		return
	}
	v.stats.Verified++
	for _, h := range f.held {
		v.verdictOn(h.id, Pass, f.key)
	}
	v.release(f)
	f.state, f.held, f.known = released, nil, nil
	f.buf = hello
	// Not forwarded by the kernel until the server confirms (server.go); if it never
	// does, the entry expires and the flow's packets are then an unknown flow's.
	v.remember(&v.releasedQ, f, now.Add(v.lim.Hold))
}

// late handles a client packet of a released flow (every one comes to the queue until
// the server confirms) or of a verified one (the queue took it before the mark took
// effect): bytes at the ClientHello's offsets must be the judged ones; bytes past it go.
func (v *Verifier) late(f *flow, s *segment, id uint32, now time.Time) {
	off := int(int32(s.seq - (f.isn + 1)))
	end := off + len(s.payload)
	switch {
	case s.flags&flagRST != 0:
		v.verdict(id, Accept)
	case len(s.payload) > 0 && off < 0:
		v.refuse(f, s.flow, id, true, fmt.Errorf("%w: bytes before the first data byte (offset %d) on a verified flow", ErrOverlap, off), now)
	case off < len(f.buf) && len(s.payload) > 0:
		hi := min(end, len(f.buf))
		if i := mismatch(f.buf[off:hi], s.payload[:hi-off]); i >= 0 {
			v.refuse(f, s.flow, id, true, fmt.Errorf("%w: a retransmission differs from the verified ClientHello at byte %d", ErrOverlap, off+i), now)
			return
		}
		v.pastHello(f, s, id, off, end, now)
	default:
		v.pastHello(f, s, id, off, end, now)
	}
}

// pastHello lets go the bytes of a late packet past the verified ClientHello, except, while the
// server has not acknowledged the hello (released), a handshake record right after it: no
// client sends another handshake message before the server has answered its ClientHello,
// and a second ClientHello there would reach the server as if it were the first.
func (v *Verifier) pastHello(f *flow, s *segment, id uint32, off, end int, now time.Time) {
	if at := len(f.buf) - off; f.state == released && off <= len(f.buf) && len(f.buf) < end && s.payload[at] == 0x16 {
		v.refuse(f, s.flow, id, true, fmt.Errorf("%w: a TLS handshake record at byte %d, before the server answered the ClientHello (a second ClientHello)", ErrBeyondHello, len(f.buf)), now)
		return
	}
	v.verdict(id, Accept)
}

// mismatch is the index of the first byte where a and b (of one length) differ, or -1.
func mismatch(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// addSpan adds s to sorted, merged spans.
func addSpan(spans []span, s span) []span {
	out := spans[:0:0]
	placed := false
	for _, k := range spans {
		switch {
		case k.hi < s.lo:
			out = append(out, k)
		case s.hi < k.lo:
			if !placed {
				out, placed = append(out, s), true
			}
			out = append(out, k)
		default: // touching or overlapping: merge into s
			s = span{min(s.lo, k.lo), max(s.hi, k.hi)}
		}
	}
	if !placed {
		out = append(out, s)
	}
	return out
}

func flagString(f uint8) string {
	const names = "FSRPAU"
	var b []byte
	for i := range names {
		if f&(1<<i) != 0 {
			b = append(b, names[i])
		}
	}
	if len(b) == 0 {
		return "none"
	}
	return string(b)
}
