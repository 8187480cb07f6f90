package firewall

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// soon is the generous bound for "at once": the probe and the reset take a few
// milliseconds in the lab.
const soon = 5 * time.Second

// An idle verified fast flow that CutFast cuts is reset at once, without the sandbox
// sending anything: its blocked read fails with ECONNRESET. A flow that keep keeps gets no
// probe: its read stays blocked, and it still carries data afterwards.
func TestCutFastProbe(t *testing.T) {
	t.Parallel()
	l, fw, _ := fastLab(t)
	readQueue(t, l.gw, DefaultFastQueue, handshakeThen(MarkFast))
	open := func() *conn {
		c, greet, err := dial(l.sbx, "", "203.0.113.10:443", ok)
		if err != nil || greet != "srv" {
			t.Fatalf("fast flow: %q, %v", greet, err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.echo("client hello", ok); err != nil { // verified from here on
			t.Fatalf("fast flow: %v", err)
		}
		return c
	}
	cut, kept := open(), open()
	// Idle: the sandbox's delayed ACK of the last echo (at most 200 ms, TCP_DELACK_MAX)
	// is gone before the cut, or it, not the probe, would meet the reset.
	time.Sleep(time.Second)
	keptSrc := netip.MustParseAddrPort(kept.LocalAddr().String())

	// Both sandbox connections wait in a read, idle, as a kept-alive HTTPS client does.
	read := func(c *conn, within time.Duration) <-chan error {
		errc := make(chan error, 1)
		go func() { _, err := c.line(within); errc <- err }()
		return errc
	}
	cutErr, keptErr := read(cut, soon), read(kept, soon)
	n, err := fw.CutFast(ip("100.96.0.2"), func(src, _ netip.AddrPort) bool { return src == keptSrc })
	if err != nil || n != 1 {
		t.Fatalf("CutFast = %d, %v; want 1", n, err)
	}
	if err := <-cutErr; !reset(err) {
		t.Errorf("idle cut flow: read returned %v, want a reset", err)
	}
	if err := <-keptErr; !timedOut(err) {
		t.Errorf("idle kept flow: read returned %v, want it still blocked (a timeout)", err)
	}
	if err := kept.echo("still kept", ok); err != nil {
		t.Errorf("kept flow after CutFast: %v", err)
	}
	// The probe left no conntrack entry of its own (a flow from the server to the
	// sandbox, which the flow log would report): conntrack found it invalid.
	flows, err := listFlows(options{netnsFd: int(l.gw.h)})
	if err != nil {
		t.Fatal(err)
	}
	for _, fl := range flows {
		if src, _ := ipOf(fl.Forward.SrcIP); src == ip("203.0.113.10") {
			t.Errorf("a conntrack entry from the server: %s", fl)
		}
	}
}

// The probe segment is the header fields it was given, with checksums that verify.
func TestProbeSegment(t *testing.T) {
	for _, tc := range []struct {
		src, dst string
		seq, ack uint32
	}{
		{"203.0.113.10:443", "100.96.0.2:40000", probeSeq, probeSeq + probeSpan/2},
		{"203.0.113.10:443", "100.96.0.2:40000", probeSeq + probeSpan, probeSeq},
		{"255.255.255.255:65535", "255.255.255.255:65535", 0xffff_ffff, 0xffff_ffff},
		{"0.0.0.0:0", "0.0.0.0:0", 0, 0},
		{"[::ffff:198.51.100.10]:443", "100.96.255.254:1", 1, 2}, // a mapped address is IPv4
	} {
		src, dst := netip.MustParseAddrPort(tc.src), netip.MustParseAddrPort(tc.dst)
		pkt, err := probeSegment(src, dst, tc.seq, tc.ack)
		if err != nil {
			t.Errorf("%s → %s: %v", src, dst, err)
			continue
		}
		checkProbe(t, pkt, src, dst, tc.seq, tc.ack)
	}
	// A known answer, independent of onesSum (the tests' checksum is onesSum too): the
	// TCP checksum tcpdump found correct for this probe in the lab.
	pkt, err := probeSegment(netip.MustParseAddrPort("203.0.113.10:443"), netip.MustParseAddrPort("100.96.0.2:45602"), probeSeq, probeSeq+probeSpan/2)
	if got := binary.BigEndian.Uint16(pkt[36:]); err != nil || got != 0x5dae {
		t.Errorf("probe 203.0.113.10:443 → 100.96.0.2:45602: TCP checksum %#04x, %v; want 0x5dae", got, err)
	}
	for _, bad := range [][2]string{{"[2001:db8::1]:443", "100.96.0.2:1"}, {"203.0.113.10:443", "[2001:db8::2]:1"}} {
		if _, err := probeSegment(netip.MustParseAddrPort(bad[0]), netip.MustParseAddrPort(bad[1]), 0, 0); err == nil {
			t.Errorf("%s → %s: no error", bad[0], bad[1])
		}
	}
}

// checkProbe checks pkt against what probeSegment was asked for, with the tests' own
// checksum (related_test.go) and parser (fastqueue_test.go).
func checkProbe(t *testing.T, pkt []byte, src, dst netip.AddrPort, seq, ack uint32) {
	t.Helper()
	src, dst = netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	want := queued{src: src, dst: dst, flags: tcpFlagFIN | tcpFlagACK, payload: 0}
	if got := parseTCP(pkt); got != want || len(pkt) != 40 {
		t.Fatalf("probe %s → %s: %d bytes, parsed %v, want 40 bytes, %v", src, dst, len(pkt), got, want)
	}
	if got := [2]uint32{binary.BigEndian.Uint32(pkt[24:]), binary.BigEndian.Uint32(pkt[28:])}; got != [2]uint32{seq, ack} {
		t.Errorf("probe %s → %s: seq, ack %d, want %d, %d", src, dst, got, seq, ack)
	}
	if pkt[8] == 0 || pkt[6]&0x40 == 0 {
		t.Errorf("probe %s → %s: TTL %d, flags %#x: want a TTL and DF", src, dst, pkt[8], pkt[6])
	}
	if c := checksum(pkt[:20]); c != 0 {
		t.Errorf("probe %s → %s: the IP header does not verify (%#04x)", src, dst, c)
	}
	pseudo := append(append([]byte{}, pkt[12:20]...), 0, unix.IPPROTO_TCP, 0, 20)
	if c := checksum(append(pseudo, pkt[20:]...)); c != 0 {
		t.Errorf("probe %s → %s: the TCP checksum does not verify (%#04x)", src, dst, c)
	}
}

// go test -fuzz FuzzProbeSegment ./internal/host/firewall/
func FuzzProbeSegment(f *testing.F) {
	f.Add([]byte{203, 0, 113, 10}, uint16(443), []byte{100, 96, 0, 2}, uint16(40000), probeSeq, probeSeq+probeSpan/2)
	f.Add([]byte{255, 255, 255, 255}, uint16(65535), []byte{0, 0, 0, 0}, uint16(0), uint32(0xffff_ffff), uint32(0))
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(443), []byte{100, 96, 0, 2}, uint16(1), uint32(1), uint32(2))
	f.Fuzz(func(t *testing.T, s []byte, sport uint16, d []byte, dport uint16, seq, ack uint32) {
		sa, ok1 := netip.AddrFromSlice(s)
		da, ok2 := netip.AddrFromSlice(d)
		if !ok1 || !ok2 {
			return
		}
		src, dst := netip.AddrPortFrom(sa, sport), netip.AddrPortFrom(da, dport)
		pkt, err := probeSegment(src, dst, seq, ack)
		if v4 := sa.Unmap().Is4() && da.Unmap().Is4(); v4 != (err == nil) {
			t.Fatalf("%s → %s: error %v", src, dst, err)
		}
		if err == nil {
			checkProbe(t, pkt, src, dst, seq, ack)
		}
	})
}
