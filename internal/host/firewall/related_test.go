package firewall

import (
	"bytes"
	"encoding/binary"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// secondSandbox gives the lab's "other" sandbox of tcpState (100.96.0.10, interface
// egother) a namespace of its own, so that two sandboxes share the gateway.
func secondSandbox(t *testing.T, l *lab) *netNS {
	t.Helper()
	b := newNetNS(t, "sbx2")
	b.ip(t, "link", "add", "eth0", "type", "veth", "peer", "name", "egother", "netns", l.gw.name)
	b.ip(t, "addr", "add", "100.96.0.10/29", "dev", "eth0")
	b.ip(t, "link", "set", "eth0", "up")
	b.ip(t, "route", "add", "default", "via", "100.96.0.9")
	l.gw.ip(t, "addr", "add", "100.96.0.9/29", "dev", "egother")
	l.gw.ip(t, "link", "set", "egother", "up")
	return b
}

// icmpError is an ICMP port-unreachable from src to dst quoting a packet inner (an IP
// header and the first bytes of its TCP header), followed by payload: what a host sends
// back about a packet it could not take, and what conntrack relates to the connection
// the quoted packet belongs to.
func icmpError(src, dst [4]byte, inner, payload []byte) []byte {
	m := append([]byte{3, 3, 0, 0, 0, 0, 0, 0}, inner...)
	// NAT rewrites the quoted TCP header's checksum (its bytes 16 and 17), past the 8
	// quoted bytes: padding keeps the payload whole.
	m = append(m, make([]byte, 12)...)
	m = append(m, payload...)
	binary.BigEndian.PutUint16(m[2:], checksum(m))
	h := ipHeader(src, dst, len(m))
	h[9] = unix.IPPROTO_ICMP
	return append(h, m...)
}

// checksum is the Internet checksum of b (probe.go's onesSum, complemented).
func checksum(b []byte) uint16 { return ^onesSum(0, b) }

// sendRaw sends one IPv4 packet (header included) from ns.
func sendRaw(t *testing.T, ns *netNS, dst [4]byte, pkt []byte) {
	t.Helper()
	err := ns.do(func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: dst}); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Error(err)
	}
}

// receivedICMP runs fn while reading the ICMP messages ns receives, and reports whether
// one carried mark in its body.
func receivedICMP(t *testing.T, ns *netNS, mark []byte, fn func()) bool {
	t.Helper()
	var fd int
	var err error
	if e := ns.do(func() { fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP) }); e != nil || err != nil {
		t.Fatalf("raw socket in %s: %v %v", ns.name, e, err)
	}
	defer unix.Close(fd)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000})
	fn()
	buf := make([]byte, 1500)
	for i := 0; i < 10; i++ { // bounded: 10 messages or 200 ms of silence
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return false
		}
		if bytes.Contains(buf[:n], mark) {
			return true
		}
	}
	return false
}

// TestRelatedICMPOfAnotherSandboxsFlow: conntrack relates an ICMP error to the
// connection its quoted packet belongs to, by the quote alone (the outer source is not
// checked against the connection). A sandbox that quotes another sandbox's allowed_tcp
// connection (marked) must not get its ICMP (and whatever it carries) past the forward
// chain to that connection's destination, which its own policy does not open. The same
// kind of message quoting its own allowed_cidrs connection passes (the check is not
// vacuous).
func TestRelatedICMPOfAnotherSandboxsFlow(t *testing.T) {
	t.Parallel()
	l, fw := tcpLab(t)
	b := secondSandbox(t, l)
	if err := fw.Admit("other", []Endpoint{ep("203.0.113.10", 2222, time.Minute)}); err != nil {
		t.Fatal(err)
	}
	bc, _, err := dial(b, "", "203.0.113.10:2222", ok)
	if err != nil {
		t.Fatalf("the other sandbox's admitted connection: %v", err)
	}
	defer bc.Close()
	_, bport, _ := net.SplitHostPort(bc.LocalAddr().String())
	port, _ := strconv.Atoi(bport)

	server := ip("203.0.113.10").As4()
	quote := func(sbx [4]byte, sport, dport uint16) []byte {
		h := ipHeader(server, sbx, 20)
		binary.BigEndian.PutUint16(h[10:], checksum(h))
		return append(h, tcpSegment(server, sbx, sport, dport, tcpACK)[:8]...)
	}
	a, other := ip("100.96.0.2").As4(), ip("100.96.0.10").As4()
	mark := []byte("exfiltrated by the lab sandbox")
	if receivedICMP(t, l.inet, mark, func() {
		sendRaw(t, l.sbx, server, icmpError(a, server, quote(other, 2222, uint16(port)), mark))
	}) {
		t.Error("an ICMP error from the lab sandbox quoting the other sandbox's connection reached its destination")
	}
	if err := bc.echo("still up", ok); err != nil {
		t.Errorf("the other sandbox's connection: %v", err)
	}

	// The same message about a connection of its own to allowed_cidrs passes (the allow
	// rule judges its destination): the message above was judged, not malformed.
	ac, _, err := dial(l.sbx, "", "198.51.100.10:5432", ok)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	_, aport, _ := net.SplitHostPort(ac.LocalAddr().String())
	port, _ = strconv.Atoi(aport)
	db := ip("198.51.100.10").As4()
	quoteDB := func(sport, dport uint16) []byte {
		h := ipHeader(db, a, 20)
		binary.BigEndian.PutUint16(h[10:], checksum(h))
		return append(h, tcpSegment(db, a, sport, dport, tcpACK)[:8]...)
	}
	own := []byte("about its own connection")
	if !receivedICMP(t, l.inet, own, func() {
		sendRaw(t, l.sbx, db, icmpError(a, db, quoteDB(5432, uint16(port)), own))
	}) {
		t.Error("an ICMP error about the sandbox's own allowed_cidrs connection did not pass")
	}
}

