package nfqueue

import (
	"bytes"
	"context"
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
	if err := q.SetVerdict(p.ID, Accept); err != nil {
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
	q, err := Open(l.num, Config{NetNSFd: int(l.h)})
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
	_ = q.SetVerdict(p.ID, Accept)
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
	if _, err := Open(l.num, Config{NetNSFd: int(l.h)}); err == nil {
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
		if err := q.SetVerdict(p.ID, Accept); err != nil {
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
	if p.Hook != hookLocalOut || p.InDev != 0 || p.OutDev == 0 {
		t.Errorf("hook %d, in %d, out %d", p.Hook, p.InDev, p.OutDev)
	}
	if err := q.SetVerdict(p.ID, Accept); err != nil {
		t.Fatal(err)
	}
	if s, ok := recv(got, wait); !ok || s != "accept me" {
		t.Fatalf("accepted: %q, %v", s, ok)
	}

	p = send("drop me")
	if err := q.SetVerdict(p.ID, Drop); err != nil {
		t.Fatal(err)
	}
	if s, ok := recv(got, quiet); ok {
		t.Fatalf("dropped packet arrived: %q", s)
	}

	p = send("repeat me")
	if err := q.SetVerdict(p.ID, Repeat); err != nil {
		t.Fatal(err)
	}
	again, ok := recv(pkts, wait)
	if !ok || !bytes.Equal(again.Payload, p.Payload) || again.ID == p.ID {
		t.Fatalf("repeated packet: %+v (first id %d), %v", again, p.ID, ok)
	}
	if err := q.SetVerdict(again.ID, Accept); err != nil {
		t.Fatal(err)
	}
	if s, ok := recv(got, wait); !ok || s != "repeat me" {
		t.Fatalf("repeated then accepted: %q, %v", s, ok)
	}

	// A second verdict for an id is refused by the kernel, and counted.
	if err := q.SetVerdict(again.ID, Accept); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for q.Stats().Errors < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s := q.Stats()
	if s.Received != 4 || s.Verdicts != 5 || s.Errors != 1 || s.QueueDropped != 0 || s.UserDropped != 0 {
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
				_ = q.SetVerdict(p.ID, Accept)
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
	go func() { _ = q.Run(b.Context(), func(p Packet) { _ = q.SetVerdict(p.ID, Accept) }) }()
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
	go func() { _ = q.Run(b.Context(), func(p Packet) { _ = q.SetVerdict(p.ID, Accept) }) }()
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
		if err := q.SetVerdict(p.ID, Drop); err != nil {
			t.Fatal(err)
		}
	})
	if n > 1 {
		t.Errorf("%v allocations per packet", n)
	}
}
