package nfqueue

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

const (
	quiet = 300 * time.Millisecond // how long "nothing comes" is watched
	wait  = 5 * time.Second        // how long something that must come is awaited
)

// With no reader bound, queued packets are dropped: the queue fails closed. Once a
// reader binds, the same flow's packets are queued to it.
func TestNoReaderDrops(t *testing.T) {
	t.Parallel()
	l := newLab(t, 11)
	got := l.udpServer(t)
	c := l.udpClient(t)
	_, _ = c.Write([]byte("nobody reads")) // the kernel may answer EPERM: dropped on output
	if s, ok := recv(got, quiet); ok {
		t.Fatalf("a packet passed an unbound queue: %q", s)
	}
	q := l.open(t)
	pkts := l.run(t, q)
	if _, err := c.Write([]byte("now one reads")); err != nil {
		t.Fatal(err)
	}
	p, ok := recv(pkts, wait)
	if !ok {
		t.Fatal("no packet queued")
	}
	if err := q.SetVerdict(p.ID, Accept, nil); err != nil {
		t.Fatal(err)
	}
	if s, ok := recv(got, wait); !ok || s != "now one reads" {
		t.Fatalf("after accept: %q, %v", s, ok)
	}
}

// Close ends a Run that waits for packets, and the queue can then be bound again; Run
// after a cancel reads again.
func TestCloseEndsRun(t *testing.T) {
	t.Parallel()
	l := newLab(t, 20)
	q, err := Open(l.num, Config{NetNSFd: int(l.h), WithoutConntrack: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := q.Run(ctx, func(Packet) {}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run with a cancelled context: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- q.Run(t.Context(), func(Packet) {}) }()
	time.Sleep(50 * time.Millisecond) // let Run wait (if it has not yet, it fails at once)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err, ok := recv(done, wait); !ok || err == nil {
		t.Fatalf("Run after Close: %v, %v", err, ok)
	}
	if err := q.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	q = l.open(t) // bound again
	got := l.udpServer(t)
	pkts := l.run(t, q)
	if _, err := l.udpClient(t).Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	p, ok := recv(pkts, wait)
	if !ok {
		t.Fatal("not queued after a rebind")
	}
	_ = q.SetVerdict(p.ID, Accept, nil)
	if s, ok := recv(got, wait); !ok || s != "after" {
		t.Fatalf("accepted: %q, %v", s, ok)
	}
}

// A full queue drops what comes next (never fails open), and the kernel's count of those
// shows in Stats; the packets it holds still get their verdicts. A second socket cannot
// bind a bound queue.
func TestFullQueueDrops(t *testing.T) {
	t.Parallel()
	l := newLab(t, 18)
	got := l.udpServer(t)
	q := l.openLen(t, 2)
	if _, err := Open(l.num, Config{NetNSFd: int(l.h), WithoutConntrack: true}); err == nil {
		t.Error("a second socket bound the queue")
	}
	c := l.udpClient(t)
	for i := range 5 {
		_, _ = c.Write([]byte{'0' + byte(i)}) // the last three: EPERM, dropped on output
	}
	pkts := l.run(t, q)
	for i := range 2 {
		p, ok := recv(pkts, wait)
		if !ok || string(p.Payload[28:]) != string(rune('0'+i)) {
			t.Fatalf("queued packet %d: %+v, %v", i, p, ok)
		}
		if err := q.SetVerdict(p.ID, Accept, nil); err != nil {
			t.Fatal(err)
		}
		if s, ok := recv(got, wait); !ok || s != string(rune('0'+i)) {
			t.Fatalf("accepted %d: %q, %v", i, s, ok)
		}
	}
	if p, ok := recv(pkts, quiet); ok {
		t.Errorf("a packet beyond the queue's length: %+v", p)
	}
	if s := q.Stats(); s.QueueDropped != 3 || s.UserDropped != 0 || s.Received != 2 {
		t.Errorf("stats: %+v", s)
	}
}

// A queued packet is whole and as sent, with its hook and interface; Accept lets it go on,
// Drop drops it, Repeat queues it again (the same chain runs again from its first rule).
func TestVerdicts(t *testing.T) {
	t.Parallel()
	l := newLab(t, 12)
	got := l.udpServer(t)
	q := l.open(t)
	pkts := l.run(t, q)
	c := l.udpClient(t)
	sport := uint16(c.LocalAddr().(*net.UDPAddr).Port)

	send := func(msg string) Packet {
		t.Helper()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		p, ok := recv(pkts, wait)
		if !ok {
			t.Fatalf("%q was not queued", msg)
		}
		checkUDP(t, p, sport, msg)
		return p
	}
	p := send("accept me")
	if p.Hook != hookLocalOut || p.InDev != 0 || p.OutDev == 0 || p.HasCt != l.glue {
		t.Errorf("hook %d, in %d, out %d, has ct %v", p.Hook, p.InDev, p.OutDev, p.HasCt)
	}
	if !l.glue { // a Mark is refused, and nothing is sent
		if err := q.SetVerdict(p.ID, Accept, &Mark{Value: 1, Mask: 1}); !errors.Is(err, ErrNoConntrack) {
			t.Errorf("a mark on a queue without conntrack: %v", err)
		}
	}
	if err := q.SetVerdict(p.ID, Accept, nil); err != nil {
		t.Fatal(err)
	}
	if s, ok := recv(got, wait); !ok || s != "accept me" {
		t.Fatalf("accepted: %q, %v", s, ok)
	}

	p = send("drop me")
	if err := q.SetVerdict(p.ID, Drop, nil); err != nil {
		t.Fatal(err)
	}
	if s, ok := recv(got, quiet); ok {
		t.Fatalf("dropped packet arrived: %q", s)
	}

	p = send("repeat me")
	if err := q.SetVerdict(p.ID, Repeat, nil); err != nil {
		t.Fatal(err)
	}
	again, ok := recv(pkts, wait)
	if !ok || !bytes.Equal(again.Payload, p.Payload) || again.ID == p.ID {
		t.Fatalf("repeated packet: %+v (first id %d), %v", again, p.ID, ok)
	}
	if err := q.SetVerdict(again.ID, Accept, nil); err != nil {
		t.Fatal(err)
	}
	if s, ok := recv(got, wait); !ok || s != "repeat me" {
		t.Fatalf("repeated then accepted: %q, %v", s, ok)
	}

	// A second verdict for an id is refused by the kernel, and counted.
	if err := q.SetVerdict(again.ID, Accept, nil); err != nil {
		t.Fatal(err)
	}
	wantErrs := uint64(1)
	if !l.glue {
		wantErrs++ // the refused Mark
	}
	deadline := time.Now().Add(wait)
	for q.Stats().Errors < wantErrs && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s := q.Stats()
	if s.Received != 4 || s.Verdicts != 5 || s.Errors != wantErrs || s.QueueDropped != 0 || s.UserDropped != 0 {
		t.Errorf("stats: %+v", s)
	}
}

// Netfilter hooks (enum nf_inet_hooks).
const (
	hookForward  = 2
	hookLocalOut = 3
)

// checkUDP asserts that p is the whole IPv4/UDP packet carrying msg from sport.
func checkUDP(t *testing.T, p Packet, sport uint16, msg string) {
	t.Helper()
	b := p.Payload
	if len(b) != 28+len(msg) || b[0] != 0x45 || b[9] != 17 || int(binary.BigEndian.Uint16(b[2:])) != len(b) {
		t.Fatalf("payload % x", b)
	}
	if binary.BigEndian.Uint16(b[20:]) != sport || binary.BigEndian.Uint16(b[22:]) != udpPort || string(b[28:]) != msg {
		t.Fatalf("payload % x, want %q from port %d", b, msg, sport)
	}
	if !checksumOK(b) {
		t.Errorf("bad UDP checksum: % x", b)
	}
}

// checksumOK verifies the TCP or UDP checksum of an IPv4 packet without options.
func checksumOK(b []byte) bool {
	l4 := b[20:]
	var sum uint32
	add := func(p []byte) {
		for i := 0; i+1 < len(p); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(p[i:]))
		}
		if len(p)%2 == 1 {
			sum += uint32(p[len(p)-1]) << 8
		}
	}
	add(b[12:20])
	sum += uint32(b[9]) + uint32(len(l4))
	add(l4)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

