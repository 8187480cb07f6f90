package resolve_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dataplane/resolve"
	"github.com/egressd/egressd/internal/testkit/testnet"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUpstreamOnly: with an upstream, that server alone answers; the hosts file is not read
// even when it lists the name.
func TestUpstreamOnly(t *testing.T) {
	up := testnet.StartDNS(t, "127.0.0.1")
	up.Set("api.example.test", "203.0.113.10", "2001:db8::10")
	hosts := writeFile(t, "hosts", "127.0.0.9 api.example.test\n")
	r := &resolve.Resolver{Upstream: up.Addr, HostsFile: hosts, ResolvConf: "/nonexistent"}
	got, err := r.LookupNetIP(context.Background(), "api.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if want := addrs("203.0.113.10", "2001:db8::10"); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if _, err := r.LookupNetIP(context.Background(), "nowhere.example.test"); !errors.Is(err, resolve.ErrNotFound) {
		t.Fatalf("unknown name: %v, want ErrNotFound", err)
	}
}

// TestSystemWay: without an upstream, the hosts file first (a name there is answered from it
// alone: no query leaves), then resolv.conf's nameservers in order, past one that refuses.
func TestSystemWay(t *testing.T) {
	testnet.RequireRoot(t) // resolv.conf has no port: the servers listen on 53
	ipA, ipB := randomLoopback(), randomLoopback()
	refusing := startRefusing(t, ipA)
	good := testnet.StartDNSOn(t, testnet.Loopback, ipB, 53)
	good.Set("pypi.org", "203.0.113.20")
	good.Set("listed.example.test", "203.0.113.99")
	hosts := writeFile(t, "hosts", "# comment\n203.0.113.7 listed.example.test alias.example.test # trailing\nnot-an-ip bad.example.test\n")
	conf := writeFile(t, "resolv.conf", fmt.Sprintf("nameserver %s\nnameserver %s\n", ipA, ipB))
	r := &resolve.Resolver{HostsFile: hosts, ResolvConf: conf, Timeout: 2 * time.Second}
	ctx := context.Background()

	got, err := r.LookupNetIP(ctx, "listed.example.test")
	if err != nil || !slices.Equal(got, addrs("203.0.113.7")) {
		t.Fatalf("hosts file name: %v %v, want 203.0.113.7 from the file", got, err)
	}
	m, err := r.Exchange(ctx, "alias.example.test.", dns.TypeAAAA)
	if err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 {
		t.Fatalf("AAAA of a v4-only hosts name: %v %v, want an empty NOERROR", m, err)
	}
	if q := good.Queries(); len(q) != 0 {
		t.Fatalf("names in the hosts file were sent to a server: %v", q)
	}
	got, err = r.LookupNetIP(ctx, "pypi.org")
	if err != nil || !slices.Equal(got, addrs("203.0.113.20")) {
		t.Fatalf("pypi.org: %v %v", got, err)
	}
	if refusing.Load() == 0 {
		t.Fatal("the first nameserver was not asked")
	}
}

// TestHostsFileChanges: an edit of the hosts file applies without a restart.
func TestHostsFileChanges(t *testing.T) {
	hosts := writeFile(t, "hosts", "203.0.113.1 a.example.test\n")
	r := &resolve.Resolver{HostsFile: hosts, ResolvConf: "/nonexistent"} // names in the file need no server
	m, err := r.Exchange(context.Background(), "a.example.test.", dns.TypeA)
	if err != nil || len(m.Answer) != 1 {
		t.Fatalf("%v %v", m, err)
	}
	// The file is looked at again after a few seconds; a new modification time makes it read.
	if err := os.WriteFile(hosts, []byte("203.0.113.2 a.example.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	os.Chtimes(hosts, later, later)
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		m, err = r.Exchange(context.Background(), "a.example.test.", dns.TypeA)
		if err == nil && len(m.Answer) == 1 && m.Answer[0].(*dns.A).A.String() == "203.0.113.2" {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the edited hosts file was not read: %v %v", m, err)
}

// TestAnswerForAnotherQuestion: an answer that does not echo the question is an error.
func TestAnswerForAnotherQuestion(t *testing.T) {
	addr := startServer(t, "127.0.0.1", 0, dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Question[0].Name = "other.example.test."
		w.WriteMsg(m)
	}))
	r := &resolve.Resolver{Upstream: addr}
	if _, err := r.Exchange(context.Background(), "a.example.test.", dns.TypeA); err == nil {
		t.Fatal("an answer to another question was taken")
	}
}

// TestCNAMEAndCache: CNAMEs are followed, and an answer is cached for its TTL.
func TestCNAMEAndCache(t *testing.T) {
	var n atomic.Int64
	addr := startServer(t, "127.0.0.1", 0, dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		n.Add(1)
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer,
				&dns.CNAME{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: "edge.example.test."},
				&dns.A{Hdr: dns.RR_Header{Name: "edge.example.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("203.0.113.5")},
				&dns.A{Hdr: dns.RR_Header{Name: "unrelated.example.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("203.0.113.6")})
		}
		w.WriteMsg(m)
	}))
	r := &resolve.Resolver{Upstream: addr}
	for range 3 {
		got, err := r.LookupNetIP(context.Background(), "www.example.test")
		if err != nil || !slices.Equal(got, addrs("203.0.113.5")) {
			t.Fatalf("got %v %v, want the CNAME target's address only", got, err)
		}
	}
	if n := n.Load(); n != 2 { // A and AAAA once each
		t.Fatalf("%d queries for three lookups, want 2 (cached)", n)
	}
}

func randomLoopback() string {
	return fmt.Sprintf("127.53.%d.%d", rand.IntN(250)+1, rand.IntN(250)+1)
}

// startRefusing serves REFUSED on ip:53 and counts the queries.
func startRefusing(t *testing.T, ip string) *atomic.Int64 {
	n := new(atomic.Int64)
	startServer(t, ip, 53, dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		n.Add(1)
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeRefused)
		w.WriteMsg(m)
	}))
	return n
}

func startServer(t *testing.T, ip string, port int, h dns.Handler) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, fmt.Sprint(port)))
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: h}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}
