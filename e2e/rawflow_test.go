package e2e

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/host/netns"
)

// A raw TCP client for the evasion suite: what a malicious sandbox, root in its own network
// namespace, can send. It writes whole IPv4 packets (IP_HDRINCL) from inside the VM's
// namespace, so every field is its own: the ISN, each segment's sequence number and bytes,
// flags, urgent pointer, checksum, IP fragmentation. It reads the answers with a raw TCP
// socket in the same namespace. The sandbox's kernel knows nothing of these flows and would
// answer the server's SYN-ACK with a reset; guardRawPorts adds, inside the VM's namespace
// only, the rule a malicious root sandbox would add: drop the kernel's resets from the raw
// client's ports.

// The raw client's source ports, and the mark of its own packets (which the guard lets
// through, so that Close can still reset a flow).
const (
	rawPortLo = 47000
	rawPortHi = 47999
	rawMark   = 0xe5
)

// guardRawPorts drops, in the namespace ns (a VM's, by name), the resets its kernel sends
// from the raw client's ports. The table goes when the test ends (and with the namespace).
func guardRawPorts(t testing.TB, ns string) {
	t.Helper()
	table := "egressd_evade"
	script := fmt.Sprintf(`table ip %s {
	chain out {
		type filter hook output priority 0; policy accept;
		tcp sport %d-%d tcp flags & rst == rst meta mark != %#x drop
	}
}
`, table, rawPortLo, rawPortHi, rawMark)
	nft := func(stdin string, args ...string) error {
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nft %s in %s: %v: %s", strings.Join(args, " "), ns, err, out)
		}
		return nil
	}
	if err := nft(script, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nft("", "delete", "table", "ip", table) })
}

// rawPort is the last source port given out. Ports go in turn, never at random: a gateway
// remembers a flow's tuple for a while (conntrack, the fast path's refused flows), and a new
// flow on a recent tuple would be judged as that one's second SYN.
var rawPort atomic.Int32

func nextRawPort() uint16 {
	rawPort.CompareAndSwap(0, int32(rawPortLo+rand.IntN(rawPortHi-rawPortLo+1)))
	return uint16(rawPortLo + (rawPort.Add(1)-rawPortLo)%(rawPortHi-rawPortLo+1))
}

// seg is one segment the raw client sends: its bytes at off (from the first byte after the
// SYN), and how it lies.
type seg struct {
	off         int
	data        []byte
	flags       uint8 // besides ACK (always set but on a SYN); e.g. tcpPSH, tcpURG
	urg         uint16
	badChecksum bool
	isn         uint32 // when set, the ISN off counts from instead of the flow's (a second SYN's)
}

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpURG = 0x20
)

// rawFlow is one flow of the raw client.
type rawFlow struct {
	t        *testing.T
	vmID     string    // of the VM it is sent from (none: another namespace)
	started  time.Time // when it was opened: its records are not older
	src, dst netip.AddrPort
	iss, irs uint32
	sendFD   int
	recvFD   int
	stop     chan struct{}
	stopped  chan struct{}

	mu     sync.Mutex
	synAck bool
	reset  bool
	fin    bool
	data   int // payload bytes the peer sent
	closed bool
	end    int // the end of the bytes sent, from the first after the SYN
}

// newRawFlow opens the raw client's sockets inside the VM's namespace, for a flow to dst
// ("ip:port") from a port of its own and a random ISN. Close ends it.
func newRawFlow(t *testing.T, vm *client.VM, dst string) *rawFlow {
	t.Helper()
	src, err := netip.ParseAddr(strings.Split(vm.Network.Address, "/")[0])
	if err != nil {
		t.Fatalf("the VM's address %q: %v", vm.Network.Address, err)
	}
	c := newRawFlowIn(t, vm.Network.Path, src, dst)
	c.vmID = vm.VMID
	return c
}

// newRawFlowIn is newRawFlow from the namespace at nsPath, whose address is src.
func newRawFlowIn(t *testing.T, nsPath string, src netip.Addr, dst string) *rawFlow {
	t.Helper()
	c := &rawFlow{t: t, src: netip.AddrPortFrom(src, nextRawPort()),
		dst: netip.MustParseAddrPort(dst), iss: rand.Uint32(), sendFD: -1, recvFD: -1,
		stop: make(chan struct{}), stopped: make(chan struct{}), started: time.Now()}
	err := netns.Do(nsPath, func() error {
		var err error
		if c.sendFD, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			return fmt.Errorf("raw sending socket: %w", err)
		}
		if err := unix.SetsockoptInt(c.sendFD, unix.SOL_SOCKET, unix.SO_MARK, rawMark); err != nil {
			return fmt.Errorf("SO_MARK: %w", err)
		}
		if c.recvFD, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP); err != nil {
			return fmt.Errorf("raw receiving socket: %w", err)
		}
		// A bounded wait per read, so that the reader notices Close.
		return unix.SetsockoptTimeval(c.recvFD, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000})
	})
	if err != nil {
		c.closeFDs()
		t.Fatalf("raw client in %s: %v", nsPath, err)
	}
	go c.read()
	t.Cleanup(c.Close)
	return c
}

