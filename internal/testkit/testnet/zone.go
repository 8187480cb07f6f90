package testnet

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// Zone is a DNS server on 127.0.0.1 answering from a table in zone-file syntax, over UDP and
// TCP, following CNAMEs within the table. It counts the queries it receives.
type Zone struct {
	Addr    string
	mu      sync.Mutex
	records map[string][]dns.RR // by lower-case FQDN
	Queries atomic.Int64
	// TruncateUDP answers every UDP query with TC set and no records.
	TruncateUDP atomic.Bool
}

// StartZone serves an empty zone until the test ends.
func StartZone(t testing.TB) *Zone {
	t.Helper()
	z := &Zone{records: make(map[string][]dns.RR)}
	// A UDP port whose TCP twin is free too: another test's connection may hold it, so
	// try a few.
	var pc net.PacketConn
	var ln net.Listener
	for i := 0; ; i++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if i == 20 {
			t.Fatalf("no port free for DNS over both UDP and TCP: %v", err)
		}
	}
	z.Addr = pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: z}
	tcp := &dns.Server{Listener: ln, Handler: z}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })
	return z
}

// Add adds records in zone-file syntax: "a.test. 60 IN A 127.0.0.43".
func (z *Zone) Add(t testing.TB, lines ...string) {
	t.Helper()
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.ToLower(rr.Header().Name)
		z.records[name] = append(z.records[name], rr)
	}
}

// ServeDNS answers from the table.
func (z *Zone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	z.Queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(req)
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp && z.TruncateUDP.Load() {
		m.Truncated = true
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	z.mu.Lock()
	defer z.mu.Unlock()
	name, found := strings.ToLower(q.Name), false
	for range 10 {
		rrs, ok := z.records[name]
		if !ok {
			break
		}
		found = true
		next := ""
		for _, rr := range rrs {
			switch r := rr.(type) {
			case *dns.CNAME:
				m.Answer = append(m.Answer, rr)
				next = strings.ToLower(r.Target)
			default:
				if rr.Header().Rrtype == q.Qtype {
					m.Answer = append(m.Answer, rr)
				}
			}
		}
		if next == "" {
			break
		}
		name = next
	}
	if !found {
		m.Rcode = dns.RcodeNameError
	}
	w.WriteMsg(m)
}
