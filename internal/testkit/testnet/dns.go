package testnet

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DNS is an authoritative server for the names a test sets, over UDP and TCP on one address.
// Unknown names answer NXDOMAIN. It counts every query it receives, so that a test can show
// that a query was never forwarded to it.
type DNS struct {
	Addr string // host:port

	mu      sync.Mutex
	records map[string][]netip.Addr
	queries []string // "name type"
}

// StartDNS listens on ip:0 (UDP and TCP, the same port) and serves until the test ends.
func StartDNS(t testing.TB, ip string) *DNS { return StartDNSOn(t, Loopback, ip, 0) }

// StartDNSOn listens on ip:port of n (UDP and TCP; port 0 finds one free for both).
func StartDNSOn(t testing.TB, n Net, ip string, port int) *DNS {
	t.Helper()
	d := &DNS{records: make(map[string][]netip.Addr)}
	var pc net.PacketConn
	var ln net.Listener
	for i := 0; i < 20; i++ {
		var err error
		if pc, err = n.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port))); err != nil {
			t.Fatal(err)
		}
		p := pc.LocalAddr().(*net.UDPAddr).Port
		if ln, err = n.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p))); err == nil {
			break
		}
		pc.Close()
		pc = nil
		if port != 0 {
			t.Fatalf("testnet: DNS on %s:%d over TCP: %v", ip, port, err)
		}
	}
	if pc == nil {
		t.Fatal("testnet: no port free for DNS over both UDP and TCP")
	}
	d.Addr = pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: d}
	tcp := &dns.Server{Listener: ln, Handler: d}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })
	return d
}

// Set makes name answer with addrs (A for IPv4, AAAA for IPv6).
func (d *DNS) Set(name string, addrs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	list := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		list[i] = netip.MustParseAddr(a)
	}
	d.records[dns.Fqdn(strings.ToLower(name))] = list
}

// Queries returns the queries received so far, as "name type".
func (d *DNS) Queries() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.queries...)
}

// ServeDNS answers from the records.
func (d *DNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	d.mu.Lock()
	for _, q := range req.Question {
		d.queries = append(d.queries, strings.TrimSuffix(q.Name, ".")+" "+dns.TypeToString[q.Qtype])
		addrs, ok := d.records[strings.ToLower(q.Name)]
		if !ok {
			m.Rcode = dns.RcodeNameError
			continue
		}
		for _, a := range addrs {
			hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 30}
			switch {
			case q.Qtype == dns.TypeA && a.Is4():
				hdr.Rrtype = dns.TypeA
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
			case q.Qtype == dns.TypeAAAA && a.Is6():
				hdr.Rrtype = dns.TypeAAAA
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
			}
		}
	}
	d.mu.Unlock()
	_ = w.WriteMsg(m)
}