func (c *rawFlow) closeFDs() {
	for _, fd := range []int{c.sendFD, c.recvFD} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// read keeps what the peer sends to the flow's port until Close.
func (c *rawFlow) read() {
	defer close(c.stopped)
	buf := make([]byte, 65536)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(c.recvFD, buf, 0)
		if err != nil {
			continue // the read timeout (or EINTR): look at stop again
		}
		h, ok := parseSegment(buf[:n])
		if !ok || h.src != c.dst || h.dst != c.src {
			continue
		}
		flags := h.flags
		c.mu.Lock()
		switch {
		case flags&tcpRST != 0:
			c.reset = true
		case flags&(tcpSYN|tcpACK) == tcpSYN|tcpACK && !c.synAck:
			c.synAck, c.irs = true, h.seq
		}
		if flags&tcpFIN != 0 {
			c.fin = true
		}
		c.data += h.payload
		c.mu.Unlock()
	}
}

// segmentHead is what the raw client reads of a packet it receives.
type segmentHead struct {
	src, dst netip.AddrPort
	seq      uint32
	flags    uint8
	payload  int // bytes of data
}

// parseSegment reads an IPv4 packet carrying TCP, as a raw socket hands it over; ok is false
// for anything else or anything cut short.
func parseSegment(p []byte) (h segmentHead, ok bool) {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP {
		return h, false
	}
	ihl := int(p[0]&0x0f) * 4
	if ihl < 20 || len(p) < ihl+20 {
		return h, false
	}
	tcp := p[ihl:]
	off := int(tcp[12]>>4) * 4
	if off < 20 || off > len(tcp) {
		return h, false
	}
	h.src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(p[12:16])), binary.BigEndian.Uint16(tcp[0:2]))
	h.dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(p[16:20])), binary.BigEndian.Uint16(tcp[2:4]))
	h.seq = binary.BigEndian.Uint32(tcp[4:8])
	h.flags = tcp[13]
	h.payload = len(tcp) - off
	return h, true
}

// Handshake sends the SYN (again each second, 5 times at most) and, once the SYN-ACK is
// there, the ACK. It fails the test without a SYN-ACK.
func (c *rawFlow) Handshake() {
	c.t.Helper()
	if !c.SYN(nil) {
		c.t.Fatalf("%v → %v: no SYN-ACK", c.src, c.dst)
	}
	c.Send(seg{})
}

// SYN sends a SYN carrying data (none: a plain one) and reports whether a SYN-ACK came.
// Data on the SYN is TCP Fast Open's way, which a server configured so accepts at once.
func (c *rawFlow) SYN(data []byte) bool {
	c.t.Helper()
	mss := []byte{2, 4, 0x05, 0xb4} // MSS 1460
	for i := 0; i < 5; i++ {
		c.write(c.segment(c.dst.Addr(), tcpSYN, c.iss, 0, mss, data, 0, false))
		if c.wait(time.Second, func() bool { return c.synAck || c.reset }) {
			break
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synAck
}

// Send sends one segment of the flow.
func (c *rawFlow) Send(s seg) { c.SendTo(c.dst.Addr(), s) }

// SendTo sends a segment with the flow's ports and sequence numbers to another address:
// "the same flow" as the sandbox would like a gateway to see it.
func (c *rawFlow) SendTo(dst netip.Addr, s seg) {
	c.t.Helper()
	c.write(c.packet(dst, s))
	c.end = max(c.end, s.off+len(s.data))
}

// packet builds segment s of the flow, to dst.
func (c *rawFlow) packet(dst netip.Addr, s seg) []byte {
	isn := c.iss
	if s.isn != 0 {
		isn = s.isn
	}
	return c.segment(dst, tcpACK|s.flags, isn+1+uint32(s.off), c.ack(), nil, s.data, s.urg, s.badChecksum)
}

// SecondSYN sends another SYN on the flow's ports, with isn, without waiting for an answer.
func (c *rawFlow) SecondSYN(isn uint32) {
	c.t.Helper()
	c.write(c.segment(c.dst.Addr(), tcpSYN, isn, 0, []byte{2, 4, 0x05, 0xb4}, nil, 0, false))
}

// SendStream sends b from offset 0 in segments of size bytes, in order.
func (c *rawFlow) SendStream(b []byte, size int) {
	c.t.Helper()
	for off := 0; off < len(b); off += size {
		c.Send(seg{off: off, data: b[off:min(off+size, len(b))], flags: tcpPSH})
	}
}

// SendFragments sends one segment as IP fragments: the IP payload (TCP header and data) cut
// at each of cuts (multiples of 8, as IP wants).
func (c *rawFlow) SendFragments(s seg, cuts ...int) {
	c.t.Helper()
	pkt := c.packet(c.dst.Addr(), s)
	payload := pkt[20:]
	id := uint16(rand.IntN(0xffff) + 1)
	from := 0
	for _, to := range append(cuts, len(payload)) {
		if from%8 != 0 {
			c.t.Fatalf("an IP fragment must start at a multiple of 8, not %d", from)
		}
		c.write(c.fragment(id, from, payload[from:to], to < len(payload)))
		from = to
	}
}

// SendRawFragment sends one IP fragment of a segment built as Send would: the bytes from..to
// of its IP payload, with "more fragments" set as more says. For overlapping fragments.
func (c *rawFlow) SendRawFragment(id uint16, s seg, from, to int, more bool) {
	c.t.Helper()
	pkt := c.packet(c.dst.Addr(), s)
	c.write(c.fragment(id, from, pkt[20+from:20+to], more))
}

func (c *rawFlow) fragment(id uint16, off int, payload []byte, more bool) []byte {
	h := c.ipHeader(c.dst.Addr(), len(payload))
	binary.BigEndian.PutUint16(h[4:6], id)
	fo := uint16(off / 8)
	if more {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(h[6:8], fo)
	return append(h, payload...)
}

func (c *rawFlow) ack() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.irs + 1
}

// WaitReset reports whether the peer reset the flow within d.
func (c *rawFlow) WaitReset(d time.Duration) bool {
	return c.wait(d, func() bool { return c.reset })
}

// WaitEnd reports whether the peer ended the flow (reset or FIN) within d.
func (c *rawFlow) WaitEnd(d time.Duration) bool {
	return c.wait(d, func() bool { return c.reset || c.fin })
}

// Seen describes what came back, for failure messages.
func (c *rawFlow) Seen() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("syn-ack %v, reset %v, fin %v, %d bytes of data", c.synAck, c.reset, c.fin, c.data)
}

// SawSYNAck reports whether the peer answered the SYN.
func (c *rawFlow) SawSYNAck() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synAck
}