// requireGlue fails (CI) or skips unless the kernel puts conntrack into queue messages
// (CONFIG_NETFILTER_NETLINK_GLUE_CT).
func requireGlue(t *testing.T, l *lab) {
	t.Helper()
	testnet.Require(t, l.glue, "kernel CONFIG_NETFILTER_NETLINK_GLUE_CT (conntrack in NFQUEUE messages and verdicts)")
}

// A verdict with a Mark sets the flow's ct mark: conntrack shows it, and the flow's next
// packet skips the queue by the `ct mark` rule. A Repeat verdict with the reject mark
// meets the reject rule before the queue.
func TestMark(t *testing.T) {
	t.Parallel()
	l := newLab(t, 13)
	got := l.udpServer(t)
	q := l.open(t)
	requireGlue(t, l)
	pkts := l.run(t, q)
	c := l.udpClient(t)
	sport := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	if _, err := c.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	p, ok := recv(pkts, wait)
	if !ok {
		t.Fatal("not queued")
	}
	if !p.HasCt || p.CtMark != 0 || p.CtInfo != 2 /* IP_CT_NEW */ {
		t.Errorf("conntrack of a new flow: mark %#x, info %d", p.CtMark, p.CtInfo)
	}
	if err := q.SetVerdict(p.ID, Accept, &Mark{Value: markPass, Mask: markPass | 0xff}); err != nil {
		t.Fatal(err)
	}
	if s, ok := recv(got, wait); !ok || s != "first" {
		t.Fatalf("accepted: %q, %v", s, ok)
	}
	if m, ok := l.ctMark(t, sport, udpPort); !ok || m != markPass {
		t.Errorf("ct mark after the verdict: %#x, %v", m, ok)
	}
	if _, err := c.Write([]byte("second")); err != nil {
		t.Fatal(err)
	}
	if s, ok := recv(got, wait); !ok || s != "second" {
		t.Fatalf("a marked flow's packet: %q, %v", s, ok)
	}
	if p, ok := recv(pkts, quiet); ok {
		t.Errorf("a marked flow's packet was queued: %+v", p)
	}

	// Another flow: its first packet accepted (so that its entry is confirmed: a dropped
	// first packet leaves none), its second repeated with the reject mark.
	c2 := l.udpClient(t)
	sport2 := uint16(c2.LocalAddr().(*net.UDPAddr).Port)
	for _, msg := range []string{"let me in", "reject me"} {
		if _, err := c2.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if p, ok = recv(pkts, wait); !ok {
			t.Fatalf("%q not queued", msg)
		}
		if msg == "let me in" {
			_ = q.SetVerdict(p.ID, Accept, nil)
			if s, ok := recv(got, wait); !ok || s != msg {
				t.Fatalf("accepted: %q, %v", s, ok)
			}
		}
	}
	if !p.HasCt || p.CtMark != 0 {
		t.Errorf("a second packet: has ct %v, mark %#x", p.HasCt, p.CtMark)
	}
	if err := q.SetVerdict(p.ID, Repeat, &Mark{Value: markReject, Mask: markReject}); err != nil {
		t.Fatal(err)
	}
	if s, ok := recv(got, quiet); ok {
		t.Fatalf("rejected packet arrived: %q", s)
	}
	if p, ok := recv(pkts, quiet); ok {
		t.Errorf("the repeated packet was queued again: %+v", p)
	}
	if m, ok := l.ctMark(t, sport2, udpPort); !ok || m != markReject {
		t.Errorf("ct mark after the repeat: %#x, %v", m, ok)
	}
}

