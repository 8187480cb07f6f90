package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/host/fastpath"
	"github.com/egressd/egressd/internal/host/firewall"
	"github.com/egressd/egressd/policy"
)

// kernelFast stands for the kernel's side of the fast path: each sandbox's fast_<name> set
// as AdmitFast, RevokeFast and Apply leave it, and the verified flows (marked) until CutFast.
type kernelFast struct {
	mu    sync.Mutex
	sets  map[string]map[netip.Addr]time.Time // by sandbox name: address → expiry
	flows map[netip.Addr][]flowKey            // by sandbox address: verified flows
	cuts  []flowKey
}

func (k *kernelFast) apply(d firewall.Desired, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sets = make(map[string]map[netip.Addr]time.Time)
	for _, s := range d.Sandboxes {
		k.sets[s.Name] = make(map[netip.Addr]time.Time)
		for _, e := range s.Fast {
			k.sets[s.Name][e.Addr] = now.Add(e.Timeout)
		}
	}
}

func (f *fw) AdmitFast(name string, eps []firewall.Endpoint) error {
	k := &f.fast
	k.mu.Lock()
	defer k.mu.Unlock()
	set, ok := k.sets[name]
	if !ok {
		return fmt.Errorf("admit fast: no sandbox %s in the table", name)
	}
	for _, e := range eps {
		if e.Port != 443 {
			return fmt.Errorf("admit fast: port %d", e.Port)
		}
		set[e.Addr] = f.kernel.now().Add(e.Timeout)
	}
	return nil
}

func (f *fw) RevokeFast(name string, eps []firewall.Endpoint) error {
	k := &f.fast
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range eps {
		delete(k.sets[name], e.Addr)
	}
	return nil
}

func (f *fw) CutFast(sandbox netip.Addr, keep func(src, dst netip.AddrPort) bool) (int, error) {
	k := &f.fast
	k.mu.Lock()
	defer k.mu.Unlock()
	var kept []flowKey
	for _, fl := range k.flows[sandbox] {
		if keep != nil && keep(fl.src, fl.dst) {
			kept = append(kept, fl)
		} else {
			k.cuts = append(k.cuts, fl)
		}
	}
	n := len(k.flows[sandbox]) - len(kept)
	if k.flows != nil {
		k.flows[sandbox] = kept
	}
	return n, nil
}

// elements lists sandbox name's fast set, unexpired, as addresses.
func (k *kernelFast) elements(name string, now time.Time) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for a, exp := range k.sets[name] {
		if exp.After(now) {
			out = append(out, a.String())
		}
	}
	slices.Sort(out)
	return out
}

// verified notes a flow the kernel now forwards by its mark.
func (k *kernelFast) verified(fl fastpath.Flow) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.flows == nil {
		k.flows = make(map[netip.Addr][]flowKey)
	}
	k.flows[fl.Src.Addr()] = append(k.flows[fl.Src.Addr()], flowKey{fl.Src, fl.Dst})
}

func (k *kernelFast) takeCuts() []flowKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := k.cuts
	k.cuts = nil
	return out
}

// fastNode is a tcpNode whose gateway runs the fast path.
func (w *world) fastNode() *tcpNode {
	w.t.Helper()
	return w.clockedNode(true)
}

// judged numbers the flows of judge, so that each has a source port of its own.
var judged atomic.Uint32

var webPolicy = policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test", "other.example.test"}}

// judge asks the gateway about a new flow from src to dst:443 whose ClientHello named name.
func (n *tcpNode) judge(src netip.Addr, dst, name string, err error) bool {
	port := 40000 + uint16(judged.Add(1)%20000)
	return n.judgeFlow(fastpath.Flow{Src: netip.AddrPortFrom(src, port), Dst: netip.AddrPortFrom(netip.MustParseAddr(dst), 443)}, name, err)
}

// judgeFlow asks the gateway about flow f whose ClientHello named name.
func (n *tcpNode) judgeFlow(f fastpath.Flow, name string, err error) bool {
	ok := n.gw.Judge(f, fastpath.Hello{Name: name, Err: err})
	if ok {
		n.fw.fast.verified(f)
	}
	return ok
}