func (c *rawFlow) wait(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return ok
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Close resets the flow (so that neither a proxy nor a server keeps it) and closes the
// sockets. It may be called more than once.
func (c *rawFlow) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	// A reset at the end of what was sent: what a server or proxy that took it all expects;
	// one that did not answers with an ACK, and forgets the flow in its own time.
	pkt := c.segment(c.dst.Addr(), tcpACK|tcpRST, c.iss+1+uint32(c.end), c.ack(), nil, nil, 0, false)
	unix.Sendto(c.sendFD, pkt, 0, &unix.SockaddrInet4{Addr: c.dst.Addr().As4()})
	close(c.stop)
	<-c.stopped
	c.closeFDs()
}

func (c *rawFlow) write(pkt []byte) {
	c.t.Helper()
	to := &unix.SockaddrInet4{Addr: netip.AddrFrom4([4]byte(pkt[16:20])).As4()}
	if err := unix.Sendto(c.sendFD, pkt, 0, to); err != nil {
		c.t.Fatalf("sending %d bytes from the sandbox: %v", len(pkt), err)
	}
}

// segment builds an IPv4 packet holding one TCP segment.
func (c *rawFlow) segment(dst netip.Addr, flags uint8, seq, ack uint32, opts, data []byte, urg uint16, badSum bool) []byte {
	if flags&tcpACK == 0 {
		ack = 0
	}
	tcp := make([]byte, 20+len(opts), 20+len(opts)+len(data))
	binary.BigEndian.PutUint16(tcp[0:2], c.src.Port())
	binary.BigEndian.PutUint16(tcp[2:4], c.dst.Port())
	binary.BigEndian.PutUint32(tcp[4:8], seq)
	binary.BigEndian.PutUint32(tcp[8:12], ack)
	tcp[12] = byte((20+len(opts))/4) << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:16], 64240)
	binary.BigEndian.PutUint16(tcp[18:20], urg)
	copy(tcp[20:], opts)
	tcp = append(tcp, data...)
	sum := tcpChecksum(c.src.Addr(), dst, tcp)
	if badSum {
		sum ^= 0x5a5a
	}
	binary.BigEndian.PutUint16(tcp[16:18], sum)
	return append(c.ipHeader(dst, len(tcp)), tcp...)
}

// ipHeader is an IPv4 header without options; the kernel fills in the total length, the
// header checksum and (when zero) the ID of what a raw socket sends.
func (c *rawFlow) ipHeader(dst netip.Addr, payload int) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:4], uint16(20+payload))
	h[8] = 64
	h[9] = unix.IPPROTO_TCP
	s, d := c.src.Addr().As4(), dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	return h
}

// tcpChecksum is the TCP checksum of segment (its checksum field zero) over the IPv4
// pseudo-header.
func tcpChecksum(src, dst netip.Addr, segment []byte) uint16 {
	s, d := src.As4(), dst.As4()
	pseudo := append(append(s[:], d[:]...), 0, unix.IPPROTO_TCP, byte(len(segment)>>8), byte(len(segment)))
	var sum uint32
	for _, b := range [][]byte{pseudo, segment} {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
