package firewall

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Timeouts: an allowed exchange gets `ok`; a dropped one must time out after `silent`
// (a drop is silent, so the only evidence is that nothing answered).
const (
	ok     = 3 * time.Second
	silent = 400 * time.Millisecond
)

// lab is three namespaces: a sandbox, the gateway where the firewall is applied, and a
// fake internet behind the gateway's uplink.
//
//	sbx eth0 100.96.0.2/29 (and 100.96.0.3, to spoof) ── egsbx0 100.96.0.1/29  gw
//	gw up0 198.18.0.2/30 ── eth0 198.18.0.1/30 inet; inet lo: 198.51.100.10, 203.0.113.10, 169.254.169.254
type lab struct {
	sbx, gw, inet *netNS
}

func newLab(t *testing.T) *lab {
	l := &lab{sbx: newNetNS(t, "sbx"), gw: newNetNS(t, "gw"), inet: newNetNS(t, "inet")}
	l.sbx.ip(t, "link", "add", "eth0", "type", "veth", "peer", "name", "egsbx0", "netns", l.gw.name)
	l.gw.ip(t, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", l.inet.name)
	l.sbx.ip(t, "addr", "add", "100.96.0.2/29", "dev", "eth0")
	l.sbx.ip(t, "addr", "add", "fe80::2/64", "dev", "eth0", "nodad")
	l.sbx.ip(t, "link", "set", "eth0", "up")
	l.sbx.ip(t, "route", "add", "default", "via", "100.96.0.1")
	l.gw.ip(t, "addr", "add", "100.96.0.1/29", "dev", "egsbx0")
	l.gw.ip(t, "addr", "add", "fe80::1/64", "dev", "egsbx0", "nodad")
	l.gw.ip(t, "addr", "add", "198.18.0.2/30", "dev", "up0")
	l.gw.ip(t, "link", "set", "egsbx0", "up")
	l.gw.ip(t, "link", "set", "up0", "up")
	l.gw.ip(t, "route", "add", "default", "via", "198.18.0.1")
	l.gw.exec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1") // in the gw namespace only
	l.inet.ip(t, "addr", "add", "198.18.0.1/30", "dev", "eth0")
	l.inet.ip(t, "link", "set", "eth0", "up")
	for _, a := range []string{"198.51.100.10/32", "203.0.113.10/32", "169.254.169.254/32"} {
		l.inet.ip(t, "addr", "add", a, "dev", "lo")
	}
	// Only for the inbound check: the fake internet can route to the sandbox range.
	l.inet.ip(t, "route", "add", "100.96.0.0/16", "via", "198.18.0.2")
	return l
}

const (
	proxyPort = 15001
	dnsPort   = 15053
)

func labState(allowed ...string) Desired {
	return Desired{
		Sandboxes: []Sandbox{{
			Name: "egressd-lab", HostIface: "egsbx0", Addr: ip("100.96.0.2"), Gateway: ip("100.96.0.1"),
			Allowed: pfx(allowed...),
		}},
		ProxyPort: proxyPort, DNSPort: dnsPort, SandboxCIDR: netip.MustParsePrefix("100.96.0.0/16"),
		HardDeny:    pfx("198.18.0.2/32"), // the gateway's uplink address
		IfacePrefix: "eg",
	}
}

// serve listens in ns and answers each connection with greet(conn) on a first line, then
// echoes lines. It stops when the test ends.
func serve(t *testing.T, ns *netNS, network, addr string, greet func(net.Conn) string) {
	t.Helper()
	serveLines(t, ns, network, addr, greet, nil)
}

// serveLines is serve that also hands each line received to got (if not nil) before the echo.
func serveLines(t *testing.T, ns *netNS, network, addr string, greet func(net.Conn) string, got func(string)) {
	t.Helper()
	var ln net.Listener
	var err error
	if e := ns.do(func() { ln, err = net.Listen(network, addr) }); e != nil || err != nil {
		t.Fatalf("listen %s in %s: %v %v", addr, ns.name, e, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				fmt.Fprintln(c, greet(c))
				r := bufio.NewScanner(c)
				for r.Scan() {
					if got != nil {
						got(r.Text())
					}
					fmt.Fprintln(c, r.Text())
				}
			}()
		}
	}()
}

