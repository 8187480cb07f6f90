package firewall

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// tcpLab is the lab of packet_test.go with servers on the fake internet for allowed_tcp:
// 203.0.113.10 ports 22 and 2222, 198.51.100.10 port 5432 (an allowed_cidrs one). The
// table has the lab's sandbox (egressd-lab) and a second one, "other", whose interface
// does not exist: what is admitted to it must not admit the lab's sandbox.
func tcpLab(t *testing.T) (*lab, *Firewall) {
	t.Helper()
	l := newLab(t)
	for _, a := range []string{"203.0.113.10:22", "203.0.113.10:2222", "198.51.100.10:5432"} {
		serve(t, l.inet, "tcp4", a, serveText("srv "+a))
	}
	fw := l.gw.firewall()
	t.Cleanup(func() { fw.Close() })
	if err := fw.Apply(tcpState(nil, false)); err != nil {
		t.Fatal(err)
	}
	return l, fw
}

func tcpState(eps []Endpoint, monitor bool) Desired {
	d := labState("198.51.100.10/32")
	d.Sandboxes[0].TCP, d.Sandboxes[0].Monitor = eps, monitor
	d.Sandboxes = append(d.Sandboxes, Sandbox{Name: "other", HostIface: "egother", Addr: ip("100.96.0.10"), Gateway: ip("100.96.0.9")})
	return d
}

func ep(a string, port uint16, timeout time.Duration) Endpoint {
	return Endpoint{Addr: ip(a), Port: port, Timeout: timeout}
}

// elements reads the tcp set of a sandbox back from the kernel: "addr:port timeout".
func elements(t *testing.T, ns *netNS, name string) map[string]time.Duration {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.h)))
	if err != nil {
		t.Fatal(err)
	}
	set, err := c.GetSetByName(table(), prefixTCP+name)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.GetSetElements(set)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Duration{}
	for _, e := range got {
		a := netip.AddrFrom4([4]byte(e.Key[:4]))
		out[fmt.Sprintf("%s:%d", a, uint16(e.Key[4])<<8|uint16(e.Key[5]))] = e.Timeout
	}
	return out
}

// waitGone polls (bounded) until the kernel's tcp set of name no longer has key.
func waitGone(t *testing.T, ns *netNS, name, key string, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, ok := elements(t, ns, name)[key]; !ok {
			return
		}
	}
	t.Fatalf("element %s of %s still there after %v", key, name, within)
}

func reset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

