package firewall

import (
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// fastLab is the lab of packet_test.go with the fast path on. The fake internet has a
// TLS-port server at 203.0.113.10:443 (in the sandbox's fast set) that records the lines
// it gets and echoes them, and 198.51.100.10:443 and :5432 (allowed_cidrs, not in the
// fast set); the gateway has the proxy's listener. Nothing reads the fast queue unless a
// test starts a reader (readQueue).
func fastLab(t *testing.T) (*lab, *Firewall, func() []string) {
	t.Helper()
	l := newLab(t)
	got := recordLines(t, l.inet, "203.0.113.10:443")
	serve(t, l.inet, "tcp4", "198.51.100.10:443", serveText("srv 198.51.100.10:443"))
	serve(t, l.inet, "tcp4", "198.51.100.10:5432", serveText("db"))
	serve(t, l.gw, "tcp4", fmt.Sprintf("0.0.0.0:%d", proxyPort), func(c net.Conn) string { return "redirected " + originalDst(c) })
	fw := l.gw.firewall()
	t.Cleanup(func() { fw.Close() })
	if err := fw.Apply(fastState(ep("203.0.113.10", 443, time.Minute))); err != nil {
		t.Fatal(err)
	}
	return l, fw, got
}

func fastState(fast ...Endpoint) Desired {
	d := labState("198.51.100.0/24")
	d.FastPath, d.Sandboxes[0].Fast = true, fast
	return d
}

// recordLines serves addr in ns like serve (greeting "srv") and returns the lines that
// its connections received so far.
func recordLines(t *testing.T, ns *netNS, addr string) func() []string {
	t.Helper()
	var mu sync.Mutex
	var lines []string
	serveLines(t, ns, "tcp4", addr, serveText("srv"), func(s string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, s)
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(lines)
	}
}

func hasSYNTo(seen []string, port int) bool {
	return slices.ContainsFunc(seen, func(p string) bool { return strings.HasSuffix(p, fmt.Sprintf(">%d S", port)) })
}

// HTTPS to an address in the fast set is routed and held in the queue; without a reader
// the kernel drops it (fail closed). Everything else on 443 still goes to the proxy.
func TestFastPathRouting(t *testing.T) {
	t.Parallel()
	l, fw, _ := fastLab(t)

	t.Run("not in the set: to the proxy, as without the fast path", func(t *testing.T) {
		reach(t, l.sbx, "", "198.51.100.10:443", "redirected 198.51.100.10:443") // allowed_cidrs too
		reach(t, l.sbx, "", "203.0.113.10:80", "redirected 203.0.113.10:80")
	})
	t.Run("in the set, nothing reads the queue: dropped, the server sees nothing", func(t *testing.T) {
		seen := capture(t, l.inet, func() { blocked(t, l.sbx, "", "203.0.113.10:443") })
		if hasSYNTo(seen, 443) {
			t.Errorf("a SYN reached the server: %q", seen)
		}
		// The capture sees what is forwarded (the check above is not vacuous).
		if seen := capture(t, l.inet, func() { reach(t, l.sbx, "", "198.51.100.10:5432", "db") }); !hasSYNTo(seen, 5432) {
			t.Errorf("the capture missed a forwarded SYN: %q", seen)
		}
	})
	t.Run("AdmitFast routes, RevokeFast gives the address back to the proxy", func(t *testing.T) {
		if err := fw.AdmitFast("egressd-lab", []Endpoint{ep("198.51.100.10", 443, time.Minute)}); err != nil {
			t.Fatal(err)
		}
		blocked(t, l.sbx, "", "198.51.100.10:443") // held, though allowed_cidrs would accept it
		if err := fw.RevokeFast("egressd-lab", []Endpoint{ep("198.51.100.10", 443, 0), ep("203.0.113.99", 443, 0)}); err != nil {
			t.Fatal(err)
		}
		reach(t, l.sbx, "", "198.51.100.10:443", "redirected 198.51.100.10:443")
	})
	t.Run("AdmitFast refuses other ports, unknown sandboxes and FastPath off", func(t *testing.T) {
		if err := fw.AdmitFast("egressd-lab", []Endpoint{ep("203.0.113.10", 80, time.Minute)}); err == nil {
			t.Error("port 80 admitted")
		}
		if err := fw.AdmitFast("nobody", []Endpoint{ep("203.0.113.10", 443, time.Minute)}); err == nil {
			t.Error("admitted to a sandbox the table does not have")
		}
		if err := fw.Apply(labState("198.51.100.0/24")); err != nil {
			t.Fatal(err)
		}
		if err := fw.AdmitFast("egressd-lab", []Endpoint{ep("203.0.113.10", 443, time.Minute)}); err == nil {
			t.Error("admitted with FastPath off")
		}
		reach(t, l.sbx, "", "203.0.113.10:443", "redirected 203.0.113.10:443")
	})
}

// A flow whose first data segment the reader verified (ct mark MarkFast) is forwarded by
// the kernel from then on: the queue sees its handshake and that one segment, nothing
// after. CutFast cuts it: the sandbox's next packet is answered with a reset. A segment
// conntrack refuses (a bad checksum) never reaches the reader.
func TestFastPathVerified(t *testing.T) {
	t.Parallel()
	l, fw, got := fastLab(t)
	q := readQueue(t, l.gw, DefaultFastQueue, handshakeThen(MarkFast))
	// First in the queue, if it got there at all: the reader answers in order.
	src, dst := ip("100.96.0.2").As4(), ip("203.0.113.10").As4()
	bad := tcpSegment(src, dst, 40200, 443, tcpSYN)
	bad[16] ^= 0xff // the checksum
	sendRaw(t, l.sbx, dst, append(ipHeader(src, dst, len(bad)), bad...))
	open := func() *conn {
		c, greet, err := dial(l.sbx, "", "203.0.113.10:443", ok)
		if err != nil || greet != "srv" {
			t.Fatalf("fast flow: %q, %v", greet, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c := open()
	for _, s := range []string{"client hello", "second", "third"} {
		if err := c.echo(s, ok); err != nil {
			t.Fatalf("verified flow, %q: %v", s, err)
		}
	}
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	var syn, data int
	for _, p := range q.packets() {
		if p.src != local {
			continue
		}
		if p.flags&tcpSYN != 0 {
			syn++
		}
		if p.payload > 0 {
			data++
		}
	}
	if syn != 1 || data != 1 {
		t.Errorf("the queue saw %d SYN and %d data segments of the flow, want 1 and 1 (the first): %v", syn, data, q.packets())
	}
	if slices.ContainsFunc(q.packets(), func(p queued) bool { return p.src.Port() == 40200 }) {
		t.Errorf("a segment with a bad checksum reached the queue: %v", q.packets())
	}
	if lines := got(); !slices.Equal(lines, []string{"client hello", "second", "third"}) {
		t.Errorf("the server got %q", lines)
	}

	kept := open()
	if err := kept.echo("kept", ok); err != nil {
		t.Fatal(err)
	}
	keptSrc := netip.MustParseAddrPort(kept.LocalAddr().String())
	var asked []string
	n, err := fw.CutFast(ip("100.96.0.2"), func(src, dst netip.AddrPort) bool {
		asked = append(asked, src.String()+">"+dst.String())
		return src == keptSrc
	})
	if err != nil || n != 1 {
		t.Fatalf("CutFast = %d, %v; want 1", n, err)
	}
	if want := []string{local.String() + ">203.0.113.10:443", keptSrc.String() + ">203.0.113.10:443"}; !sameSet(asked, want) {
		t.Errorf("keep was asked about %q, want %q", asked, want)
	}
	if err := c.echo("after the cut", ok); !reset(err) {
		t.Errorf("cut flow: %v, want a reset", err)
	}
	if err := kept.echo("still kept", ok); err != nil {
		t.Errorf("kept flow after CutFast: %v", err)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// A flow the reader refused (ct mark MarkFastDeny) is reset by the kernel; its data never
// reaches the server.
func TestFastPathRefused(t *testing.T) {
	t.Parallel()
	l, _, got := fastLab(t)
	readQueue(t, l.gw, DefaultFastQueue, handshakeThen(MarkFastDeny))
	c, greet, err := dial(l.sbx, "", "203.0.113.10:443", ok)
	if err != nil || greet != "srv" {
		t.Fatalf("handshake: %q, %v", greet, err)
	}
	defer c.Close()
	if err := c.echo("evil hello", ok); !reset(err) {
		t.Errorf("refused flow: %v, want a reset", err)
	}
	if lines := got(); len(lines) != 0 {
		t.Errorf("the server got %q", lines)
	}
}

// CutFast refuses exactly the verified and released fast flows of the sandbox that keep does not keep;
// FlushConntrack (allowed_cidrs shrinking) leaves every fast flow alone, held ones included.
func TestCutFastEntries(t *testing.T) {
	t.Parallel()
	ns := newNetNS(t, "cut")
	fw := ns.firewall()
	if err := fw.Apply(fastState()); err != nil { // conntrack is on in the namespace
		t.Fatal(err)
	}
	ct, err := conntrack.Dial(&netlink.Config{NetNS: int(ns.h)})
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	sbx, other, web := ip("100.96.0.2"), ip("100.96.0.10"), ip("203.0.113.10")
	flows := []struct {
		src  netip.Addr
		port uint16 // source port, the flow's name below
		dst  netip.Addr
		dprt uint16
		mark uint32
	}{
		{sbx, 40001, web, 443, MarkFast},                // cut
		{sbx, 40002, web, 443, MarkFast},                // kept by keep
		{sbx, 40003, web, 443, MarkFast | MarkFastDeny}, // refused: the kernel resets it
		{sbx, 40004, web, 22, MarkTCP},                  // allowed_tcp: FlushTCP's
		{sbx, 40005, web, 443, 0},                       // held by egressd
		{other, 40006, web, 443, MarkFast},              // another sandbox's
		{sbx, 40007, web, 443, MarkFast | 0x10},         // other bits of the mark: cut
		{sbx, 40008, ip("198.51.100.10"), 5432, 0},      // allowed_cidrs: FlushConntrack's
		{sbx, 40009, web, 443, MarkFastWait},            // released, not yet confirmed: cut
	}
	for _, f := range flows {
		if err := ct.Create(conntrack.NewFlow(unix.IPPROTO_TCP, 0, f.src, f.dst, f.port, f.dprt, 120, f.mark)); err != nil {
			t.Fatalf("create %d: %v", f.port, err)
		}
	}
	marks := func() map[uint16]uint32 { return ctMarks(t, ct) }
	n, err := fw.CutFast(sbx, func(src, dst netip.AddrPort) bool { return src.Port() == 40002 && dst == netip.AddrPortFrom(web, 443) })
	if err != nil || n != 3 {
		t.Errorf("CutFast = %d, %v; want 3", n, err)
	}
	// The cut flows are refused (the kernel resets their next packet), the other bits of
	// their mark kept; every other flow is as it was.
	want := map[uint16]uint32{40001: MarkFast | MarkFastDeny, 40002: MarkFast, 40003: MarkFast | MarkFastDeny, 40004: MarkTCP,
		40005: 0, 40006: MarkFast, 40007: MarkFast | MarkFastDeny | 0x10, 40008: 0, 40009: MarkFastWait | MarkFastDeny}
	if got := marks(); !maps.Equal(got, want) {
		t.Errorf("after CutFast: marks %#x, want %#x", got, want)
	}
	if n, err := fw.FlushConntrack(sbx, nil); err != nil || n != 1 {
		t.Errorf("FlushConntrack = %d, %v; want 1 (the allowed_cidrs flow)", n, err)
	}
	delete(want, 40008)
	if got := marks(); !maps.Equal(got, want) {
		t.Errorf("after FlushConntrack: marks %#x, want %#x", got, want)
	}
	if n, err := fw.CutFast(sbx, nil); err != nil || n != 1 {
		t.Errorf("CutFast(nil keep) = %d, %v; want 1 (40002)", n, err)
	}
	if _, err := fw.CutFast(ip("2001:db8::1"), nil); err == nil {
		t.Error("CutFast of an IPv6 address: no error")
	}
}

// TCP in IP fragments from a sandbox is dropped before reassembly with the fast path on
// (the control: with it off, the same fragments reach an allowed_cidrs server as a SYN);
// ICMP in fragments still passes.
func TestFastPathFragments(t *testing.T) {
	t.Parallel()
	l, fw, _ := fastLab(t)
	src, dst := ip("100.96.0.2").As4(), ip("198.51.100.10").As4()
	sendTCP := func() {
		seg := tcpSegment(src, dst, 40100, 5432, tcpSYN)
		sendFragments(t, l.sbx, src, dst, unix.IPPROTO_TCP, seg)
	}
	if err := fw.Apply(labState("198.51.100.0/24")); err != nil {
		t.Fatal(err)
	}
	if seen := capture(t, l.inet, sendTCP); !hasSYNTo(seen, 5432) {
		t.Fatalf("control, fast path off: the fragmented SYN did not arrive: %q", seen)
	}
	if err := fw.Apply(fastState()); err != nil {
		t.Fatal(err)
	}
	if seen := capture(t, l.inet, sendTCP); hasSYNTo(seen, 5432) {
		t.Errorf("fast path on: a SYN in fragments arrived: %q", seen)
	}
	mark := []byte("an ICMP echo in two fragments")
	echo := append([]byte{8, 0, 0, 0, 0, 7, 0, 1}, mark...) // echo request, id 7, seq 1
	binary.BigEndian.PutUint16(echo[2:], checksum(echo))
	if !receivedICMP(t, l.inet, mark, func() { sendFragments(t, l.sbx, src, dst, unix.IPPROTO_ICMP, echo) }) {
		t.Error("fast path on: the ICMP echo in fragments did not arrive")
	}
}

// sendFragments sends payload (a transport segment) from ns as two IPv4 fragments: its
// first 8 bytes, then the rest.
func sendFragments(t *testing.T, ns *netNS, src, dst [4]byte, proto byte, payload []byte) {
	t.Helper()
	for i, part := range [][]byte{payload[:8], payload[8:]} {
		h := ipHeader(src, dst, len(part))
		h[9] = proto
		binary.BigEndian.PutUint16(h[4:], 0x4242) // one ID for both: they belong together
		if i == 0 {
			binary.BigEndian.PutUint16(h[6:], 0x2000) // more fragments, offset 0
		} else {
			binary.BigEndian.PutUint16(h[6:], 1) // offset 1 (8 bytes), the last
		}
		sendRaw(t, ns, dst, append(h, part...))
	}
}