// TestFastAnswersOpenTheSet: what an answer puts in the fast set is what the fast path may
// verify: names allowed on 443 by name, not by address, not intercepted, not in monitor.
func TestFastAnswersOpenTheSet(t *testing.T) {
	cases := []struct {
		name  string
		p     policy.Policy
		host  string
		addrs []string
		want  []string
	}{
		{"allowed name", webPolicy, "api.example.test", []string{"203.0.113.10", "203.0.113.11"}, []string{"203.0.113.10", "203.0.113.11"}},
		{"unlisted name", webPolicy, "evil.example.test", []string{"203.0.113.10"}, nil},
		{"https off", policy.Policy{AllowHTTP: true, AllowedDomains: []string{"api.example.test"}}, "api.example.test", []string{"203.0.113.10"}, nil},
		{"private and hard-denied answers", webPolicy, "api.example.test", []string{"198.51.100.7", "127.0.0.1", "169.254.169.254", "203.0.113.10"}, []string{"203.0.113.10"}},
		{"inside allowed_cidrs: the proxy's", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}, AllowedCIDRs: []string{"203.0.113.0/28"}},
			"api.example.test", []string{"203.0.113.10", "203.0.113.20"}, []string{"203.0.113.20"}},
		{"denied_domains wins", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"*.example.test"}, DeniedDomains: []string{"api.example.test"}}, "api.example.test", []string{"203.0.113.10"}, nil},
		{"intercepted (http_rules)", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"},
			HTTPRules: []policy.HTTPRule{{Domain: "api.example.test", Methods: []string{"GET"}, Paths: []string{"/"}}}}, "api.example.test", []string{"203.0.113.10"}, nil},
		{"monitor", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}, Mode: policy.Monitor}, "api.example.test", []string{"203.0.113.10"}, nil},
		{"IPv6 ignored, mapped taken", webPolicy, "api.example.test", []string{"2001:db8::1", "::ffff:203.0.113.12"}, []string{"203.0.113.12"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := newTCPWorld(t).fastNode()
			name, addr := a.vm("t", "a", c.p)
			if err := a.answer(addr, "t", "a", c.host, 30, c.addrs...); err != nil {
				t.Fatal(err)
			}
			if got := a.fw.fast.elements(name, a.clock.Now()); !slices.Equal(got, c.want) {
				t.Errorf("fast set %v, want %v", got, c.want)
			}
		})
	}
}

// TestFastOff: without FastPath, answers open nothing and the table has no fast path.
func TestFastOff(t *testing.T) {
	a := newTCPWorld(t).tcpNode()
	name, addr := a.vm("t", "a", webPolicy)
	must(t, a.answer(addr, "t", "a", "api.example.test", 30, "203.0.113.10"))
	if got := a.fw.fast.elements(name, a.clock.Now()); len(got) != 0 {
		t.Errorf("fast set %v with the fast path off", got)
	}
}

// TestFastJudge: the judge lets a flow through only for an allowed name that the gateway
// answered this VM with the destination; every judgement is recorded via the fast path.
func TestFastJudge(t *testing.T) {
	a := newTCPWorld(t).fastNode()
	_, addrA := a.vm("t", "a", webPolicy)
	_, addrB := a.vm("t", "b", webPolicy)
	must(t, a.answer(addrA, "t", "a", "api.example.test", 30, "203.0.113.10"))
	must(t, a.answer(addrA, "t", "a", "other.example.test", 30, "203.0.113.11"))
	a.recs.take()
	cases := []struct {
		name   string
		src    netip.Addr
		dst    string
		sni    string
		err    error
		ok     bool
		reason policy.Reason
	}{
		{"answered name and address", addrA, "203.0.113.10", "api.example.test", nil, true, policy.ReasonAllowedDomains},
		{"other letter case, trailing dot", addrA, "203.0.113.10", "API.Example.TEST.", nil, true, policy.ReasonAllowedDomains},
		{"allowed name at another allowed name's address", addrA, "203.0.113.11", "api.example.test", nil, false, policy.ReasonNotResolved},
		{"allowed name at an address never answered", addrA, "203.0.113.12", "api.example.test", nil, false, policy.ReasonNotResolved},
		{"another VM's answer", addrB, "203.0.113.10", "api.example.test", nil, false, policy.ReasonNotResolved},
		{"denied name at an answered address", addrA, "203.0.113.10", "evil.example.test", nil, false, policy.ReasonHostNotListed},
		{"unknown source", netip.MustParseAddr("100.96.3.250"), "203.0.113.10", "api.example.test", nil, false, policy.ReasonUnknownSandbox},
		{"bad name", addrA, "203.0.113.10", "api..example.test", nil, false, policy.ReasonBadName},
		{"ambiguous packets", addrA, "203.0.113.10", "", fmt.Errorf("%w at byte 17", fastpath.ErrOverlap), false, policy.ReasonAmbiguousStream},
		{"not TLS", addrA, "203.0.113.10", "", fastpath.ErrNotTLS, false, policy.ReasonNotTLS},
		{"no server name", addrA, "203.0.113.10", "", fastpath.ErrNoServerName, false, policy.ReasonNoHost},
	}
	for _, c := range cases {
		if got := a.judge(c.src, c.dst, c.sni, c.err); got != c.ok {
			t.Errorf("%s: judged %v, want %v", c.name, got, c.ok)
		}
		recs := a.recs.take()
		if len(recs) != 1 {
			t.Errorf("%s: %d records, want 1: %+v", c.name, len(recs), recs)
			continue
		}
		r := recs[0]
		if r.Kind != events.KindConnect || r.Via != ViaFastPath || r.Reason != c.reason || (r.Decision == events.Allow) != c.ok || r.Port != 443 || r.IP != c.dst {
			t.Errorf("%s: record %+v, want %s via %s", c.name, r, c.reason, ViaFastPath)
		}
	}
}

