package dnsfilter

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/resolve"
	"github.com/egressd/egressd/policy"
)

// randomLabel is n random LDH bytes, as a tunnelling tool would encode data.
func randomLabel(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// TestQueries is the filter's behaviour, query by query, over UDP with and without EDNS:
// the answer, whether the upstream was asked, and the record.
func TestQueries(t *testing.T) {
	long := randomLabel(63) + "." + randomLabel(63) + ".exfil.test"
	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		rcode   int
		answer  []string // "TYPE data"; nil: none
		ede     uint16   // expected EDE code when the client sent EDNS; 0xffff: none
		forward bool     // the upstream was asked
		reason  policy.Reason
	}{
		{"allowed A", "www.example.test", dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.2"}, 0xffff, true, policy.ReasonAllowedDomains},
		{"allowed AAAA", "www.example.test", dns.TypeAAAA, dns.RcodeSuccess, []string{"AAAA 2001:db8:1::2"}, 0xffff, true, policy.ReasonAllowedDomains},
		{"upper case", "WWW.Example.TEST", dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.2"}, 0xffff, true, policy.ReasonAllowedDomains},
		{"not allowed", "evil.test", dns.TypeA, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonNameNotListed},
		{"apex of wildcard", "example.test", dns.TypeA, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonNameNotListed},
		{"denied beats allowed", "bad.example.test", dns.TypeA, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonDeniedDomain},
		{"denied entry is exact", "x.bad.example.test", dns.TypeA, dns.RcodeNameError, nil, 0xffff, true, policy.ReasonAllowedDomains},
		{"denied wildcard", "x.y.secret.example.test", dns.TypeAAAA, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonDeniedDomain},
		{"TXT", "www.example.test", dns.TypeTXT, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonQueryType},
		{"HTTPS", "www.example.test", dns.TypeHTTPS, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonQueryType},
		{"SVCB", "www.example.test", dns.TypeSVCB, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonQueryType},
		{"MX", "www.example.test", dns.TypeMX, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonQueryType},
		{"ANY", "www.example.test", dns.TypeANY, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonQueryType},
		{"NULL", "www.example.test", dns.TypeNULL, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonQueryType},
		{"CNAME", "alias.example.test", dns.TypeCNAME, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonQueryType},
		{"PTR", "2.0.0.127.in-addr.arpa", dns.TypePTR, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonQueryType},
		{"TXT of an invalid name", "_dmarc.example.test", dns.TypeTXT, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonQueryType},
		{"long labels, domain not allowed", long, dns.TypeA, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonNameNotListed},
		{"long labels, TXT", long, dns.TypeTXT, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonQueryType},
		// Tunnelling through an allowed wildcard is the operator's choice: the name is valid
		// and allowed, so it is forwarded (and the upstream answers NXDOMAIN).
		{"long label under allowed wildcard", randomLabel(63) + ".example.test", dns.TypeA, dns.RcodeNameError, nil, 0xffff, true, policy.ReasonAllowedDomains},
		{"underscore", "a_b.example.test", dns.TypeA, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonBadName},
		{"253-byte name", strings.Repeat(randomLabel(63)+".", 3) + randomLabel(48) + ".example.test", dns.TypeA, dns.RcodeNameError, nil, 0xffff, true, policy.ReasonAllowedDomains},
		{"escaped dot", `a\.b.example.test`, dns.TypeA, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonBadName},
		{"binary label", `\000\255.example.test`, dns.TypeA, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonBadName},
		{"bad punycode", "xn--a.example.test", dns.TypeA, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonBadName},
		{"IP literal", "127.0.0.2", dns.TypeA, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonBadName},
		{"root", ".", dns.TypeA, dns.RcodeRefused, nil, dns.ExtendedErrorCodeBlocked, false, policy.ReasonBadName},
		{"rebinding stripped: NODATA", "rebind.example.test", dns.TypeA, dns.RcodeSuccess, nil, dns.ExtendedErrorCodeFiltered, true, policy.ReasonAllowedDomains},
		{"mixed A: public kept", "mixed.example.test", dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.2"}, dns.ExtendedErrorCodeFiltered, true, policy.ReasonAllowedDomains},
		{"mixed AAAA: public kept", "mixed.example.test", dns.TypeAAAA, dns.RcodeSuccess, []string{"AAAA 2001:db8:1::3"}, dns.ExtendedErrorCodeFiltered, true, policy.ReasonAllowedDomains},
		{"allowed_cidrs keeps a private answer", "internal.corp.test", dns.TypeA, dns.RcodeSuccess, []string{"A 198.51.100.7"}, 0xffff, true, policy.ReasonAllowedDomains},
		{"CNAME chain", "alias.example.test", dns.TypeA, dns.RcodeSuccess, []string{"CNAME edge.cdn.test.", "CNAME edge2.cdn.test.", "A 127.0.0.3"}, 0xffff, true, policy.ReasonAllowedDomains},
		{"CNAME loop cut", "loop.example.test", dns.TypeA, dns.RcodeSuccess, []string{"CNAME loop2.example.test."}, 0xffff, true, policy.ReasonAllowedDomains},
		{"NXDOMAIN", "gone.example.test", dns.TypeA, dns.RcodeNameError, nil, 0xffff, true, policy.ReasonAllowedDomains},
		{"NODATA from upstream", "v6only.example.test", dns.TypeA, dns.RcodeSuccess, nil, 0xffff, true, policy.ReasonAllowedDomains},
		{"upstream REFUSED is SERVFAIL", "refused.example.test", dns.TypeA, dns.RcodeServerFailure, nil, dns.ExtendedErrorCodeOther, true, policy.ReasonAllowedDomains},
		{"upstream SERVFAIL", "servfail.example.test", dns.TypeA, dns.RcodeServerFailure, nil, dns.ExtendedErrorCodeOther, true, policy.ReasonAllowedDomains},
	}
	e := newEnv(t, mkSet(t, basePolicy))
	for _, tt := range tests {
		for _, edns := range []bool{false, true} {
			t.Run(tt.name+map[bool]string{false: "", true: "/edns"}[edns], func(t *testing.T) {
				e.t = t
				before := len(e.up.queries())
				m := query(tt.qname, tt.qtype, edns)
				r, rec := e.ask("udp", m)
				if r.Rcode != tt.rcode {
					t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
				}
				if got := answerStrings(r); !slices.Equal(got, tt.answer) {
					t.Errorf("answer %q, want %q", got, tt.answer)
				}
				if len(r.Ns) != 0 {
					t.Errorf("authority section %v, want none", r.Ns)
				}
				for _, rr := range r.Extra {
					if rr.Header().Rrtype != dns.TypeOPT {
						t.Errorf("additional record %v, want only OPT", rr)
					}
				}
				if r.Id != m.Id || len(r.Question) != 1 || r.Question[0] != m.Question[0] || !r.RecursionAvailable {
					t.Errorf("header or question not echoed: %v", r.MsgHdr)
				}
				opt := r.IsEdns0()
				if (opt != nil) != edns {
					t.Errorf("OPT in answer: %v, client sent one: %v", opt != nil, edns)
				}
				x, hasEDE := ede(r)
				switch {
				case edns && tt.ede != 0xffff && (!hasEDE || x.InfoCode != tt.ede):
					t.Errorf("EDE %v, want code %d", x, tt.ede)
				case edns && tt.ede == 0xffff && hasEDE:
					t.Errorf("EDE %v, want none", x)
				case hasEDE && !strings.HasPrefix(x.ExtraText, "egressd: "):
					t.Errorf("EDE text %q", x.ExtraText)
				}
				if hasEDE && tt.rcode == dns.RcodeRefused && !strings.Contains(x.ExtraText, string(tt.reason)) {
					t.Errorf("EDE text %q does not give the reason %q", x.ExtraText, tt.reason)
				}
				sent := e.up.queries()[before:]
				if tt.forward != (len(sent) > 0) {
					t.Fatalf("upstream got %d queries (%v), want forwarded=%v", len(sent), sent, tt.forward)
				}
				for _, q := range sent {
					n, err := policy.NormalizeName(q.Name)
					if err != nil || n+"." != q.Name || q.Type != tt.qtype || q.Class != dns.ClassINET {
						t.Errorf("upstream got %q %d class %d; want the normalised question", q.Name, q.Type, q.Class)
					}
				}
				if rec.Reason != tt.reason {
					t.Errorf("record reason %q, want %q", rec.Reason, tt.reason)
				}
				wantDecision := events.Allow
				if tt.rcode == dns.RcodeRefused {
					wantDecision = events.Deny
				}
				if rec.Decision != wantDecision || rec.Kind != events.KindDNS || rec.Transport != "udp" || rec.QType != policy.QTypeString(tt.qtype) {
					t.Errorf("record %+v", rec)
				}
				for _, rr := range r.Answer {
					if rr.Header().Ttl > 300 {
						t.Errorf("TTL %d over 300", rr.Header().Ttl)
					}
				}
			})
		}
	}
}

// TestRecord checks every field of the records of an allowed and a refused query.
func TestRecord(t *testing.T) {
	e := newEnv(t, mkSet(t, basePolicy))
	_, rec := e.ask("udp", query("mixed.example.test", dns.TypeA, false))
	if rec.Time.IsZero() || time.Since(rec.Time) > time.Minute {
		t.Errorf("time %v", rec.Time)
	}
	rec.Time = time.Time{}
	want := events.Record{
		Kind: events.KindDNS, Tenant: "t1", VMID: "vm1", Decision: events.Allow,
		Reason: policy.ReasonAllowedDomains, Message: policy.ReasonAllowedDomains.Message(), Rule: "allowed_domains *.example.test", Layer: "vm", Mode: "enforce",
		Transport: "udp", Host: "mixed.example.test", IP: "127.0.0.2", QType: "A",
	}
	if !reflect.DeepEqual(rec, want) {
		t.Errorf("allowed:\n got %+v\nwant %+v", rec, want)
	}
	_, rec = e.ask("tcp", query("Evil.Test.", dns.TypeAAAA, true))
	rec.Time = time.Time{}
	want = events.Record{
		Kind: events.KindDNS, Tenant: "t1", VMID: "vm1", Decision: events.Deny,
		Reason: policy.ReasonNameNotListed, Message: policy.ReasonNameNotListed.Message(), Rule: "not in allowed_domains", Layer: "vm", Mode: "enforce",
		Transport: "tcp", Host: "evil.test", QType: "AAAA",
	}
	if !reflect.DeepEqual(rec, want) {
		t.Errorf("refused:\n got %+v\nwant %+v", rec, want)
	}
}

// TestOwnerKeepsClientSpelling: a client that randomises the case of its question (0x20)
// gets its own spelling back, in the question and in the owner of the answer.
func TestOwnerKeepsClientSpelling(t *testing.T) {
	e := newEnv(t, mkSet(t, basePolicy))
	r, _ := e.ask("udp", query("wWw.ExAmPlE.tEsT", dns.TypeA, false))
	if len(r.Answer) != 1 || r.Answer[0].Header().Name != "wWw.ExAmPlE.tEsT." {
		t.Fatalf("answer %v", r.Answer)
	}
	if q := e.up.queries(); q[len(q)-1].Name != "www.example.test." {
		t.Errorf("upstream got %q", q[len(q)-1].Name)
	}
}

// TestTTLCapped: TTLs are capped at MaxTTL; one with the top bit set counts as 0.
func TestTTLCapped(t *testing.T) {
	e := newEnv(t, mkSet(t, basePolicy), func(s *Server) { s.MaxTTL = 100 * time.Second })
	r, _ := e.ask("udp", query("ttl.example.test", dns.TypeA, false))
	var ttls []uint32
	for _, rr := range r.Answer {
		ttls = append(ttls, rr.Header().Ttl)
	}
	if !slices.Equal(ttls, []uint32{100, 0, 7}) {
		t.Errorf("TTLs %v, want [100 0 7]", ttls)
	}
}

// TestWithoutCIDRs: the same private answer is stripped when allowed_cidrs does not hold it.
func TestWithoutCIDRs(t *testing.T) {
	p := basePolicy
	p.AllowedCIDRs = nil
	e := newEnv(t, mkSet(t, p))
	r, rec := e.ask("udp", query("internal.corp.test", dns.TypeA, true))
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("%s %v, want NODATA", dns.RcodeToString[r.Rcode], r.Answer)
	}
	if x, ok := ede(r); !ok || x.InfoCode != dns.ExtendedErrorCodeFiltered {
		t.Errorf("EDE %v, want Filtered", x)
	}
	if rec.Decision != events.Allow || rec.IP != "" {
		t.Errorf("record %+v", rec)
	}
}

// TestUnknownSource: a source that no sandbox has is refused, never forwarded.
func TestUnknownSource(t *testing.T) {
	e := newEnv(t, mkSet(t, basePolicy))
	e.known.Store(false)
	r, rec := e.ask("udp", query("www.example.test", dns.TypeA, true))
	if r.Rcode != dns.RcodeRefused {
		t.Fatalf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	if x, ok := ede(r); !ok || x.InfoCode != dns.ExtendedErrorCodeProhibited {
		t.Errorf("EDE %v, want Prohibited", x)
	}
	if rec.Decision != events.Deny || rec.Layer != "hard" || rec.Reason != policy.ReasonUnknownSandbox ||
		rec.Rule != "no sandbox has the source address 127.0.0.1" || rec.Tenant != "" || rec.VMID != "" {
		t.Errorf("record %+v", rec)
	}
	if n := len(e.up.queries()); n != 0 {
		t.Errorf("upstream got %d queries", n)
	}
}

// TestNoSet: a known sandbox without a Set is refused.
func TestNoSet(t *testing.T) {
	e := newEnv(t, nil)
	r, rec := e.ask("udp", query("www.example.test", dns.TypeA, false))
	if r.Rcode != dns.RcodeRefused || rec.Reason != policy.ReasonNoPolicy || len(e.up.queries()) != 0 {
		t.Fatalf("rcode %s, record %+v", dns.RcodeToString[r.Rcode], rec)
	}
	e.set.Store(policy.NewEffective(classifier)) // no layer: denies everything
	r, rec = e.ask("udp", query("www.example.test", dns.TypeA, false))
	if r.Rcode != dns.RcodeRefused || rec.Reason != policy.ReasonNoPolicy || len(e.up.queries()) != 0 {
		t.Fatalf("rcode %s, record %+v", dns.RcodeToString[r.Rcode], rec)
	}
}

// TestPolicyChange: the Set is read per query, so a change applies to the next one.
func TestPolicyChange(t *testing.T) {
	e := newEnv(t, mkSet(t, basePolicy))
	if r, _ := e.ask("udp", query("www.example.test", dns.TypeA, false)); r.Rcode != dns.RcodeSuccess {
		t.Fatal(dns.RcodeToString[r.Rcode])
	}
	e.set.Store(mkSet(t, policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"other.test"}}))
	if r, _ := e.ask("udp", query("www.example.test", dns.TypeA, false)); r.Rcode != dns.RcodeRefused {
		t.Fatal(dns.RcodeToString[r.Rcode])
	}
}

// TestLayers: in transparent mode the VM's policy AND every session's apply; a refusal says
// which layer refused.
func TestLayers(t *testing.T) {
	session := policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"www.example.test"}}
	e := newEnv(t, mkSet(t, basePolicy, session))
	if r, _ := e.ask("udp", query("www.example.test", dns.TypeA, false)); r.Rcode != dns.RcodeSuccess {
		t.Fatal(dns.RcodeToString[r.Rcode])
	}
	r, rec := e.ask("udp", query("mixed.example.test", dns.TypeA, true))
	x, _ := ede(r)
	if r.Rcode != dns.RcodeRefused || rec.Layer != "session" || x == nil || !strings.HasSuffix(x.ExtraText, "by the session policy") {
		t.Fatalf("rcode %s, record %+v, EDE %v", dns.RcodeToString[r.Rcode], rec, x)
	}
}