func serveText(s string) func(net.Conn) string { return func(net.Conn) string { return s } }

// serveUDP answers every datagram with text.
func serveUDP(t *testing.T, ns *netNS, addr, text string) {
	t.Helper()
	var pc net.PacketConn
	var err error
	if e := ns.do(func() { pc, err = net.ListenPacket("udp4", addr) }); e != nil || err != nil {
		t.Fatalf("listen udp %s in %s: %v %v", addr, ns.name, e, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(text), from)
		}
	}()
}

// originalDst is what the transparent proxy reads: the destination before the DNAT.
func originalDst(c net.Conn) string {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err.Error()
	}
	var out string
	_ = rc.Control(func(fd uintptr) {
		m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			out = err.Error()
			return
		}
		a := netip.AddrFrom4([4]byte(m.Multiaddr[4:8]))
		out = netip.AddrPortFrom(a, binary.BigEndian.Uint16(m.Multiaddr[2:4])).String()
	})
	return out
}

// conn is a client connection opened inside a namespace.
type conn struct {
	net.Conn
	r *bufio.Reader
}

// dial connects from ns (from laddr if set) and reads the greeting.
func dial(ns *netNS, laddr, raddr string, timeout time.Duration) (*conn, string, error) {
	var c net.Conn
	var err error
	d := net.Dialer{Timeout: timeout}
	if laddr != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(laddr)}
	}
	if e := ns.do(func() { c, err = d.Dial("tcp", raddr) }); e != nil {
		return nil, "", e
	}
	if err != nil {
		return nil, "", err
	}
	cc := &conn{Conn: c, r: bufio.NewReader(c)}
	line, err := cc.line(timeout)
	if err != nil {
		c.Close()
		return nil, "", err
	}
	return cc, line, nil
}

func (c *conn) line(timeout time.Duration) (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	s, err := c.r.ReadString('\n')
	return strings.TrimSpace(s), err
}

// echo sends a line and reads it back.
func (c *conn) echo(s string, timeout time.Duration) error {
	if _, err := fmt.Fprintln(c, s); err != nil {
		return err
	}
	got, err := c.line(timeout)
	if err == nil && got != s {
		err = fmt.Errorf("echo %q, got %q", s, got)
	}
	return err
}

func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// reach asserts that a TCP connection from ns to raddr gets a greeting starting with want.
func reach(t *testing.T, ns *netNS, laddr, raddr, want string) {
	t.Helper()
	c, got, err := dial(ns, laddr, raddr, ok)
	if err != nil {
		t.Errorf("%s → %s: %v, want %q", ns.name, raddr, err, want)
		return
	}
	c.Close()
	if !strings.HasPrefix(got, want) {
		t.Errorf("%s → %s: got %q, want %q", ns.name, raddr, got, want)
	}
}

// blocked asserts that a TCP connection from ns to raddr is silently dropped.
func blocked(t *testing.T, ns *netNS, laddr, raddr string) {
	t.Helper()
	c, got, err := dial(ns, laddr, raddr, silent)
	if err == nil {
		c.Close()
		t.Errorf("%s → %s (from %q) got through: %q", ns.name, raddr, laddr, got)
	} else if !timedOut(err) {
		t.Errorf("%s → %s (from %q): %v, want a timeout (silent drop)", ns.name, raddr, laddr, err)
	}
}