// TestFastAnswerExpiry: an answer's address is judged for its lifetime only.
func TestFastAnswerExpiry(t *testing.T) {
	a := newTCPWorld(t).fastNode()
	_, addr := a.vm("t", "a", webPolicy)
	must(t, a.answer(addr, "t", "a", "api.example.test", 0, "203.0.113.10"))
	a.clock.add(DefaultTCPMinTTL + DefaultTCPGrace - time.Second)
	if !a.judge(addr, "203.0.113.10", "api.example.test", nil) {
		t.Fatalf("refused within the answer's lifetime: %+v", a.recs.take())
	}
	a.clock.add(2 * time.Second)
	if a.judge(addr, "203.0.113.10", "api.example.test", nil) {
		t.Fatal("allowed after the answer's lifetime")
	}
}

// TestFastInterceptedNameTakesAddressesOut: an answer for an intercepted name takes its
// addresses out of the set (a CDN address shared with a fast name), keeps them out while
// it lasts, and the judge refuses an intercepted name.
func TestFastInterceptedNameTakesAddressesOut(t *testing.T) {
	p := policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test", "rules.example.test"},
		HTTPRules: []policy.HTTPRule{{Domain: "rules.example.test", Methods: []string{"GET"}, Paths: []string{"/"}}}}
	a := newTCPWorld(t).fastNode()
	name, addr := a.vm("t", "a", p)
	must(t, a.answer(addr, "t", "a", "api.example.test", 30, "203.0.113.10"))
	if got := a.fw.fast.elements(name, a.clock.Now()); !slices.Equal(got, []string{"203.0.113.10"}) {
		t.Fatalf("fast set %v", got)
	}
	must(t, a.answer(addr, "t", "a", "rules.example.test", 30, "203.0.113.10"))
	if got := a.fw.fast.elements(name, a.clock.Now()); len(got) != 0 {
		t.Fatalf("fast set %v after the intercepted name's answer", got)
	}
	must(t, a.answer(addr, "t", "a", "api.example.test", 30, "203.0.113.10"))
	if got := a.fw.fast.elements(name, a.clock.Now()); len(got) != 0 {
		t.Fatalf("fast set %v: another name's answer put the intercepted name's address back", got)
	}
	if a.judge(addr, "203.0.113.10", "rules.example.test", nil) {
		t.Fatal("the judge let an intercepted name through")
	}
}