// TestMonitor: a monitor policy forwards a name it would refuse and records would_deny; it
// still refuses other query types (layer hard) and still strips hard-denied addresses.
func TestMonitor(t *testing.T) {
	e := newEnv(t, mkSet(t, policy.Policy{Mode: policy.Monitor, AllowHTTPS: true, AllowedDomains: []string{"www.example.test"}}))
	r, rec := e.ask("udp", query("notlisted.test", dns.TypeA, true))
	if r.Rcode != dns.RcodeSuccess || !slices.Equal(answerStrings(r), []string{"A 127.0.0.2"}) {
		t.Fatalf("%s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
	if rec.Decision != events.Allow || !rec.WouldDeny || rec.Mode != "monitor" || rec.Reason != policy.ReasonNameNotListed {
		t.Errorf("record %+v", rec)
	}
	if _, ok := ede(r); ok {
		t.Error("EDE on an answered query")
	}
	r, rec = e.ask("udp", query("notlisted.test", dns.TypeTXT, false))
	if r.Rcode != dns.RcodeRefused || rec.Layer != "hard" || rec.WouldDeny {
		t.Errorf("TXT in monitor mode: %s, record %+v", dns.RcodeToString[r.Rcode], rec)
	}
	r, _ = e.ask("udp", query("mixed.example.test", dns.TypeA, false))
	if got := answerStrings(r); !slices.Equal(got, []string{"A 127.0.0.2", "A 203.0.113.9"}) {
		t.Errorf("monitor answer %v: hard-denied addresses must go, others stay", got)
	}
}

// TestTCP: queries over TCP are handled like UDP and get the whole answer.
func TestTCP(t *testing.T) {
	e := newEnv(t, mkSet(t, basePolicy))
	r, rec := e.ask("tcp", query("www.example.test", dns.TypeAAAA, false))
	if r.Rcode != dns.RcodeSuccess || !slices.Equal(answerStrings(r), []string{"AAAA 2001:db8:1::2"}) || rec.Transport != "tcp" {
		t.Fatalf("%s %v %+v", dns.RcodeToString[r.Rcode], r.Answer, rec)
	}
	r, _ = e.ask("tcp", query("evil.test", dns.TypeA, false))
	if r.Rcode != dns.RcodeRefused {
		t.Fatal(dns.RcodeToString[r.Rcode])
	}
	r, _ = e.ask("tcp", query("big.example.test", dns.TypeA, false))
	if r.Truncated || len(r.Answer) != 60 {
		t.Fatalf("TC %v, %d records, want all 60", r.Truncated, len(r.Answer))
	}
}

// TestTruncation: an answer larger than the client can take over UDP (512 bytes, or its
// EDNS size up to 1232) is truncated with TC set; the upstream's own truncation is retried
// over TCP.
func TestTruncation(t *testing.T) {
	e := newEnv(t, mkSet(t, basePolicy))
	for _, size := range []uint16{0, 700, 4096} {
		m := query("big.example.test", dns.TypeA, false)
		limit := 512
		if size > 0 {
			m.SetEdns0(size, false)
			limit = min(int(size), 1232)
		}
		r, _ := e.ask("udp", m)
		r.Compress = true // as it was sent
		packed, err := r.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if len(packed) > limit {
			t.Errorf("size %d: answer of %d bytes over %d", size, len(packed), limit)
		}
		if r.Truncated != (len(r.Answer) < 60) {
			t.Errorf("size %d: TC %v with %d of 60 records", size, r.Truncated, len(r.Answer))
		}
		if size != 4096 && !r.Truncated {
			t.Errorf("size %d: not truncated", size)
		}
	}
	before := len(e.up.queries())
	r, _ := e.ask("udp", query("tc.example.test", dns.TypeA, false))
	if !slices.Equal(answerStrings(r), []string{"A 127.0.0.2"}) {
		t.Fatalf("answer %v", r.Answer)
	}
	var nets []string
	for _, q := range e.up.queries()[before:] {
		nets = append(nets, q.Net)
	}
	if !slices.Equal(nets, []string{"udp", "tcp"}) {
		t.Errorf("upstream transports %v, want [udp tcp]", nets)
	}
}

// TestUpstreamQueryIsFresh: the upstream query has its own random ID, RD set, and nothing
// of the client's message but the normalised question: no client EDNS option, no DO bit.
func TestUpstreamQueryIsFresh(t *testing.T) {
	e := newEnv(t, mkSet(t, basePolicy))
	same := 0
	for range 4 {
		m := query("www.example.test", dns.TypeA, false)
		m.Id = 4242
		m.RecursionDesired = false
		m.SetEdns0(4096, true)
		opt := m.IsEdns0()
		opt.Option = append(opt.Option,
			&dns.EDNS0_LOCAL{Code: 65001, Data: []byte("secret data")},
			&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"},
			&dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.ParseIP("192.0.2.0").To4()})
		m.Extra = append(m.Extra, mustRR("extra.example.test. 60 IN TXT \"more data\""))
		r, _ := e.ask("udp", m)
		if r.Id != 4242 || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("id %d rcode %s", r.Id, dns.RcodeToString[r.Rcode])
		}
		if o := r.IsEdns0(); o == nil || o.Do() {
			t.Errorf("answer OPT %v: want one, without DO", o)
		}
		q := e.up.queries()
		up := q[len(q)-1]
		if up.ID == 4242 {
			same++
		}
		if !up.Msg.RecursionDesired || len(up.Msg.Ns) != 0 || len(up.Msg.Answer) != 0 || len(up.Msg.Extra) != 1 {
			t.Errorf("upstream query %v", up.Msg)
		}
		if o := up.Msg.IsEdns0(); o == nil || len(o.Option) != 0 || o.Do() {
			t.Errorf("upstream OPT %v: want ours, without options or DO", o)
		}
	}
	if same == 4 {
		t.Error("the upstream query reused the client's ID")
	}
}

