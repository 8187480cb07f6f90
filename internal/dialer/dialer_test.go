package dialer

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/testnet"
	"github.com/egressd/egressd/policy"
)

// Addresses (DESIGN §10): fake public servers inside Classifier.Public 127.0.0.0/26; answers
// that must be refused on 127.0.0.100, loopback outside it, hard-denied.
const (
	publicIP  = "127.0.0.43"
	deadIP    = "127.0.0.44" // public, nothing listens
	privateIP = "127.0.0.100"
)

var classifier = &policy.Classifier{Public: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/26")}}

func set(t *testing.T, p policy.Policy) *policy.Set {
	t.Helper()
	m, err := policy.Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return policy.NewSet(classifier, policy.Layered{Layer: policy.LayerSession, Matcher: m})
}

// zone is a DNS server on 127.0.0.1 answering from a table, over UDP and TCP.
type zone struct {
	addr    string
	mu      sync.Mutex
	records map[string][]dns.RR // by lower-case FQDN
	queries atomic.Int64
	// truncateUDP answers every UDP query with TC set and no records.
	truncateUDP atomic.Bool
}

func startZone(t *testing.T) *zone {
	t.Helper()
	z := &zone{records: make(map[string][]dns.RR)}
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
	z.addr = pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: z}
	tcp := &dns.Server{Listener: ln, Handler: z}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })
	return z
}

