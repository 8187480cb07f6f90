package dnsfilter

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/resolve"
	"github.com/egressd/egressd/policy"
)

// Addresses (DESIGN §10): everything on loopback. The filter and the fake upstream listen on
// 127.0.0.1; "public" answers are inside Classifier.Public (127.0.0.0/26 and, for AAAA,
// 2001:db8:1::/48); answers that must be stripped point at 127.0.0.100 (loopback outside
// Public), 203.0.113.0/24 (documentation, not public here) and link-local. The fake private
// network of allowed_cidrs is 198.51.100.0/24. No answer is ever dialled.
var classifier = &policy.Classifier{Public: []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/26"),
	netip.MustParsePrefix("2001:db8:1::/48"),
}}

// basePolicy is the VM policy of most tests.
var basePolicy = policy.Policy{
	AllowHTTPS:     true,
	AllowedDomains: []string{"*.example.test", "internal.corp.test"},
	DeniedDomains:  []string{"bad.example.test", "*.secret.example.test"},
	AllowedCIDRs:   []string{"198.51.100.0/24"},
}

// mkSet compiles the layers: the first is the VM's policy, the next ones sessions'.
func mkSet(t testing.TB, ps ...policy.Policy) *policy.Effective {
	t.Helper()
	var layers []policy.Layered
	for i, p := range ps {
		m, err := policy.Compile(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		l := policy.LayerVM
		if i > 0 {
			l = policy.LayerSession
		}
		layers = append(layers, policy.Layered{Layer: l, Matcher: m})
	}
	return policy.NewEffective(classifier, layers...)
}

// upstream is a fake recursive resolver: it answers from zone-file lines, NXDOMAIN for a
// name it does not know, and records every query it receives.
type upstream struct {
	addr string

	mu      sync.Mutex
	answers map[string][]string // "name TYPE" (lower-case FQDN) → answer records
	extra   map[string][]string // "name TYPE" → authority records (and glue, in Extra)
	rcode   map[string]int      // "name TYPE" → an RCODE to answer instead
	tc      map[string]bool     // "name TYPE" → truncated over UDP
	gate    map[string]chan struct{}
	wild    bool // answer every unknown name (fuzzing) instead of NXDOMAIN
	seen    []seenQuery
	arrived chan string // every query's name, for tests that wait for one
}

type seenQuery struct {
	Name  string
	Type  uint16
	ID    uint16
	Net   string
	Msg   *dns.Msg
	Class uint16
}

func key(name string, t uint16) string {
	return strings.ToLower(dns.Fqdn(name)) + " " + dns.TypeToString[t]
}

func startUpstream(t testing.TB) *upstream {
	t.Helper()
	u := &upstream{
		answers: map[string][]string{}, extra: map[string][]string{}, rcode: map[string]int{},
		tc: map[string]bool{}, gate: map[string]chan struct{}{}, arrived: make(chan string, 1024),
	}
	pc, ln := listenBoth(t)
	u.addr = pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { u.serve(w, r, "udp") })}
	tcp := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { u.serve(w, r, "tcp") })}
	startServer(t, udp)
	startServer(t, tcp)
	return u
}

// startServer runs a miekg server until the test ends.
func startServer(t testing.TB, srv *dns.Server) {
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
}

// listenBoth listens on 127.0.0.1 over UDP and TCP on one port.
func listenBoth(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
	}
	t.Fatal("no port free for both UDP and TCP")
	return nil, nil
}

// set makes "name TYPE" answer with records (zone-file lines).
func (u *upstream) set(name string, t uint16, records ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.answers[key(name, t)] = records
}