// TestFastTighteningCuts: a policy change cuts the verified flows it no longer allows,
// judged by their ClientHello's name, keeps the others, and takes the name's addresses out
// of the set; a VM that goes away has every verified flow cut.
func TestFastTighteningCuts(t *testing.T) {
	a := newTCPWorld(t).fastNode()
	name, addr := a.vm("t", "a", webPolicy)
	must(t, a.answer(addr, "t", "a", "api.example.test", 30, "203.0.113.10"))
	must(t, a.answer(addr, "t", "a", "other.example.test", 30, "203.0.113.11"))
	if !a.judge(addr, "203.0.113.10", "api.example.test", nil) || !a.judge(addr, "203.0.113.11", "other.example.test", nil) {
		t.Fatal("not verified")
	}
	a.setTCPPolicy("t", "a", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"other.example.test"}})
	cuts := a.fw.fast.takeCuts()
	if len(cuts) != 1 || cuts[0].dst.String() != "203.0.113.10:443" {
		t.Errorf("cut %v, want the flow to 203.0.113.10:443 only", cuts)
	}
	if got := a.fw.fast.elements(name, a.clock.Now()); !slices.Equal(got, []string{"203.0.113.11"}) {
		t.Errorf("fast set %v after the tightening", got)
	}
}

// TestFastRecords: a verified flow's close comes from conntrack, with its name, once; a
// refusal of a flow already let through records its close at once.
func TestFastRecords(t *testing.T) {
	a := newTCPWorld(t).fastNode()
	_, addr := a.vm("t", "a", webPolicy)
	must(t, a.answer(addr, "t", "a", "api.example.test", 30, "203.0.113.10"))
	flow := fastpath.Flow{Src: netip.AddrPortFrom(addr, 40000), Dst: netip.MustParseAddrPort("203.0.113.10:443")}
	if !a.judgeFlow(flow, "api.example.test", nil) {
		t.Fatal("not verified")
	}
	a.recs.take()
	f := Flow{Src: addr, Dst: netip.MustParseAddr("203.0.113.10"), DstPort: 443, SrcPort: 40000, Fast: true, BytesUp: 100, BytesDown: 2000, Duration: time.Second}
	a.gw.RecordFlow(f)
	recs := a.recs.take()
	if len(recs) != 1 || recs[0].Kind != events.KindClose || recs[0].Host != "api.example.test" || recs[0].BytesDown != 2000 || recs[0].Via != ViaFastPath {
		t.Fatalf("records %+v, want one close of api.example.test", recs)
	}
	a.gw.RecordFlow(f)
	if recs := a.recs.take(); len(recs) != 0 {
		t.Errorf("a second close: %+v", recs)
	}
	// Verified, then its later packets disagree: refused, and its close recorded with it.
	flow.Src = netip.AddrPortFrom(addr, 40001)
	if !a.judgeFlow(flow, "api.example.test", nil) {
		t.Fatal("not verified")
	}
	a.recs.take()
	a.judgeFlow(flow, "", errors.Join(fastpath.ErrOverlap))
	recs = a.recs.take()
	if len(recs) != 2 || recs[0].Kind != events.KindClose || recs[1].Reason != policy.ReasonAmbiguousStream {
		t.Errorf("records %+v, want the close then the refusal", recs)
	}
}

// TestFastStillAllowed: the second look at the server's confirmation follows the policy of
// now: a tightening between the verdict and the flow's first mark refuses it then, and
// records its close.
func TestFastStillAllowed(t *testing.T) {
	a := newTCPWorld(t).fastNode()
	_, addr := a.vm("t", "a", webPolicy)
	must(t, a.answer(addr, "t", "a", "api.example.test", 30, "203.0.113.10"))
	flow := fastpath.Flow{Src: netip.AddrPortFrom(addr, 40100), Dst: netip.MustParseAddrPort("203.0.113.10:443")}
	if !a.judgeFlow(flow, "api.example.test", nil) || !a.gw.StillAllowed(flow) {
		t.Fatal("not allowed")
	}
	a.recs.take()
	a.setTCPPolicy("t", "a", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"other.example.test"}})
	if a.gw.StillAllowed(flow) {
		t.Fatal("still allowed after the tightening")
	}
	recs := a.recs.take()
	if len(recs) != 1 || recs[0].Kind != events.KindClose || recs[0].CloseReason != "policy" || recs[0].Via != ViaFastPath {
		t.Errorf("records %+v, want the flow's close", recs)
	}
	other := fastpath.Flow{Src: netip.AddrPortFrom(addr, 40101), Dst: flow.Dst}
	if a.gw.StillAllowed(other) {
		t.Error("a flow Judge never let through")
	}
}