// UDP to an admitted (address, port) is not TCP: the set opens TCP only, whatever the
// datagram's bytes (one whose byte at the TCP flags' offset reads SYN included).
func TestAllowedTCPIsNotUDP(t *testing.T) {
	t.Parallel()
	l, fw := tcpLab(t)
	serveUDP(t, l.inet, "203.0.113.10:5353", "udp answer")
	if err := fw.Admit("egressd-lab", []Endpoint{ep("203.0.113.10", 5353, time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if got, err := query(l.sbx, "203.0.113.10:5353", silent); err == nil {
		t.Errorf("UDP to an admitted TCP endpoint answered %q", got)
	}
	// A datagram whose 6th payload byte (offset 13 of the transport header) is 0x02.
	var got string
	if e := l.sbx.do(func() {
		c, err := net.DialTimeout("udp4", "203.0.113.10:5353", silent)
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write([]byte{'q', 'q', 'q', 'q', 'q', 0x02, 'q', 'q'})
		_ = c.SetReadDeadline(time.Now().Add(silent))
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		got = string(buf[:n])
	}); e != nil {
		t.Fatal(e)
	}
	if got != "" {
		t.Errorf("a datagram shaped like a SYN got %q", got)
	}
}

// TestRelatedICMPToTheGateway: the same trick aimed at the gateway itself. Another
// sandbox's web connection is DNATed to the gateway's proxy, and an ICMP error quoting
// it is related to that connection and DNATed with it: a sandbox that sends "fragmentation
// needed" about it must not lower the path MTU the gateway uses towards the other
// sandbox (nor reach the gateway's stack with anything else that way). Before the input
// chain accepted established packets only, it did.
func TestRelatedICMPToTheGateway(t *testing.T) {
	t.Parallel()
	l, _ := tcpLab(t)
	b := secondSandbox(t, l)
	serve(t, l.gw, "tcp4", "100.96.0.9:15001", serveText("proxy"))
	bc, _, err := dial(b, "", "203.0.113.10:443", ok)
	if err != nil {
		t.Fatalf("the other sandbox's web connection: %v", err)
	}
	defer bc.Close()
	_, bport, _ := net.SplitHostPort(bc.LocalAddr().String())
	port, _ := strconv.Atoi(bport)

	server, a, other := ip("203.0.113.10").As4(), ip("100.96.0.2").As4(), ip("100.96.0.10").As4()
	h := ipHeader(server, other, 1400)
	binary.BigEndian.PutUint16(h[10:], checksum(h))
	quote := append(h, tcpSegment(server, other, 443, uint16(port), tcpACK)[:8]...)
	msg := icmpError(a, server, quote, nil)
	// Type 3 code 4, fragmentation needed, next-hop MTU 576.
	icmp := msg[20:]
	icmp[1] = 4
	binary.BigEndian.PutUint16(icmp[6:], 576)
	icmp[2], icmp[3] = 0, 0
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp))
	// The gateway's TCP stack counts each ICMP error it looks at for a connection whose
	// quoted sequence number is not in flight (the quote's is made up).
	icmpsToTCP := func() int {
		f := strings.Fields(l.gw.exec(t, "nstat", "-asz", "TcpExtOutOfWindowIcmps"))
		if len(f) < 3 || f[1] != "TcpExtOutOfWindowIcmps" {
			t.Fatalf("nstat: %q", f)
		}
		n, err := strconv.Atoi(f[2])
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := icmpsToTCP()
	sendRaw(t, l.sbx, server, msg)
	time.Sleep(200 * time.Millisecond) // a drop leaves no trace to wait for
	if after := icmpsToTCP(); after != before {
		t.Errorf("the lab sandbox's ICMP error about the other sandbox's proxied connection reached the gateway's TCP stack (%d → %d)", before, after)
	}
}