func (u *upstream) serve(w dns.ResponseWriter, r *dns.Msg, network string) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	k := key(q.Name, q.Qtype)
	u.mu.Lock()
	u.seen = append(u.seen, seenQuery{Name: q.Name, Type: q.Qtype, ID: r.Id, Net: network, Msg: r.Copy(), Class: q.Qclass})
	lines, ok := u.answers[k]
	extra := u.extra[k]
	rcode, hasRcode := u.rcode[k]
	tc := u.tc[k] && network == "udp"
	if !ok && u.wild {
		lines, ok = wildAnswer(q.Name, q.Qtype), true
	}
	gate := u.gate[k]
	u.mu.Unlock()
	select {
	case u.arrived <- q.Name:
	default:
	}
	if gate != nil {
		<-gate
	}
	switch {
	case hasRcode:
		m.Rcode = rcode
	case tc:
		m.Truncated = true
	case !ok:
		m.Rcode = dns.RcodeNameError
	default:
		for _, l := range lines {
			m.Answer = append(m.Answer, mustRR(l))
		}
		for _, l := range extra {
			rr := mustRR(l)
			if rr.Header().Rrtype == dns.TypeNS {
				m.Ns = append(m.Ns, rr)
			} else {
				m.Extra = append(m.Extra, rr)
			}
		}
	}
	size := dns.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
		size = max(size, int(opt.UDPSize()))
	}
	if network == "tcp" {
		size = dns.MaxMsgSize
	}
	m.Truncate(size) // compresses, as a real resolver does
	_ = w.WriteMsg(m)
}

// wildAnswer is an answer for any name: a CNAME chain, and public and non-public addresses.
func wildAnswer(name string, t uint16) []string {
	switch t {
	case dns.TypeA:
		return []string{
			name + " 600 IN CNAME x.cdn.test.", "x.cdn.test. 60 IN A 127.0.0.2",
			"x.cdn.test. 60 IN A 127.0.0.100", name + " 4294967295 IN A 169.254.169.254",
			"x.cdn.test. 60 IN AAAA 2001:db8:1::9", "x.cdn.test. 60 IN TXT \"data\""}
	case dns.TypeAAAA:
		return []string{name + " 60 IN AAAA ::1", name + " 60 IN AAAA 2001:db8:1::2", name + " 60 IN AAAA ::ffff:127.0.0.2"}
	}
	return []string{name + " 60 IN TXT \"what was asked\""}
}

func mustRR(s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return rr
}

// queries returns what the upstream received so far.
func (u *upstream) queries() []seenQuery {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenQuery(nil), u.seen...)
}

// recorder is a Sink that keeps the records, in order.
type recorder struct {
	ch chan events.Record
}

func (r *recorder) Record(rec events.Record) {
	select {
	case r.ch <- rec:
	default:
		panic("recorder full")
	}
}

// env is a filter on 127.0.0.1 (UDP and TCP) in front of a fake upstream; the source
// 127.0.0.1 is VM "vm1" of tenant "t1" with the policy in set.
type env struct {
	t        testing.TB
	up       *upstream
	srv      *Server
	udp, tcp string
	recs     *recorder
	set      atomic.Pointer[policy.Effective]
	known    atomic.Bool
	served   chan error
}

func newEnv(t testing.TB, set *policy.Effective, opts ...func(*Server)) *env {
	t.Helper()
	e := &env{t: t, up: startUpstream(t), recs: &recorder{ch: make(chan events.Record, 1<<16)}, served: make(chan error, 2)}
	e.set.Store(set)
	e.known.Store(true)
	e.up.fill()
	e.srv = &Server{
		VMs: VMsFunc(func(a netip.Addr) (string, string, *policy.Effective, bool) {
			if a != netip.MustParseAddr("127.0.0.1") || !e.known.Load() {
				return "", "", nil, false
			}
			return "t1", "vm1", e.set.Load(), true
		}),
		Resolver: &resolve.Resolver{Upstream: e.up.addr, Timeout: 2 * time.Second},
		Sink:     e.recs,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Timeout:  2 * time.Second,
	}
	for _, o := range opts {
		o(e.srv)
	}
	pc, ln := listenBoth(t)
	e.udp, e.tcp = pc.LocalAddr().String(), ln.Addr().String()
	go func() { e.served <- e.srv.Serve(pc) }()
	go func() { e.served <- e.srv.ServeListener(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		for range 2 {
			if err := <-e.served; !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		}
	})
	return e
}