func TestAllowedTCP(t *testing.T) {
	t.Parallel()
	l, fw := tcpLab(t)

	t.Run("nothing admitted: dropped", func(t *testing.T) {
		blocked(t, l.sbx, "", "203.0.113.10:22")
	})
	t.Run("admitted address and port only", func(t *testing.T) {
		if err := fw.Admit("egressd-lab", []Endpoint{ep("203.0.113.10", 22, time.Minute)}); err != nil {
			t.Fatal(err)
		}
		reach(t, l.sbx, "", "203.0.113.10:22", "srv")
		blocked(t, l.sbx, "", "203.0.113.10:2222") // same address, other port
	})
	t.Run("a spoofed source does not use the element", func(t *testing.T) {
		l.sbx.ip(t, "addr", "add", "100.96.0.3/29", "dev", "eth0")
		blocked(t, l.sbx, "100.96.0.3", "203.0.113.10:22")
	})
	t.Run("many endpoints in one Admit, in chunks", func(t *testing.T) {
		var many []Endpoint
		for i := 0; i < 3*elementsPerMessage+7; i++ {
			many = append(many, Endpoint{Addr: addr4(u32(ip("198.18.64.0")) + uint32(i)), Port: uint16(1000 + i), Timeout: time.Minute})
		}
		if err := fw.Admit("other", many); err != nil {
			t.Fatal(err)
		}
		if got := len(elements(t, l.gw, "other")); got != len(many) {
			t.Errorf("the set holds %d elements, want %d", got, len(many))
		}
		if err := fw.Revoke("other", many); err != nil {
			t.Fatal(err)
		}
		if got := len(elements(t, l.gw, "other")); got != 0 {
			t.Errorf("after Revoke the set holds %d elements", got)
		}
	})
	t.Run("another sandbox's element admits nothing here", func(t *testing.T) {
		if err := fw.Admit("other", []Endpoint{ep("203.0.113.10", 2222, time.Minute)}); err != nil {
			t.Fatal(err)
		}
		blocked(t, l.sbx, "", "203.0.113.10:2222")
	})
	t.Run("admit refreshes the timeout, shorter or longer", func(t *testing.T) {
		for _, d := range []time.Duration{time.Hour, 30 * time.Second} {
			if err := fw.Admit("egressd-lab", []Endpoint{ep("203.0.113.10", 22, d)}); err != nil {
				t.Fatal(err)
			}
			if got := elements(t, l.gw, "egressd-lab")["203.0.113.10:22"]; got != d {
				t.Errorf("timeout after Admit(%v) = %v", d, got)
			}
		}
	})
	t.Run("admit to a sandbox the table does not have fails", func(t *testing.T) {
		if err := fw.Admit("nobody", []Endpoint{ep("203.0.113.10", 22, time.Minute)}); err == nil {
			t.Error("accepted")
		}
		// and the lasting connection still works after the failure
		if err := fw.Admit("egressd-lab", []Endpoint{ep("203.0.113.10", 22, time.Minute)}); err != nil {
			t.Error(err)
		}
	})
	t.Run("hard deny wins over an element", func(t *testing.T) {
		if err := fw.Admit("egressd-lab", []Endpoint{ep("169.254.169.254", 22, time.Minute), ep("198.18.0.2", 22, time.Minute)}); err != nil {
			t.Fatal(err)
		}
		serve(t, l.inet, "tcp4", "169.254.169.254:22", serveText("metadata"))
		blocked(t, l.sbx, "", "169.254.169.254:22")
		blocked(t, l.sbx, "", "198.18.0.2:22")
	})
	t.Run("revoke: new connections dropped, absent elements no error", func(t *testing.T) {
		if err := fw.Revoke("egressd-lab", []Endpoint{ep("203.0.113.10", 22, 0), ep("203.0.113.99", 1, 0)}); err != nil {
			t.Fatal(err)
		}
		blocked(t, l.sbx, "", "203.0.113.10:22")
		if err := fw.Revoke("egressd-lab", []Endpoint{ep("203.0.113.10", 22, 0)}); err != nil {
			t.Fatalf("second Revoke: %v", err)
		}
	})
}

