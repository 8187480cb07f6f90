package nfqueue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/testnet"
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
	if p.Hook != unix_NF_INET_LOCAL_OUT || p.InDev != 0 || p.OutDev == 0 || p.HasCt != l.glue {
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

const unix_NF_INET_LOCAL_OUT = 3

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

	// Another flow: Repeat with the reject mark.
	c2 := l.udpClient(t)
	sport2 := uint16(c2.LocalAddr().(*net.UDPAddr).Port)
	if _, err := c2.Write([]byte("reject me")); err != nil {
		t.Fatal(err)
	}
	if p, ok = recv(pkts, wait); !ok {
		t.Fatal("not queued")
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

// TCP through the queue: every queued segment is at most the MTU (GSO segmented before
// queueing) with a final checksum, and the data read from them is the data sent.
func TestTCPSegmentsAreFinal(t *testing.T) {
	t.Parallel()
	l := newLab(t, 14)
	ln, err := netns.ListenIn(l.path(), "tcp4", "127.0.0.1:9100")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	q := l.open(t)
	pkts := l.run(t, q)
	data := testnet.PiecesBody(200_000, 7)
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
	c, err := netns.DialIn(l.path())(t.Context(), "tcp4", "127.0.0.1:9100")
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
	// Reassemble the client's data from the queued segments by sequence number.
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
			at := int(seq - isn)
			covered += copy(out[at:], pl)
		}
	}
	if covered < len(data) || !bytes.Equal(out, data) {
		t.Errorf("queued segments carried %d bytes; equal to the data: %v", covered, bytes.Equal(out, data))
	}
}

// Packets per second through the queue with an Accept for each (UDP, 64 bytes of data).
func BenchmarkAccept(b *testing.B) {
	l := newLab(b, 15)
	got := l.udpServer(b)
	q := l.open(b)
	q2 := q
	ctx := b.Context()
	go func() { _ = q.Run(ctx, func(p Packet) { _ = q2.SetVerdict(p.ID, Accept, nil) }) }()
	c := l.udpClient(b)
	msg := make([]byte, 64)
	b.ResetTimer()
	start := time.Now()
	sent := 0
	go func() {
		for sent = 0; sent < b.N; {
			if _, err := c.Write(msg); err == nil {
				sent++
			} else {
				time.Sleep(50 * time.Microsecond) // the queue is full: the kernel dropped it
			}
		}
	}()
	for n := 0; n < b.N; n++ {
		if _, ok := recv(got, wait); !ok {
			b.Fatalf("%d of %d packets arrived; stats %+v", n, b.N, q.Stats())
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "packets/s")
}