// TCP through the queue (output hook, loopback): every queued segment is at most the MTU
// (GSO segmented before queueing) with a final checksum, and the data read from them is
// the data sent.
func TestTCPSegmentsAreFinal(t *testing.T) {
	t.Parallel()
	l := newLab(t, 14)
	q := l.open(t)
	data := testnet.PiecesBody(200_000, 7)
	seen := sendTCP(t, q, l.run(t, q), l.path(), l.path(), "127.0.0.1:9100", data)
	checkSegments(t, seen, data)
}

// The same through the forward hook, as on the gateway: a sandbox's connection to a fake
// internet server across two veth pairs, queued between them.
func TestForwardedTCP(t *testing.T) {
	t.Parallel()
	l := newLab(t, 19)
	sbx, inet := l.forward(t)
	q := l.open(t)
	data := testnet.PiecesBody(300_000, 8)
	seen := sendTCP(t, q, l.run(t, q), inet, sbx, "203.0.113.10:443", data)
	checkSegments(t, seen, data)
	var in, out *net.Interface
	err := netns.Do(l.path(), func() (err error) {
		if in, err = net.InterfaceByName("egsbx0"); err == nil {
			out, err = net.InterfaceByName("up0")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range seen {
		if p.Hook != hookForward || p.InDev != uint32(in.Index) || p.OutDev != uint32(out.Index) {
			t.Fatalf("hook %d, in %d, out %d; want 2, %d, %d", p.Hook, p.InDev, p.OutDev, in.Index, out.Index)
		}
	}
}

// sendTCP connects from the namespace at cli to a server at addr in the namespace at srv,
// writes data and closes, while every queued packet is accepted; it checks that the
// server read data and returns the packets queued.
func sendTCP(t *testing.T, q *Queue, pkts <-chan Packet, srv, cli, addr string, data []byte) []Packet {
	t.Helper()
	ln, err := netns.ListenIn(srv, "tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	received := make(chan []byte, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			received <- nil
			return
		}
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(20 * time.Second))
		b, _ := io.ReadAll(s)
		received <- b
	}()
	var seen []Packet
	stop := make(chan struct{})
	accepted := make(chan struct{})
	go func() { // accept everything, keeping what was queued
		defer close(accepted)
		for {
			select {
			case p := <-pkts:
				seen = append(seen, p)
				_ = q.SetVerdict(p.ID, Accept, nil)
			case <-stop:
				return
			}
		}
	}()
	c, err := netns.DialIn(cli)(t.Context(), "tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.Close()
	b, ok := recv(received, 30*time.Second)
	close(stop)
	<-accepted
	if !ok || !bytes.Equal(b, data) {
		t.Fatalf("server read %d bytes of %d", len(b), len(data))
	}
	return seen
}

// checkSegments asserts that the queued packets of a TCP connection are segments of at
// most labMTU bytes with final checksums, and that their data is data.
func checkSegments(t *testing.T, seen []Packet, data []byte) {
	t.Helper()
	var isn uint32
	out := make([]byte, len(data))
	covered := 0
	for _, p := range seen {
		b := p.Payload
		if len(b) > labMTU || len(b) < 40 || int(binary.BigEndian.Uint16(b[2:])) != len(b) {
			t.Fatalf("segment of %d bytes", len(b))
		}
		if !checksumOK(b) {
			t.Fatalf("segment with a bad checksum: % x", b[:40])
		}
		tcp := b[20:]
		seq, flags, off := binary.BigEndian.Uint32(tcp[4:]), tcp[13], int(tcp[12]>>4)*4
		if flags&0x02 != 0 { // SYN
			isn = seq + 1
			continue
		}
		if pl := tcp[off:]; len(pl) > 0 {
			covered += copy(out[int(seq-isn):], pl)
		}
	}
	if covered < len(data) || !bytes.Equal(out, data) {
		t.Errorf("queued segments carried %d bytes; equal to the data: %v", covered, bytes.Equal(out, data))
	}
}

// Packets per second through the queue with an Accept for each (UDP, 64 bytes of data),
// counted at the verdicts: the receiving socket may drop some when it overflows.
func BenchmarkAccept(b *testing.B) {
	l := newLab(b, 15)
	l.udpServer(b)
	q := l.open(b)
	go func() { _ = q.Run(b.Context(), func(p Packet) { _ = q.SetVerdict(p.ID, Accept, nil) }) }()
	c := l.udpClient(b)
	msg := make([]byte, 64)
	b.ResetTimer()
	start := time.Now()
	full := 0
	for sent := 0; sent < b.N; {
		if _, err := c.Write(msg); err == nil {
			sent++
		} else {
			full++
			time.Sleep(50 * time.Microsecond) // the queue was full: the kernel dropped it
		}
	}
	deadline := time.Now().Add(wait)
	for q.Stats().Verdicts < uint64(b.N) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	s := q.Stats()
	if s.Verdicts < uint64(b.N) || s.Errors != 0 {
		b.Fatalf("stats after %d packets: %+v", b.N, s)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "packets/s")
	b.ReportMetric(float64(full)/float64(b.N), "full/op")
}

// One packet at a time: the latency a connection's packet pays through the queue (send,
// queue, Accept, delivery to the server), and without it (a port the lab does not queue).
func BenchmarkRoundTrip(b *testing.B) {
	l := newLab(b, 16)
	q := l.open(b)
	go func() { _ = q.Run(b.Context(), func(p Packet) { _ = q.SetVerdict(p.ID, Accept, nil) }) }()
	for _, bb := range []struct {
		name string
		port int
	}{{"queued", udpPort}, {"direct", udpPort + 1}} {
		b.Run(bb.name, func(b *testing.B) {
			got := l.udpServerOn(b, bb.port)
			c := l.udpClientTo(b, bb.port)
			msg := []byte("ping")
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, ok := recv(got, wait); !ok {
					b.Fatalf("lost; stats %+v", q.Stats())
				}
			}
		})
	}
}

// Receiving and answering a packet allocates only the copy of its payload. (Drop: no
// server, whose reads would allocate too.)
func TestAllocsPerPacket(t *testing.T) {
	l := newLab(t, 17)
	q := l.open(t)
	pkts := l.run(t, q)
	c := l.udpClient(t)
	msg := []byte("x")
	timeout := time.NewTimer(30 * time.Second) // one for the whole run: a timer per packet would allocate
	defer timeout.Stop()
	n := testing.AllocsPerRun(200, func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		var p Packet
		select {
		case p = <-pkts:
		case <-timeout.C:
			t.Fatal("not queued")
		}
		if err := q.SetVerdict(p.ID, Drop, nil); err != nil {
			t.Fatal(err)
		}
	})
	if n > 1 {
		t.Errorf("%v allocations per packet", n)
	}
}