// fill gives the fake upstream the names the tests ask for.
func (u *upstream) fill() {
	u.set("www.example.test", dns.TypeA, "www.example.test. 60 IN A 127.0.0.2")
	u.set("www.example.test", dns.TypeAAAA, "www.example.test. 60 IN AAAA 2001:db8:1::2")
	u.set("rebind.example.test", dns.TypeA, "rebind.example.test. 60 IN A 127.0.0.100")
	u.set("mixed.example.test", dns.TypeA,
		"mixed.example.test. 60 IN A 127.0.0.100",
		"mixed.example.test. 60 IN A 127.0.0.2",
		"mixed.example.test. 60 IN A 203.0.113.9",
		"mixed.example.test. 60 IN A 169.254.169.254",
		"mixed.example.test. 60 IN A 0.0.0.0")
	u.set("mixed.example.test", dns.TypeAAAA,
		"mixed.example.test. 60 IN AAAA ::1",
		"mixed.example.test. 60 IN AAAA ::ffff:127.0.0.2",
		"mixed.example.test. 60 IN AAAA fe80::1",
		"mixed.example.test. 60 IN AAAA fd00:ec2::254",
		"mixed.example.test. 60 IN AAAA 2001:db8:1::3")
	u.set("v6only.example.test", dns.TypeA)
	u.set("v6only.example.test", dns.TypeAAAA, "v6only.example.test. 60 IN AAAA 2001:db8:1::5")
	u.set("internal.corp.test", dns.TypeA, "internal.corp.test. 60 IN A 198.51.100.7")
	u.set("alias.example.test", dns.TypeA,
		"alias.example.test. 60 IN CNAME edge.cdn.test.",
		"edge.cdn.test. 60 IN CNAME edge2.cdn.test.",
		"edge2.cdn.test. 60 IN A 127.0.0.3",
		"unrelated.test. 60 IN A 127.0.0.4",
		"edge2.cdn.test. 60 IN AAAA 2001:db8:1::4",
		"edge2.cdn.test. 60 IN TXT \"data\"",
		"edge2.cdn.test. 60 CH A 127.0.0.5")
	u.set("loop.example.test", dns.TypeA,
		"loop.example.test. 60 IN CNAME loop2.example.test.",
		"loop2.example.test. 60 IN CNAME loop.example.test.")
	u.set("ttl.example.test", dns.TypeA,
		"ttl.example.test. 86400 IN A 127.0.0.2",
		"ttl.example.test. 2147483648 IN A 127.0.0.3",
		"ttl.example.test. 7 IN A 127.0.0.4")
	u.set("notlisted.test", dns.TypeA, "notlisted.test. 60 IN A 127.0.0.2")
	var big []string
	for i := 1; i <= 60; i++ {
		big = append(big, "big.example.test. 60 IN A 127.0.0."+strconv.Itoa(i))
	}
	u.set("big.example.test", dns.TypeA, big...)
	u.set("tc.example.test", dns.TypeA, "tc.example.test. 60 IN A 127.0.0.2")
	u.mu.Lock()
	defer u.mu.Unlock()
	u.extra[key("alias.example.test", dns.TypeA)] = []string{
		"cdn.test. 60 IN NS ns.cdn.test.", "ns.cdn.test. 60 IN A 127.0.0.6"}
	u.tc[key("tc.example.test", dns.TypeA)] = true
	u.rcode[key("refused.example.test", dns.TypeA)] = dns.RcodeRefused
	u.rcode[key("servfail.example.test", dns.TypeA)] = dns.RcodeServerFailure
}

// query builds a query; edns adds an OPT record advertising 4096 bytes.
func query(name string, t uint16, edns bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), t)
	if edns {
		m.SetEdns0(4096, false)
	}
	return m
}

// ask sends m over network ("udp" or "tcp") from 127.0.0.1 and returns the answer and the
// record of the query.
func (e *env) ask(network string, m *dns.Msg) (*dns.Msg, events.Record) {
	e.t.Helper()
	addr := e.udp
	if network == "tcp" {
		addr = e.tcp
	}
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		e.t.Fatalf("%s %v: %v", network, m.Question, err)
	}
	return r, e.record()
}

// record returns the next record.
func (e *env) record() events.Record {
	e.t.Helper()
	select {
	case r := <-e.recs.ch:
		return r
	case <-time.After(5 * time.Second):
		e.t.Fatal("no record")
	}
	return events.Record{}
}

// ede returns the Extended DNS Error of m, if any.
func ede(m *dns.Msg) (*dns.EDNS0_EDE, bool) {
	opt := m.IsEdns0()
	if opt == nil {
		return nil, false
	}
	for _, o := range opt.Option {
		if e, ok := o.(*dns.EDNS0_EDE); ok {
			return e, true
		}
	}
	return nil, false
}

// answerStrings renders the answer section as "TYPE data" lines, without owners and TTLs.
func answerStrings(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		f := strings.Fields(rr.String())
		out = append(out, strings.Join(append([]string{f[3]}, f[4:]...), " "))
	}
	return out
}