// TestMalformed: what is not one IN question of opcode QUERY is answered without asking
// the upstream, and recorded.
func TestMalformed(t *testing.T) {
	e := newEnv(t, mkSet(t, basePolicy))
	two := query("www.example.test", dns.TypeA, false)
	two.Question = append(two.Question, dns.Question{Name: "evil.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	none := query("www.example.test", dns.TypeA, false)
	none.Question = nil
	chaos := query("version.bind", dns.TypeTXT, false)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	chaosA := query("www.example.test", dns.TypeA, false)
	chaosA.Question[0].Qclass = dns.ClassCHAOS
	notify := query("www.example.test", dns.TypeSOA, false)
	notify.Opcode = dns.OpcodeNotify
	update := query("example.test", dns.TypeSOA, false)
	update.Opcode = dns.OpcodeUpdate
	v1 := query("www.example.test", dns.TypeA, true)
	v1.IsEdns0().SetVersion(1)
	for _, tt := range []struct {
		name  string
		m     *dns.Msg
		rcode int
	}{
		{"two questions", two, dns.RcodeFormatError},
		{"no question", none, dns.RcodeFormatError},
		{"class CH", chaos, dns.RcodeRefused},
		{"class CH A", chaosA, dns.RcodeRefused},
		{"NOTIFY", notify, dns.RcodeNotImplemented},
		{"UPDATE", update, dns.RcodeNotImplemented},
		{"EDNS version 1", v1, dns.RcodeBadVers},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e.t = t
			for _, network := range []string{"udp", "tcp"} {
				r, rec := e.ask(network, tt.m)
				if r.Rcode != tt.rcode || r.Id != tt.m.Id || len(r.Answer) != 0 {
					t.Errorf("%s: rcode %s, want %s", network, dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
				}
				if rec.Decision != events.Deny || rec.Layer != "hard" || rec.Tenant != "t1" {
					t.Errorf("%s: record %+v", network, rec)
				}
			}
		})
	}
	if n := len(e.up.queries()); n != 0 {
		t.Errorf("upstream got %d queries", n)
	}
}

// TestUpstreamDown: an upstream that does not answer gives SERVFAIL (the record keeps the
// policy's decision: allow).
func TestUpstreamDown(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	e := newEnv(t, mkSet(t, basePolicy), func(s *Server) { s.Resolver = &resolve.Resolver{Upstream: dead}; s.Timeout = 500 * time.Millisecond })
	for _, network := range []string{"udp", "tcp"} {
		r, rec := e.ask(network, query("www.example.test", dns.TypeA, true))
		if r.Rcode != dns.RcodeServerFailure {
			t.Fatalf("%s: rcode %s", network, dns.RcodeToString[r.Rcode])
		}
		if x, ok := ede(r); !ok || x.InfoCode != dns.ExtendedErrorCodeNetworkError {
			t.Errorf("EDE %v", x)
		}
		if rec.Decision != events.Allow || rec.IP != "" {
			t.Errorf("record %+v", rec)
		}
	}
}

// TestSaturated: beyond MaxInFlight queries being forwarded, a query is answered SERVFAIL at
// once and recorded as a denial; a refused query needs no slot.
func TestSaturated(t *testing.T) {
	e := newEnv(t, mkSet(t, basePolicy), func(s *Server) { s.MaxInFlight = 1 })
	gate := make(chan struct{})
	e.up.mu.Lock()
	e.up.gate[key("slow.example.test", dns.TypeA)] = gate
	e.up.mu.Unlock()
	done := make(chan *dns.Msg)
	go func() {
		r, _, err := (&dns.Client{Net: "udp", Timeout: 5 * time.Second}).Exchange(query("slow.example.test", dns.TypeA, false), e.udp)
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	select {
	case <-e.up.arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the slow query never reached the upstream")
	}
	r, rec := e.ask("udp", query("www.example.test", dns.TypeA, true))
	if r.Rcode != dns.RcodeServerFailure || rec.Decision != events.Deny || rec.Reason != policy.ReasonBusy {
		t.Errorf("saturated: rcode %s, record %+v", dns.RcodeToString[r.Rcode], rec)
	}
	if r, _ := e.ask("udp", query("evil.test", dns.TypeA, false)); r.Rcode != dns.RcodeRefused {
		t.Errorf("refusal while saturated: %s", dns.RcodeToString[r.Rcode])
	}
	close(gate)
	if r := <-done; r == nil || r.Rcode != dns.RcodeNameError {
		t.Errorf("slow query: %v", r)
	}
	e.record() // the slow query's
	if r, _ := e.ask("udp", query("www.example.test", dns.TypeA, false)); r.Rcode != dns.RcodeSuccess {
		t.Errorf("after the slot was freed: %s", dns.RcodeToString[r.Rcode])
	}
}

// TestHandleLongNames: a label over 63 bytes, or a name over 253, cannot be sent on the
// wire (miekg/dns drops such a message unanswered: 0x40 is an extended label type, and a
// wire name is at most 255 bytes); built in memory, they are refused as invalid names.
func TestHandleLongNames(t *testing.T) {
	e := newEnv(t, mkSet(t, basePolicy))
	for _, name := range []string{
		randomLabel(64) + ".example.test.",
		strings.Repeat(randomLabel(63)+".", 4) + "example.test.",
	} {
		m := query("x.example.test", dns.TypeA, false)
		m.Question[0].Name = name
		r, rec := e.srv.handle(m, mustAddr("127.0.0.1"), policy.UDP)
		if r.Rcode != dns.RcodeRefused || rec.Reason != policy.ReasonBadName {
			t.Fatalf("rcode %s, record %+v", dns.RcodeToString[r.Rcode], rec)
		}
	}
	if n := len(e.up.queries()); n != 0 {
		t.Errorf("upstream got %d queries", n)
	}
}

// TestShutdown: Serve returns ErrServerClosed, and a Serve after Shutdown returns at once.
func TestShutdown(t *testing.T) {
	s := &Server{}
	pc, ln := listenBoth(t)
	errs := make(chan error, 2)
	go func() { errs <- s.Serve(pc) }()
	go func() { errs <- s.ServeListener(ln) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Shutdown may run before the goroutines reach Serve: either way both return.
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	}
	pc.Close()
	ln.Close()
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestZeroServer: the zero Server knows no sandbox and refuses.
func TestZeroServer(t *testing.T) {
	var s Server
	r, rec := s.handle(query("www.example.test", dns.TypeA, false), mustAddr("127.0.0.1"), policy.UDP)
	if r.Rcode != dns.RcodeRefused || rec.Reason != policy.ReasonUnknownSandbox {
		t.Fatalf("%s %+v", dns.RcodeToString[r.Rcode], rec)
	}
}
