package gateway

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// TestRecordFlow: a kernel-forwarded connection is a connect record (allowed_tcp, its
// rule, the name looked up) and its close record (bytes, duration), for the VM whose
// address sent it; after its admission expired, the record still names it.
func TestRecordFlow(t *testing.T) {
	w := newTCPWorld(t)
	a := w.tcpNode()
	_, addr := a.vm("t", "a", gitPolicy)
	_, addrB := a.vm("t", "b", gitPolicy)
	must(t, a.answer(addr, "t", "a", "git.example.test", 60, "203.0.113.10"))
	dst := netip.MustParseAddr("203.0.113.10")
	conn := policy.Conn{Host: "git.example.test", IP: dst, Port: 22, Transport: policy.TCP}
	d := policy.Decision{Allow: true, Reason: policy.ReasonAllowedTCP, Rule: "allowed_tcp git.example.test:22", Layer: policy.LayerVM, Mode: policy.Enforce}
	src := events.Source{Tenant: "t", VMID: "a"}
	closed := events.Closed(src, conn, 1000, 20000, 3*time.Second, "eof")
	want := []events.Record{events.Decided(events.KindConnect, src, conn, d), closed}
	for i := range want {
		want[i].Time = time.Time{}
	}
	for _, step := range []string{"admitted", "expired and pruned"} {
		if step != "admitted" {
			a.clock.add(10 * time.Minute)
			a.gw.mu.Lock()
			must(t, a.gw.applyLocked(true))
			a.gw.mu.Unlock()
		}
		a.gw.RecordFlow(Flow{Src: addr, Dst: dst, DstPort: 22, Duration: 3 * time.Second, BytesUp: 1000, BytesDown: 20000, CloseReason: "eof"})
		if got := a.recs.take(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", step, got, want)
		}
	}
	// Another VM's flow to the same pair: its own, without A's name.
	a.gw.RecordFlow(Flow{Src: addrB, Dst: dst, DstPort: 22, Duration: time.Second})
	got := a.recs.take()
	if len(got) != 2 || got[0].VMID != "b" || got[0].Host != "" || got[1].Kind != events.KindClose {
		t.Errorf("B's flow: %+v", got)
	}
	// No VM at the source: nothing.
	a.gw.RecordFlow(Flow{Src: netip.MustParseAddr("100.96.0.250"), Dst: dst, DstPort: 22})
	if got := a.recs.take(); len(got) != 0 {
		t.Errorf("a flow of no VM: %+v", got)
	}
}

// TestRecordAttempt: a logged first packet is a connect record of the policy's decision,
// named by what this VM looked up, judged by address otherwise; in monitor mode an
// allowed would_deny record and its close.
func TestRecordAttempt(t *testing.T) {
	w := newTCPWorld(t)
	a := w.tcpNode()
	_, addr := a.vm("t", "a", gitPolicy)
	_, addrB := a.vm("t", "b", gitPolicy)
	_, addrM := a.vm("t", "m", policy.Policy{Mode: policy.Monitor, AllowHTTPS: true, AllowedDomains: []string{"www.example.test"}})
	must(t, a.answer(addr, "t", "a", "git.example.test", 60, "203.0.113.10"))
	must(t, a.answer(addrM, "t", "m", "www.example.test", 60, "203.0.113.30"))
	cases := []struct {
		name string
		at   Attempt
		want []string // "decision reason host rule-prefix", and "close" for a close record
	}{
		{"a port the name is not allowed on", Attempt{Src: addr, Dst: mustIP("203.0.113.10"), DstPort: 23},
			[]string{"deny port_not_allowed git.example.test"}},
		{"an address never looked up", Attempt{Src: addr, Dst: mustIP("203.0.113.99"), DstPort: 22},
			[]string{"deny ip_literal "}},
		{"UDP", Attempt{Src: addr, Dst: mustIP("203.0.113.10"), DstPort: 53, Transport: policy.UDP},
			[]string{"deny udp_not_allowed git.example.test"}},
		{"the allowed pair without an answer in force", Attempt{Src: addr, Dst: mustIP("203.0.113.10"), DstPort: 22},
			[]string{"deny ip_literal git.example.test"}},
		{"another VM's lookup is not this VM's", Attempt{Src: addrB, Dst: mustIP("203.0.113.10"), DstPort: 23},
			[]string{"deny ip_literal "}},
		{"hard deny", Attempt{Src: addr, Dst: mustIP("198.51.100.53"), DstPort: 22},
			[]string{"deny hard_deny "}},
		{"monitor", Attempt{Src: addrM, Dst: mustIP("203.0.113.30"), DstPort: 22, Monitor: true},
			[]string{"allow would_deny port_not_allowed www.example.test", "close"}},
		{"no VM", Attempt{Src: mustIP("100.96.0.250"), Dst: mustIP("203.0.113.10"), DstPort: 22}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a.gw.RecordAttempt(c.at)
			var got []string
			for _, r := range a.recs.take() {
				if r.Kind == events.KindClose {
					got = append(got, "close")
					continue
				}
				if r.Kind != events.KindConnect || r.IP != c.at.Dst.String() || r.Port != int(c.at.DstPort) {
					t.Errorf("record %+v", r)
				}
				s := r.Decision
				if r.WouldDeny {
					s += " would_deny"
				}
				got = append(got, s+" "+string(r.Reason)+" "+r.Host)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("records %q, want %q", got, c.want)
			}
		})
	}
}

// TestRecordAttemptBounded: a flood of logged packets gives no more records than the
// bound lets through: here a bucket of 5 that does not refill, so that the count does not
// depend on the machine's speed.
func TestRecordAttemptBounded(t *testing.T) {
	w := newTCPWorld(t)
	a := w.tcpNode()
	_, addr := a.vm("t", "a", gitPolicy)
	a.gw.attempts = rate.NewLimiter(0, 5)
	for range 100 {
		a.gw.RecordAttempt(Attempt{Src: addr, Dst: mustIP("203.0.113.99"), DstPort: 22})
	}
	if n := len(a.recs.take()); n != 5 {
		t.Errorf("%d records of 100 attempts, want 5", n)
	}
}

func mustIP(s string) netip.Addr { return netip.MustParseAddr(s) }
