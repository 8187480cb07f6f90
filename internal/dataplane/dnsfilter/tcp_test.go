package dnsfilter

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dataplane/events"
)

// opener is a TCPOpener that keeps what it is told and answers err.
type opener struct {
	mu    sync.Mutex
	calls []Answered
	err   error
	// block, when set, is waited on before OpenTCP returns; done is set after.
	block chan struct{}
	done  atomic.Bool
}

func (o *opener) OpenTCP(ctx context.Context, a Answered) error {
	if o.block != nil {
		select {
		case <-o.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, a)
	o.done.Store(true)
	return o.err
}

func (o *opener) took() []Answered {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := o.calls
	o.calls = nil
	return out
}

func withTCP(o *opener) func(*Server) { return func(s *Server) { s.TCP = o } }

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// TestOpenTCPIsToldTheAnswerGiven: the opener gets the sandbox that asked, the normalised
// name asked, the addresses the sandbox gets (filtered: never a stripped one) and the
// smallest TTL given; answers without addresses, refusals and upstream failures tell it
// nothing.
func TestOpenTCPIsToldTheAnswerGiven(t *testing.T) {
	o := &opener{}
	e := newEnv(t, mkSet(t, basePolicy), withTCP(o))
	e.up.set("two.example.test", dns.TypeA,
		"two.example.test. 90 IN A 127.0.0.2",
		"two.example.test. 45 IN A 127.0.0.3",
		"two.example.test. 5 IN A 127.0.0.100") // stripped: its TTL does not count
	cases := []struct {
		name string
		q    *dns.Msg
		want []Answered // nil: not called
	}{
		{"filtered", query("MIXED.example.test", dns.TypeA, false), []Answered{{Name: "mixed.example.test", Addrs: addrs("127.0.0.2"), TTL: 60}}},
		{"smallest TTL given", query("two.example.test", dns.TypeA, true), []Answered{{Name: "two.example.test", Addrs: addrs("127.0.0.2", "127.0.0.3"), TTL: 45}}},
		{"capped TTL", query("ttl.example.test", dns.TypeA, false), []Answered{{Name: "ttl.example.test", Addrs: addrs("127.0.0.2", "127.0.0.3", "127.0.0.4"), TTL: 0}}},
		{"CNAME chain: the name asked", query("alias.example.test", dns.TypeA, false), []Answered{{Name: "alias.example.test", Addrs: addrs("127.0.0.3"), TTL: 60}}},
		{"AAAA", query("www.example.test", dns.TypeAAAA, false), []Answered{{Name: "www.example.test", Addrs: addrs("2001:db8:1::2"), TTL: 60}}},
		{"every address stripped", query("rebind.example.test", dns.TypeA, false), nil},
		{"NXDOMAIN", query("nope.example.test", dns.TypeA, false), nil},
		{"refused name", query("evil.test", dns.TypeA, false), nil},
		{"denied domain", query("bad.example.test", dns.TypeA, false), nil},
		{"type", query("www.example.test", dns.TypeTXT, false), nil},
		{"upstream SERVFAIL", query("servfail.example.test", dns.TypeA, false), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.ask("udp", c.q)
			got := o.took()
			for i := range c.want {
				c.want[i].Src, c.want[i].Tenant, c.want[i].VMID = netip.MustParseAddr("127.0.0.1"), "t1", "vm1"
			}
			if !slices.EqualFunc(got, c.want, func(a, b Answered) bool {
				return a.Src == b.Src && a.Tenant == b.Tenant && a.VMID == b.VMID && a.Name == b.Name && slices.Equal(a.Addrs, b.Addrs) && a.TTL == b.TTL
			}) {
				t.Errorf("told %+v, want %+v", got, c.want)
			}
		})
	}
}

// TestOpenTCPUnknownSandbox: a source of no sandbox opens nothing, for anyone.
func TestOpenTCPUnknownSandbox(t *testing.T) {
	o := &opener{}
	e := newEnv(t, mkSet(t, basePolicy), withTCP(o))
	e.known.Store(false)
	e.ask("udp", query("www.example.test", dns.TypeA, false))
	if got := o.took(); len(got) != 0 {
		t.Errorf("told %+v", got)
	}
}

// TestOpenTCPTruncated: over UDP the opener gets only the addresses that fit in the
// answer; over TCP, all of them.
func TestOpenTCPTruncated(t *testing.T) {
	o := &opener{}
	e := newEnv(t, mkSet(t, basePolicy), withTCP(o))
	for _, network := range []string{"udp", "tcp"} {
		r, _ := e.ask(network, query("big.example.test", dns.TypeA, false))
		got := o.took()
		if len(got) != 1 {
			t.Fatalf("%s: told %d times", network, len(got))
		}
		var given []netip.Addr
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				ip, _ := netip.AddrFromSlice(a.A)
				given = append(given, ip)
			}
		}
		if !slices.Equal(got[0].Addrs, given) {
			t.Errorf("%s: told %v, the answer gave %v", network, got[0].Addrs, given)
		}
		if want := network == "udp"; r.Truncated != want || (len(given) < 60) != want {
			t.Errorf("%s: TC %v with %d addresses", network, r.Truncated, len(given))
		}
	}
}

// TestOpenTCPBeforeAnswer: the answer is written only once OpenTCP has returned, so the
// sandbox's first connection finds the kernel open.
func TestOpenTCPBeforeAnswer(t *testing.T) {
	o := &opener{block: make(chan struct{})}
	e := newEnv(t, mkSet(t, basePolicy), withTCP(o))
	go func() {
		time.Sleep(20 * time.Millisecond) // an opener that takes a while
		close(o.block)
	}()
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	r, _, err := c.Exchange(query("www.example.test", dns.TypeA, false), e.udp)
	if err != nil {
		t.Fatal(err)
	}
	if !o.done.Load() { // before the record is waited for: it is sent after the answer
		t.Error("the answer came before OpenTCP returned")
	}
	e.record()
	if len(r.Answer) != 1 {
		t.Errorf("answer %v", r.Answer)
	}
}

// TestOpenTCPFails: when the kernel cannot be opened, the sandbox gets SERVFAIL (no
// address), with an EDE saying so, over UDP and TCP; the record keeps the policy's
// decision, without an address.
func TestOpenTCPFails(t *testing.T) {
	o := &opener{err: errors.New("netlink: no buffer space")}
	e := newEnv(t, mkSet(t, basePolicy), withTCP(o))
	for _, network := range []string{"udp", "tcp"} {
		for _, edns := range []bool{false, true} {
			r, rec := e.ask(network, query("www.example.test", dns.TypeA, edns))
			if r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
				t.Errorf("%s edns %v: rcode %s, answer %v", network, edns, dns.RcodeToString[r.Rcode], r.Answer)
			}
			if x, ok := ede(r); ok != edns || (ok && x.ExtraText != ruleOpen) {
				t.Errorf("%s edns %v: EDE %v", network, edns, x)
			}
			if rec.Decision != events.Allow || rec.IP != "" || rec.Host != "www.example.test" {
				t.Errorf("%s: record %+v", network, rec)
			}
			if len(r.Question) != 1 || r.Question[0].Name != "www.example.test." {
				t.Errorf("%s: question %v", network, r.Question)
			}
		}
	}
}
