package dnsfilter

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// fakeWriter is a dns.ResponseWriter that keeps what is written.
type fakeWriter struct {
	remote net.Addr
	msg    *dns.Msg
	wire   []byte
	err    error
}

func (w *fakeWriter) LocalAddr() net.Addr  { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (w *fakeWriter) RemoteAddr() net.Addr { return w.remote }
func (w *fakeWriter) WriteMsg(m *dns.Msg) error {
	w.msg = m
	w.wire, w.err = m.Pack()
	return w.err
}
func (w *fakeWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *fakeWriter) Close() error                { return nil }
func (w *fakeWriter) TsigStatus() error           { return nil }
func (w *fakeWriter) TsigTimersOnly(bool)         {}
func (w *fakeWriter) Hijack()                     {}

// fuzzSeeds are queries worth mutating.
func fuzzSeeds() [][]byte {
	var out [][]byte
	add := func(m *dns.Msg) {
		b, err := m.Pack()
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	for _, name := range []string{"www.example.test", "evil.test", "bad.example.test", "x.secret.example.test",
		randomLabel(63) + ".exfil.test", "a_b.example.test", "WWW.EXAMPLE.TEST", "internal.corp.test"} {
		for _, t := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeTXT, dns.TypeHTTPS, dns.TypeANY} {
			add(query(name, t, false))
			add(query(name, t, true))
		}
	}
	two := query("www.example.test", dns.TypeA, true)
	two.Question = append(two.Question, dns.Question{Name: "evil.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	add(two)
	ch := query("www.example.test", dns.TypeA, false)
	ch.Question[0].Qclass = dns.ClassCHAOS
	add(ch)
	n := query("www.example.test", dns.TypeA, false)
	n.Opcode = dns.OpcodeNotify
	add(n)
	return out
}

// FuzzServeDNS feeds wire messages to the handler, over "UDP" and "TCP", in front of an
// upstream that answers every name with public and non-public addresses. It checks that the
// handler never panics, always answers a query with a message that packs (within the
// client's UDP size), never forwards a question the policy refuses (nor another type than A
// and AAAA, nor another name than the one asked, normalised), and never hands out an address
// that KeepAnswer refuses, a record other than CNAME, A and AAAA, or a TTL over MaxTTL.
func FuzzServeDNS(f *testing.F) {
	set := mkSet(f, basePolicy)
	e := newEnv(f, set, func(s *Server) { s.Sink = events.Discard })
	e.up.mu.Lock()
	e.up.wild = true
	e.up.mu.Unlock()
	for _, b := range fuzzSeeds() {
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, tcp bool) {
		req := new(dns.Msg)
		if err := req.Unpack(data); err != nil || req.Response {
			return // miekg/dns drops or answers these before the handler
		}
		w := &fakeWriter{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}}
		if tcp {
			w.remote = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}
		}
		before := len(e.up.queries())
		e.srv.ServeDNS(w, req)
		if w.msg == nil || w.err != nil {
			t.Fatalf("no answer, or it does not pack: %v", w.err)
		}
		if !tcp && len(w.wire) > udpSize(req) {
			t.Fatalf("UDP answer of %d bytes, client takes %d", len(w.wire), udpSize(req))
		}
		if w.msg.Id != req.Id || !w.msg.Response {
			t.Fatalf("header %v", w.msg.MsgHdr)
		}
		sent := e.up.queries()[before:]
		if len(sent) > 2 {
			t.Fatalf("%d upstream queries for one question", len(sent))
		}
		for _, q := range sent {
			name := strings.TrimSuffix(q.Name, ".")
			if len(req.Question) != 1 {
				t.Fatalf("forwarded %q for a message of %d questions", q.Name, len(req.Question))
			}
			if want, err := policy.NormalizeName(req.Question[0].Name); err != nil || want != name || q.Type != req.Question[0].Qtype {
				t.Fatalf("forwarded %q %d for the question %v", q.Name, q.Type, req.Question[0])
			}
			if q.Type != dns.TypeA && q.Type != dns.TypeAAAA {
				t.Fatalf("forwarded type %d", q.Type)
			}
			if d := set.DecideQuery(policy.Query{Name: name, Type: q.Type}); !d.Allow {
				t.Fatalf("forwarded %q, which the policy refuses: %+v", name, d)
			}
		}
		checkAnswer(t, w.msg.Answer, set, 300)
		if len(w.msg.Ns) != 0 {
			t.Fatalf("authority section %v", w.msg.Ns)
		}
		for _, rr := range w.msg.Extra {
			if rr.Header().Rrtype != dns.TypeOPT {
				t.Fatalf("additional %v", rr)
			}
		}
	})
}

// FuzzFilterAnswer feeds upstream answers to the answer filter.
func FuzzFilterAnswer(f *testing.F) {
	set := mkSet(f, basePolicy)
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m := query("www.example.test", t, true)
		m.Response = true
		for _, l := range wildAnswer("www.example.test.", t) {
			m.Answer = append(m.Answer, mustRR(l))
		}
		m.Ns = append(m.Ns, mustRR("example.test. 60 IN NS ns.example.test."))
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, t == dns.TypeAAAA)
	}
	f.Fuzz(func(t *testing.T, data []byte, aaaa bool) {
		resp := new(dns.Msg)
		if resp.Unpack(data) != nil {
			return
		}
		qtype := dns.TypeA
		if aaaa {
			qtype = dns.TypeAAAA
		}
		ans := filterAnswer(resp, "www.example.test.", qtype, set, 300)
		checkAnswer(t, ans.records, set, 300)
		if ans.first.IsValid() && !set.KeepAnswer(ans.first) {
			t.Fatalf("first address %v", ans.first)
		}
	})
}

// checkAnswer checks what a sandbox is given: CNAMEs (at most maxChain), and addresses that
// KeepAnswer admits, with TTLs of at most maxTTL.
func checkAnswer(t *testing.T, rrs []dns.RR, set *policy.Effective, maxTTL uint32) {
	t.Helper()
	cnames := 0
	for _, rr := range rrs {
		if rr.Header().Ttl > maxTTL {
			t.Fatalf("TTL of %v", rr)
		}
		var a netip.Addr
		switch r := rr.(type) {
		case *dns.CNAME:
			cnames++
			continue
		case *dns.A:
			a, _ = netip.AddrFromSlice(r.A)
		case *dns.AAAA:
			a, _ = netip.AddrFromSlice(r.AAAA)
		default:
			t.Fatalf("record %v given to the sandbox", rr)
		}
		if !set.KeepAnswer(a) {
			t.Fatalf("address %v given to the sandbox", a)
		}
	}
	if cnames > maxChain {
		t.Fatalf("%d CNAMEs", cnames)
	}
}