// query sends one UDP datagram from ns and returns the answer.
func query(ns *netNS, raddr string, timeout time.Duration) (string, error) {
	var c net.Conn
	var err error
	if e := ns.do(func() { c, err = net.DialTimeout("udp4", raddr, timeout) }); e != nil {
		return "", e
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := c.Write([]byte("q")); err != nil {
		return "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

func TestPackets(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	serve(t, l.inet, "tcp4", "198.51.100.10:5432", func(c net.Conn) string { return "db " + c.RemoteAddr().String() })
	serve(t, l.inet, "tcp4", "203.0.113.10:80", serveText("direct"))
	serve(t, l.inet, "tcp4", "203.0.113.10:8080", serveText("direct"))
	serve(t, l.inet, "tcp4", "169.254.169.254:80", serveText("metadata"))
	serve(t, l.inet, "tcp4", "169.254.169.254:8080", serveText("metadata"))
	serveUDP(t, l.inet, "203.0.113.10:53", "direct-dns")
	serve(t, l.gw, "tcp4", fmt.Sprintf("0.0.0.0:%d", proxyPort), func(c net.Conn) string { return "redirected " + originalDst(c) })
	serveUDP(t, l.gw, fmt.Sprintf("0.0.0.0:%d", dnsPort), "dns")
	serve(t, l.gw, "tcp4", fmt.Sprintf("0.0.0.0:%d", dnsPort), serveText("dns-tcp"))
	serve(t, l.gw, "tcp", ":8470", func(c net.Conn) string { return "api " + c.RemoteAddr().String() }) // dual stack
	serve(t, l.sbx, "tcp4", "100.96.0.2:7000", serveText("sandbox"))
	l.sbx.ip(t, "addr", "add", "100.96.0.3/29", "dev", "eth0") // a second address, to spoof from

	// Without the firewall, what the firewall must stop gets through: the checks below
	// would pass for a wrong reason if the lab were broken.
	t.Run("control without firewall", func(t *testing.T) {
		reach(t, l.sbx, "", "100.96.0.1:8470", "api")
		reach(t, l.sbx, "100.96.0.3", "100.96.0.1:8470", "api 100.96.0.3:")
		reach(t, l.sbx, "", "[fe80::1%eth0]:8470", "api")
		reach(t, l.inet, "", fmt.Sprintf("198.18.0.2:%d", proxyPort), "redirected")
		reach(t, l.inet, "", "100.96.0.2:7000", "sandbox")
		reach(t, l.gw, "", "169.254.169.254:8080", "metadata")
	})

	fw := l.gw.firewall()
	if err := fw.Apply(labState("198.51.100.0/24", "169.254.0.0/16")); err != nil {
		t.Fatal(err)
	}

	t.Run("allowed cidr is forwarded and masqueraded", func(t *testing.T) {
		reach(t, l.sbx, "", "198.51.100.10:5432", "db 198.18.0.2:")
	})
	t.Run("web is redirected to the proxy", func(t *testing.T) {
		reach(t, l.sbx, "", "203.0.113.10:80", "redirected 203.0.113.10:80")
		reach(t, l.sbx, "", "203.0.113.10:443", "redirected 203.0.113.10:443")
		// inside allowed_cidrs too: the proxy judges the names seen there
		reach(t, l.sbx, "", "198.51.100.10:443", "redirected 198.51.100.10:443")
	})
	t.Run("other ports to the internet are dropped", func(t *testing.T) {
		blocked(t, l.sbx, "", "203.0.113.10:8080")
	})
	t.Run("DNS to any address goes to the DNS filter", func(t *testing.T) {
		for _, to := range []string{"203.0.113.10:53", "198.51.100.10:53", "100.96.0.1:53", "169.254.169.254:53"} {
			if got, err := query(l.sbx, to, ok); err != nil || got != "dns" {
				t.Errorf("udp %s: %q %v, want the DNS filter", to, got, err)
			}
		}
		reach(t, l.sbx, "", "203.0.113.10:53", "dns-tcp")
	})
	t.Run("metadata is never forwarded", func(t *testing.T) {
		blocked(t, l.sbx, "", "169.254.169.254:8080") // although 169.254.0.0/16 is in Allowed
		blocked(t, l.sbx, "", "169.254.169.254:80")   // and not redirected either
	})
	t.Run("the gateway's other ports are unreachable", func(t *testing.T) {
		blocked(t, l.sbx, "", "100.96.0.1:8470")
		blocked(t, l.sbx, "", "198.18.0.2:8470")
		blocked(t, l.sbx, "", "100.96.0.1:22")
	})
	t.Run("spoofed source is dropped", func(t *testing.T) {
		blocked(t, l.sbx, "100.96.0.3", "198.51.100.10:5432")
		blocked(t, l.sbx, "100.96.0.3", fmt.Sprintf("100.96.0.1:%d", proxyPort))
		blocked(t, l.sbx, "100.96.0.3", "203.0.113.10:443")
	})
	t.Run("IPv6 from the sandbox is dropped", func(t *testing.T) {
		blocked(t, l.sbx, "", "[fe80::1%eth0]:8470")
	})
	t.Run("transparent listeners refuse other interfaces", func(t *testing.T) {
		blocked(t, l.inet, "", fmt.Sprintf("198.18.0.2:%d", proxyPort))
		if got, err := query(l.inet, fmt.Sprintf("198.18.0.2:%d", dnsPort), silent); !timedOut(err) {
			t.Errorf("udp DNS port from the uplink: %q %v", got, err)
		}
	})
	t.Run("nothing new reaches the sandbox", func(t *testing.T) {
		blocked(t, l.inet, "", "100.96.0.2:7000")
	})

	t.Run("a tightened policy cuts new and established flows", func(t *testing.T) {
		db, _, err := dial(l.sbx, "", "198.51.100.10:5432", ok)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		web, _, err := dial(l.sbx, "", "203.0.113.10:443", ok)
		if err != nil {
			t.Fatal(err)
		}
		defer web.Close()
		if err := db.echo("before", ok); err != nil {
			t.Fatal(err)
		}
		if err := fw.Apply(labState()); err != nil {
			t.Fatal(err)
		}
		blocked(t, l.sbx, "", "198.51.100.10:5432")
		// The forward rule checks the destination of every packet, not only the first.
		if err := db.echo("after", silent); !timedOut(err) {
			t.Errorf("established flow to a no longer allowed destination: %v, want a timeout", err)
		}
		n, err := FlushConntrack(ip("100.96.0.2"), nil, WithNetNSFd(int(l.gw.h)))
		if err != nil || n < 1 {
			t.Fatalf("FlushConntrack: %d, %v", n, err)
		}
		h, err := netlink.NewHandleAt(l.gw.h, unix.NETLINK_NETFILTER)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		flows, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range flows {
			if f.Forward.DstIP.Equal(net.ParseIP("198.51.100.10")) && f.Forward.DstPort == 5432 {
				t.Errorf("conntrack still has %s", f)
			}
		}
		// The redirected connection is the proxy's business: its entry is kept.
		if err := web.echo("still proxied", ok); err != nil {
			t.Errorf("redirected connection after FlushConntrack: %v", err)
		}
	})

	t.Run("root in the sandbox cannot change the gateway's rules", func(t *testing.T) {
		before := l.gw.dump(t)
		l.sbx.exec(t, "nft", "flush", "ruleset")
		l.sbx.nftInput(t, "table inet egressd {\n chain forward {\n  type filter hook forward priority -500; policy accept;\n }\n}\n")
		if !strings.Contains(l.sbx.exec(t, "nft", "list", "tables"), "egressd") {
			t.Error("sandbox-side table not created (the check would be vacuous)")
		}
		if after := l.gw.dump(t); after != before {
			t.Errorf("gateway table changed:\n%s", after)
		}
		blocked(t, l.sbx, "", "198.51.100.10:5432")
		blocked(t, l.sbx, "100.96.0.3", "203.0.113.10:443")
		reach(t, l.sbx, "", "203.0.113.10:80", "redirected")
	})

	t.Run("loosening again opens new flows", func(t *testing.T) {
		if err := fw.Apply(labState("198.51.100.10/32")); err != nil {
			t.Fatal(err)
		}
		reach(t, l.sbx, "", "198.51.100.10:5432", "db 198.18.0.2:")
	})

	t.Run("an interface egressd does not know yet fails closed", func(t *testing.T) {
		if err := fw.Apply(Desired{IfacePrefix: "eg", ProxyPort: proxyPort, DNSPort: dnsPort}); err != nil {
			t.Fatal(err)
		}
		blocked(t, l.sbx, "", "100.96.0.1:8470")
		blocked(t, l.sbx, "", "198.51.100.10:5432")
		if got, err := query(l.sbx, "203.0.113.10:53", silent); !timedOut(err) {
			t.Errorf("udp 53 from an unknown sandbox interface: %q %v", got, err)
		}
	})
}