// add adds records in zone-file syntax: "a.test. 60 IN A 127.0.0.43".
func (z *zone) add(t *testing.T, lines ...string) {
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

func (z *zone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	z.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(req)
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp && z.truncateUDP.Load() {
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

// listen opens ip:port and counts the connections it accepts.
type listener struct {
	net.Listener
	accepted atomic.Int64
}

func listen(t *testing.T, ip string, port int) *listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("listen %s:%d: %v", ip, port, err)
	}
	l := &listener{Listener: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return l
}

func port(l net.Listener) uint16 { return uint16(l.Addr().(*net.TCPAddr).Port) }

func newDialer(z *zone) *Dialer {
	return &Dialer{Resolver: &DNS{Upstream: z.addr}, Timeout: 3 * time.Second}
}

func TestDialByName(t *testing.T) {
	testnet.RequireRoot(t) // the web rule opens ports 80 and 443 only
	z := startZone(t)
	z.add(t,
		"ok.test. 60 IN A "+publicIP,
		"rebind.test. 60 IN A "+privateIP,
		"mixed.test. 60 IN A "+privateIP,
		"mixed.test. 60 IN A "+publicIP,
		"fallback.test. 60 IN A "+deadIP,
		"fallback.test. 60 IN A "+publicIP,
		"alias.test. 60 IN CNAME ok.test.",
		"empty.test. 60 IN TXT \"no address\"",
	)
	pub := listen(t, publicIP, 80)
	priv := listen(t, privateIP, 80)
	allowHTTP := set(t, policy.Policy{AllowHTTP: true})
	d := newDialer(z)

	tests := []struct {
		name       string
		host       string
		set        *policy.Set
		wantErr    error
		wantIP     string
		wantReason string
	}{
		{"allowed", "ok.test", allowHTTP, nil, publicIP, policy.ReasonAllowHTTP},
		{"CNAME followed", "alias.test", allowHTTP, nil, publicIP, policy.ReasonAllowHTTP},
		{"rebinding to loopback", "rebind.test", allowHTTP, ErrDenied, privateIP, policy.ReasonHardDeny},
		{"denied address skipped", "mixed.test", allowHTTP, nil, publicIP, policy.ReasonAllowHTTP},
		{"next address after a refusal", "fallback.test", allowHTTP, nil, publicIP, policy.ReasonAllowHTTP},
		{"no such name", "nx.test", allowHTTP, ErrNotFound, "", policy.ReasonAllowHTTP},
		{"no address", "empty.test", allowHTTP, ErrNoAddress, "", policy.ReasonAllowHTTP},
		{"name denied", "ok.test", set(t, policy.Policy{AllowHTTPS: true}), ErrDenied, "", policy.ReasonHTTPOff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := d.Dial(context.Background(), tt.set, policy.Conn{Host: tt.host, Port: 80})
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Dial: %v, want %v", err, tt.wantErr)
			}
			if res.Conn != nil {
				res.Conn.Close()
			}
			if (res.Conn != nil) != (err == nil) {
				t.Errorf("Conn %v with error %v", res.Conn, err)
			}
			if got := addrString(res.Target.IP); got != tt.wantIP {
				t.Errorf("Target.IP %q, want %q", got, tt.wantIP)
			}
			if res.Decision.Reason != tt.wantReason || res.Decision.Allow != (tt.wantErr != ErrDenied) {
				t.Errorf("Decision %+v, want reason %q", res.Decision, tt.wantReason)
			}
			if res.Target.Host != tt.host || res.Target.Port != 80 || res.Target.Transport != policy.TCP {
				t.Errorf("Target %+v", res.Target)
			}
		})
	}
	if n := priv.accepted.Load(); n != 0 {
		t.Errorf("the non-public address was dialled %d times", n)
	}
	if n := pub.accepted.Load(); n == 0 {
		t.Error("the public server saw no connection")
	}
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// A name the policy denies is not looked up: a denied name cannot carry data out in DNS.
func TestDeniedNameIsNotResolved(t *testing.T) {
	z := startZone(t)
	z.add(t, "secret.test. 60 IN A "+publicIP)
	s := set(t, policy.Policy{AllowHTTPS: true, DeniedDomains: []string{"secret.test"}})
	for _, c := range []policy.Conn{{Host: "secret.test", Port: 443}, {Host: "ok.test", Port: 22}} {
		res, err := newDialer(z).Dial(context.Background(), s, c)
		if !errors.Is(err, ErrDenied) || res.Decision.Allow {
			t.Errorf("%+v: %v %+v, want a denial", c, err, res.Decision)
		}
	}
	if n := z.queries.Load(); n != 0 {
		t.Errorf("%d DNS queries for denied names", n)
	}
}

func TestDialIPLiteral(t *testing.T) {
	ln := listen(t, publicIP, 0) // allowed_cidrs opens every port: no root needed
	z := startZone(t)
	d := newDialer(z)
	lit := policy.Conn{IP: netip.MustParseAddr("::ffff:" + publicIP), Port: port(ln), IPLiteral: true}

	res, err := d.Dial(context.Background(), set(t, policy.Policy{AllowHTTPS: true, AllowHTTP: true}), lit)
	if !errors.Is(err, ErrDenied) || res.Decision.Reason != policy.ReasonPort {
		t.Fatalf("IP literal without allowed_cidrs: %v %+v", err, res.Decision)
	}
	res, err = d.Dial(context.Background(), set(t, policy.Policy{AllowedCIDRs: []string{publicIP}}), lit)
	if err != nil {
		t.Fatalf("IP literal inside allowed_cidrs: %v", err)
	}
	defer res.Conn.Close()
	if res.Decision.Reason != policy.ReasonAllowedCIDRs || res.Target.IP != netip.MustParseAddr(publicIP) {
		t.Errorf("Decision %+v, Target %+v (want the unmapped address)", res.Decision, res.Target)
	}
	if got := res.Conn.RemoteAddr().(*net.TCPAddr).IP.String(); got != publicIP {
		t.Errorf("connected to %s", got)
	}
	// Loopback outside Public is hard-denied even inside allowed_cidrs.
	res, err = d.Dial(context.Background(), set(t, policy.Policy{AllowedCIDRs: []string{"127.0.0.0/8"}}),
		policy.Conn{IP: netip.MustParseAddr(privateIP), Port: 80, IPLiteral: true})
	if !errors.Is(err, ErrDenied) || res.Decision.Reason != policy.ReasonHardDeny {
		t.Errorf("loopback literal: %v %+v", err, res.Decision)
	}
	if z.queries.Load() != 0 {
		t.Error("an IP literal was looked up")
	}
}

// Monitor mode dials what it would deny, but never past a hard denial, and prefers an
// address that is allowed outright.
func TestDialMonitor(t *testing.T) {
	testnet.RequireRoot(t)
	z := startZone(t)
	z.add(t, "other.test. 60 IN A "+publicIP, "rebind.test. 60 IN A "+privateIP)
	listen(t, publicIP, 443)
	priv := listen(t, privateIP, 443)
	s := set(t, policy.Policy{Mode: policy.Monitor, AllowHTTPS: true, AllowedDomains: []string{"api.test"}})
	d := newDialer(z)
	res, err := d.Dial(context.Background(), s, policy.Conn{Host: "other.test", Port: 443})
	if err != nil {
		t.Fatalf("monitor mode: %v", err)
	}
	res.Conn.Close()
	if !res.Decision.Allow || !res.Decision.WouldDeny || res.Decision.Reason != policy.ReasonHostNotListed {
		t.Errorf("Decision %+v, want allow with would_deny", res.Decision)
	}
	res, err = d.Dial(context.Background(), s, policy.Conn{Host: "rebind.test", Port: 443})
	if !errors.Is(err, ErrDenied) || res.Decision.Reason != policy.ReasonHardDeny {
		t.Errorf("monitor mode, loopback answer: %v %+v", err, res.Decision)
	}
	if priv.accepted.Load() != 0 {
		t.Error("monitor mode dialled a hard-denied address")
	}
}

func TestDNSCacheAndTruncation(t *testing.T) {
	z := startZone(t)
	z.add(t, "cached.test. 60 IN A "+publicIP, "cached.test. 60 IN AAAA 2001:db8::1", "zero.test. 0 IN A "+publicIP)
	r := &DNS{Upstream: z.addr}
	want := []netip.Addr{netip.MustParseAddr(publicIP), netip.MustParseAddr("2001:db8::1")}
	for i := 0; i < 3; i++ {
		got, err := r.LookupNetIP(context.Background(), "cached.test")
		if err != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Fatalf("lookup %d: %v %v, want %v (IPv4 first)", i, got, err, want)
		}
	}
	if n := z.queries.Load(); n != 2 {
		t.Errorf("%d queries for three lookups, want 2 (A and AAAA, then the cache)", n)
	}
	z.queries.Store(0)
	for i := 0; i < 2; i++ {
		if _, err := r.LookupNetIP(context.Background(), "zero.test"); err != nil {
			t.Fatal(err)
		}
	}
	if n := z.queries.Load(); n != 3 { // A twice (TTL 0), the empty AAAA once
		t.Errorf("TTL 0: %d queries, want 3", n)
	}

	z.truncateUDP.Store(true)
	got, err := (&DNS{Upstream: z.addr}).LookupNetIP(context.Background(), "cached.test")
	if err != nil || len(got) != 2 {
		t.Fatalf("after truncation: %v %v, want the answer over TCP", got, err)
	}
}