// Without the conntrack glue (or with it), a caller can set the mark of a confirmed flow
// with ctnetlink before the verdict: here the first data packet of a TCP connection
// (queued after its handshake), marked by a conntrack update, then Repeat: the reject
// rule before the queue meets it, and the server never gets the data.
func TestMarkByConntrackThenRepeat(t *testing.T) {
	t.Parallel()
	l := newLab(t, 21)
	ln, err := netns.ListenIn(l.path(), "tcp4", "127.0.0.1:9100")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	read := make(chan int, 10)
	go func() { // reports each read's size, until the test closes the listener
		s, err := ln.Accept()
		if err != nil {
			return
		}
		t.Cleanup(func() { s.Close() })
		b := make([]byte, 100)
		for {
			n, err := s.Read(b)
			if err != nil {
				return
			}
			read <- n
		}
	}()
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
	var sport uint16
	for range 10 { // the handshake's packets, then the data
		p, ok := recv(pkts, wait)
		if !ok {
			t.Fatal("no data packet queued")
		}
		ip := p.Payload
		tcp := ip[int(ip[0]&0xf)*4:]
		if len(tcp[int(tcp[12]>>4)*4:]) == 0 {
			_ = q.SetVerdict(p.ID, Accept, nil)
			continue
		}
		sport = binary.BigEndian.Uint16(tcp)
		cc, err := conntrack.Dial(&netlink.Config{NetNS: int(l.h)})
		if err != nil {
			t.Fatal(err)
		}
		lo := netip.MustParseAddr("127.0.0.1")
		err = cc.Update(conntrack.NewFlow(unix.IPPROTO_TCP, 0, lo, lo, sport, tcpPort, 0, markReject))
		cc.Close()
		if err != nil {
			t.Fatalf("conntrack update: %v", err)
		}
		if err := q.SetVerdict(p.ID, Repeat, nil); err != nil {
			t.Fatal(err)
		}
		break
	}
	if sport == 0 {
		t.Fatal("no data packet among the first ten")
	}
	if c, ok := recv(dialed, wait); ok && c != nil {
		c.Close()
	}
	if n, ok := recv(read, quiet); ok {
		t.Errorf("the server read %d bytes", n)
	}
	for {
		p, ok := recv(pkts, quiet)
		if !ok {
			break
		}
		ip := p.Payload
		tcp := ip[int(ip[0]&0xf)*4:]
		if binary.BigEndian.Uint16(tcp) == sport && len(tcp[int(tcp[12]>>4)*4:]) > 0 {
			t.Fatalf("the marked flow's data was queued again")
		}
		_ = q.SetVerdict(p.ID, Drop, nil)
	}
	if m, ok := l.ctMark(t, sport, tcpPort); !ok || m != markReject {
		t.Errorf("ct mark %#x, %v", m, ok)
	}
}
