package dnsfilter

import (
	"net"
	"testing"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dataplane/events"
)

// benchExchange sends m to addr over network, b.N times on one client socket, and checks
// the RCODE. A TCP connection is redialled every 100 queries: miekg/dns's server closes
// one after 128 (MaxTCPQueries).
func benchExchange(b *testing.B, network, addr string, m *dns.Msg, rcode int) {
	c := &dns.Client{Net: network}
	var co *dns.Conn
	defer func() {
		if co != nil {
			co.Close()
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if co == nil || (network == "tcp" && i%100 == 0) {
			if co != nil {
				co.Close()
			}
			var err error
			if co, err = c.Dial(addr); err != nil {
				b.Fatal(err)
			}
		}
		r, _, err := c.ExchangeWithConn(m, co)
		if err != nil {
			b.Fatal(err)
		}
		if r.Rcode != rcode {
			b.Fatalf("rcode %s", dns.RcodeToString[r.Rcode])
		}
	}
}

func benchEnv(b *testing.B) *env {
	return newEnv(b, mkSet(b, basePolicy), func(s *Server) { s.Sink = events.Discard })
}

// BenchmarkUpstreamDirect is the baseline: a client asking the fake upstream itself.
func BenchmarkUpstreamDirect(b *testing.B) {
	e := benchEnv(b)
	benchExchange(b, "udp", e.up.addr, query("www.example.test", dns.TypeA, true), dns.RcodeSuccess)
}

// BenchmarkForwardedUDP: an allowed name, asked through the filter, which forwards it over
// loopback and filters the answer.
func BenchmarkForwardedUDP(b *testing.B) {
	e := benchEnv(b)
	benchExchange(b, "udp", e.udp, query("www.example.test", dns.TypeA, true), dns.RcodeSuccess)
}

// BenchmarkForwardedTCP: the same on one kept TCP connection.
func BenchmarkForwardedTCP(b *testing.B) {
	e := benchEnv(b)
	benchExchange(b, "tcp", e.tcp, query("www.example.test", dns.TypeA, true), dns.RcodeSuccess)
}

// BenchmarkRefusedUDP: a name the policy refuses, answered without the upstream.
func BenchmarkRefusedUDP(b *testing.B) {
	e := benchEnv(b)
	benchExchange(b, "udp", e.udp, query("evil.test", dns.TypeA, true), dns.RcodeRefused)
}

// BenchmarkForwardedUDPParallel: throughput with many clients at once.
func BenchmarkForwardedUDPParallel(b *testing.B) {
	e := benchEnv(b)
	m := query("www.example.test", dns.TypeA, true)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		c := &dns.Client{Net: "udp"}
		co, err := c.Dial(e.udp)
		if err != nil {
			b.Error(err)
			return
		}
		defer co.Close()
		for pb.Next() {
			r, _, err := c.ExchangeWithConn(m.Copy(), co)
			if err != nil || r.Rcode != dns.RcodeSuccess {
				b.Errorf("%v %v", err, r)
				return
			}
		}
	})
}

// BenchmarkHandleRefused: the handler alone, no network, for a refused query.
func BenchmarkHandleRefused(b *testing.B) {
	e := benchEnv(b)
	m := query("evil.test", dns.TypeA, true)
	w := &fakeWriter{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}}
	b.ReportAllocs()
	for range b.N {
		e.srv.ServeDNS(w, m)
	}
}