func TestDNSCacheBound(t *testing.T) {
	z := startZone(t)
	r := &DNS{Upstream: z.addr, CacheSize: 8}
	for i := 0; i < 40; i++ {
		name := "n" + strconv.Itoa(i) + ".test"
		z.add(t, name+". 60 IN A "+publicIP)
		if _, err := r.LookupNetIP(context.Background(), name); err != nil {
			t.Fatal(err)
		}
	}
	r.mu.Lock()
	n := len(r.cache)
	r.mu.Unlock()
	if n > 8 {
		t.Errorf("cache holds %d entries, bound 8", n)
	}
}

// A resolver that never answers: Dial gives up within its timeout.
func TestDialTimeout(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	d := &Dialer{Resolver: &DNS{Upstream: pc.LocalAddr().String()}, Timeout: 300 * time.Millisecond}
	done := make(chan error, 1)
	go func() {
		_, err := d.Dial(context.Background(), set(t, policy.Policy{AllowHTTPS: true}), policy.Conn{Host: "slow.test", Port: 443})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
			t.Errorf("error %v, want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Dial did not give up")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestUpstreamDefaultPort(t *testing.T) {
	for in, want := range map[string]string{"127.0.0.1": "127.0.0.1:53", "127.0.0.1:5353": "127.0.0.1:5353", "::1": "[::1]:53"} {
		if got, err := (&DNS{Upstream: in}).upstream(); got != want || err != nil {
			t.Errorf("Upstream %q: %q %v, want %q", in, got, err, want)
		}
	}
}