// An element that expires leaves its open connections up; new ones are dropped.
func TestAllowedTCPExpiry(t *testing.T) {
	t.Parallel()
	l, fw := tcpLab(t)
	if err := fw.Admit("egressd-lab", []Endpoint{ep("203.0.113.10", 22, 1500*time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	c, _, err := dial(l.sbx, "", "203.0.113.10:22", ok)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitGone(t, l.gw, "egressd-lab", "203.0.113.10:22", 5*time.Second)
	if err := c.echo("after expiry", ok); err != nil {
		t.Errorf("open connection after its element expired: %v", err)
	}
	blocked(t, l.sbx, "", "203.0.113.10:22")
}

// Revoke + FlushTCP cut an open connection: the sandbox gets a reset on its next send.
// FlushTCP leaves other flows alone (kept ones, allowed_cidrs ones), and FlushConntrack
// (allowed_cidrs shrinking) leaves allowed_tcp flows alone.
func TestAllowedTCPCut(t *testing.T) {
	t.Parallel()
	l, fw := tcpLab(t)
	if err := fw.Admit("egressd-lab", []Endpoint{ep("203.0.113.10", 22, time.Minute), ep("203.0.113.10", 2222, time.Minute)}); err != nil {
		t.Fatal(err)
	}
	open := func(addr string) *conn {
		c, _, err := dial(l.sbx, "", addr, ok)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	cut, kept, cidr := open("203.0.113.10:22"), open("203.0.113.10:2222"), open("198.51.100.10:5432")

	// allowed_cidrs shrinks to nothing: FlushConntrack must not take the allowed_tcp flows.
	if _, err := fw.FlushConntrack(ip("100.96.0.2"), nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*conn{cut, kept} {
		if err := c.echo("after FlushConntrack", ok); err != nil {
			t.Fatalf("allowed_tcp flow after FlushConntrack: %v", err)
		}
	}
	if err := fw.Apply(tcpState(nil, false)); err != nil { // the cidr back (FlushConntrack cut it)
		t.Fatal(err)
	}
	cidr = open("198.51.100.10:5432")

	if err := fw.Revoke("egressd-lab", []Endpoint{ep("203.0.113.10", 22, 0)}); err != nil {
		t.Fatal(err)
	}
	if err := cut.echo("revoked, not cut yet", ok); err != nil {
		t.Fatalf("Revoke alone cut the connection: %v", err)
	}
	other, err := FlushTCP(ip("100.96.0.10"), nil, WithNetNSFd(int(l.gw.h)))
	if err != nil || other != 0 {
		t.Fatalf("FlushTCP of the other sandbox: %d, %v", other, err)
	}
	n, err := fw.FlushTCP(ip("100.96.0.2"), func(dst netip.Addr, port uint16) bool { return port == 2222 })
	if err != nil || n != 1 {
		t.Fatalf("FlushTCP = %d, %v; want 1", n, err)
	}
	err = cut.echo("after the cut", ok)
	if !reset(err) {
		t.Errorf("cut connection: %v, want a reset", err)
	}
	if err := kept.echo("kept", ok); err != nil {
		t.Errorf("kept connection: %v", err)
	}
	if err := cidr.echo("cidr", ok); err != nil {
		t.Errorf("allowed_cidrs connection after FlushTCP: %v", err)
	}
	if n, err := fw.FlushTCP(ip("100.96.0.2"), nil); err != nil || n != 1 {
		t.Errorf("FlushTCP(nil keep) = %d, %v; want 1 (the kept one)", n, err)
	}
	if err := kept.echo("now cut", ok); !reset(err) {
		t.Errorf("connection after FlushTCP(nil): %v, want a reset", err)
	}
}

// Apply replaces the table whole: with the endpoints in Desired the elements stay, and
// connections (whose mark is in conntrack, not in the table) outlive any Apply.
func TestAllowedTCPApply(t *testing.T) {
	t.Parallel()
	l, fw := tcpLab(t)
	if err := fw.Admit("egressd-lab", []Endpoint{ep("203.0.113.10", 22, time.Minute)}); err != nil {
		t.Fatal(err)
	}
	c, _, err := dial(l.sbx, "", "203.0.113.10:22", ok)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := fw.Apply(tcpState([]Endpoint{ep("203.0.113.10", 22, 50*time.Second)}, false)); err != nil {
		t.Fatal(err)
	}
	if got := elements(t, l.gw, "egressd-lab"); got["203.0.113.10:22"] != 50*time.Second || len(got) != 1 {
		t.Errorf("after Apply the set holds %v", got)
	}
	reach(t, l.sbx, "", "203.0.113.10:22", "srv")
	if err := fw.Apply(tcpState(nil, false)); err != nil {
		t.Fatal(err)
	}
	blocked(t, l.sbx, "", "203.0.113.10:22")
	if err := c.echo("after two Applies", ok); err != nil {
		t.Errorf("open connection after Apply: %v", err)
	}
}

// A monitor sandbox's traffic that enforce would drop passes (hard deny excepted); the
// log rule is there with the monitor prefix (package flowlog reads what it logs).
func TestMonitorSandbox(t *testing.T) {
	t.Parallel()
	l, fw := tcpLab(t)
	serve(t, l.inet, "tcp4", "169.254.169.254:2222", serveText("metadata"))
	blocked(t, l.sbx, "", "203.0.113.10:2222")
	if err := fw.Apply(tcpState(nil, true)); err != nil {
		t.Fatal(err)
	}
	reach(t, l.sbx, "", "203.0.113.10:2222", "srv")
	reach(t, l.sbx, "", "203.0.113.10:22", "srv")
	blocked(t, l.sbx, "", "169.254.169.254:2222")
	if list := l.gw.listTable(t, "inet", TableName); !strings.Contains(list, `log prefix "monitor" group 6567`) {
		t.Errorf("monitor log rule missing:\n%s", list)
	}
	if err := fw.Apply(tcpState(nil, false)); err != nil {
		t.Fatal(err)
	}
	blocked(t, l.sbx, "", "203.0.113.10:2222")
}

func TestEndpointsCanonical(t *testing.T) {
	es, err := endpoints([]Endpoint{
		ep("203.0.113.10", 22, time.Second), ep("::ffff:203.0.113.10", 22, time.Minute),
		ep("203.0.113.9", 443, 999*time.Microsecond), ep("2001:db8::1", 22, time.Hour), ep("198.51.100.1", 1, 1500*time.Microsecond),
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.text())
	}
	want := []string{"198.51.100.1 . 1 timeout 1ms", "203.0.113.10 . 22 timeout 1m"}
	if !slices.Equal(got, want) {
		t.Errorf("endpoints = %q, want %q", got, want)
	}
	for _, bad := range []Endpoint{{Port: 22, Timeout: time.Second}, ep("203.0.113.1", 0, time.Second)} {
		if _, err := endpoints([]Endpoint{bad}); err == nil {
			t.Errorf("%v accepted", bad)
		}
		if err := (Desired{Sandboxes: []Sandbox{{Name: "a", HostIface: "a", Addr: ip("100.96.0.2"), Gateway: ip("100.96.0.1"), TCP: []Endpoint{bad}}},
			ProxyPort: 1, DNSPort: 2, SandboxCIDR: netip.MustParsePrefix("100.96.0.0/16")}).Validate(); err == nil {
			t.Errorf("Desired with %v accepted", bad)
		}
	}
	for d, want := range map[time.Duration]string{0: "0s", time.Millisecond: "1ms", 90 * time.Second: "1m30s",
		25*time.Hour + 4*time.Millisecond: "1d1h4ms", 48 * time.Hour: "2d"} {
		if got := nftDuration(d); got != want {
			t.Errorf("nftDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// BenchmarkAdmit measures one Admit (a batch of add, delete, add) of 1 and 4 elements
// into a table of one sandbox, in a throwaway namespace.
func BenchmarkAdmit(b *testing.B) {
	for _, n := range []int{1, 4} {
		b.Run(fmt.Sprintf("%d", n), func(b *testing.B) {
			ns := benchNS(b)
			fw := New(WithNetNSFd(int(ns)))
			defer fw.Close()
			if err := fw.Apply(labState()); err != nil {
				b.Fatal(err)
			}
			eps := make([]Endpoint, n)
			for i := range eps {
				eps[i] = ep(fmt.Sprintf("203.0.113.%d", 10+i), 22, time.Minute)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := fw.Admit("egressd-lab", eps); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchNS makes a throwaway network namespace for a benchmark and deletes it after.
func benchNS(b *testing.B) netns.NsHandle {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root (network namespaces)")
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	name := "egfw-bench-" + hex.EncodeToString(r[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("ip netns add: %v: %s", err, out)
	}
	b.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	return h
}

// A TCP packet without SYN to an admitted endpoint opens nothing: only a SYN is looked up
// in the set. The packet never reaches the fake internet, and the sandbox gets a reset.
func TestAllowedTCPNeedsSYN(t *testing.T) {
	t.Parallel()
	l, fw := tcpLab(t)
	if err := fw.Admit("egressd-lab", []Endpoint{ep("203.0.113.10", 22, time.Minute)}); err != nil {
		t.Fatal(err)
	}
	src, dst := ip("100.96.0.2").As4(), ip("203.0.113.10").As4()
	seen := capture(t, l.inet, func() {
		got := capture(t, l.sbx, func() {
			err := l.sbx.do(func() {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
				if err != nil {
					t.Error(err)
					return
				}
				defer unix.Close(fd)
				seg := tcpSegment(src, dst, 40022, 22, tcpACK|0x08 /* PSH */)
				pkt := append(ipHeader(src, dst, len(seg)), seg...)
				if err := unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: dst}); err != nil {
					t.Error(err)
				}
			})
			if err != nil {
				t.Error(err)
			}
		})
		if !slices.Contains(got, "203.0.113.10:22>40022 R") {
			t.Errorf("the sandbox got %q, want a reset from 203.0.113.10:22", got)
		}
	})
	for _, p := range seen {
		if strings.HasSuffix(p, ">22 A") {
			t.Errorf("the mid-stream packet reached the fake internet: %q", seen)
		}
	}
	// The capture sees what is forwarded (the check above is not vacuous).
	seen = capture(t, l.inet, func() { reach(t, l.sbx, "", "203.0.113.10:22", "srv") })
	if !slices.ContainsFunc(seen, func(p string) bool { return strings.HasSuffix(p, ">22 S") }) {
		t.Errorf("the fake internet's capture missed an admitted SYN: %q", seen)
	}
}

// capture runs fn while reading the TCP packets that ns receives (a raw socket), and
// returns them as "src:sport>dport FLAGS" (S, A, R: SYN, ACK without SYN, RST).
func capture(t *testing.T, ns *netNS, fn func()) []string {
	t.Helper()
	var fd int
	var err error
	if e := ns.do(func() { fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP) }); e != nil || err != nil {
		t.Fatalf("raw socket in %s: %v %v", ns.name, e, err)
	}
	defer unix.Close(fd)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	fn()
	var out []string
	buf := make([]byte, 1500)
	for i := 0; i < 10; i++ { // bounded: until 100 ms pass without a packet, 10 at most
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if len(out) > 0 || i > 3 {
				break
			}
			continue
		}
		p := buf[:n] // a raw IPv4 socket reads the IP header too
		ihl := int(p[0]&0x0f) * 4
		if n < ihl+14 {
			continue
		}
		fl := p[ihl+13]
		kind := "A"
		switch {
		case fl&tcpRST != 0:
			kind = "R"
		case fl&tcpSYN != 0:
			kind = "S"
		}
		out = append(out, fmt.Sprintf("%s:%d>%d %s", netip.AddrFrom4([4]byte(p[12:16])),
			binary.BigEndian.Uint16(p[ihl:]), binary.BigEndian.Uint16(p[ihl+2:]), kind))
	}
	return out
}

// ipHeader is an IPv4 header for a raw IPPROTO_RAW socket (the kernel fills in the
// checksum and, if 0, the ID).
func ipHeader(src, dst [4]byte, payload int) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+payload))
	h[8], h[9] = 64, unix.IPPROTO_TCP
	copy(h[12:], src[:])
	copy(h[16:], dst[:])
	return h
}

// tcpSegment is a 20-byte TCP header with a valid checksum (conntrack drops bad ones).
func tcpSegment(src, dst [4]byte, sport, dport uint16, flags byte) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint32(h[4:], 1000)
	binary.BigEndian.PutUint32(h[8:], 2000)
	h[12] = 5 << 4
	h[13] = flags
	binary.BigEndian.PutUint16(h[14:], 65535)
	var sum uint32
	pseudo := append(append(append([]byte{}, src[:]...), dst[:]...), 0, unix.IPPROTO_TCP, 0, 20)
	for _, b := range [][]byte{pseudo, h} {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(h[16:], ^uint16(sum))
	return h
}
