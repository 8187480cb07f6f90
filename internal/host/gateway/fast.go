package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/dataplane/dnsfilter"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/sni"
	"github.com/egressd/egressd/internal/host/fastpath"
	"github.com/egressd/egressd/internal/host/firewall"
	"github.com/egressd/egressd/policy"
)

// ViaFastPath is the Via of the records of flows the kernel forwards after Judge.
const ViaFastPath = "fast_path"

// fastPort is the one port of the fast path: TLS on 443 (DESIGN §4).
const fastPort = 443

// fastAnswer is one address of a VM's fast_<name> set: the names whose answers gave it to
// the sandbox, each until its admission ends. Judge lets a flow through only for one of
// these names (the destination must be an address resolved for the server name).
type fastAnswer map[string]time.Time

// expires is when the address leaves the set: the last of its names' ends.
func (a fastAnswer) expires() time.Time {
	var last time.Time
	for _, t := range a {
		if t.After(last) {
			last = t
		}
	}
	return last
}

// flowKey is a TCP flow as the sandbox sent it.
type flowKey struct{ src, dst netip.AddrPort }

// verifiedFlow is what Judge allowed: the record of its close and the cut of a tightening
// judge it again by this.
type verifiedFlow struct {
	host   string
	d      policy.Decision
	at     time.Time
	closed bool // its close is recorded
}

// fastState is the fast-path part of a VM's book (vmTCP.fast). Its maps are read by Judge,
// on the queue's goroutine, under mu only; they are written under mu, and, for answers,
// also under the gateway's lock that applies hold, so that an apply sees them whole.
type fastState struct {
	mu      sync.Mutex
	answers map[netip.Addr]fastAnswer
	// slow are addresses answered for names that must go through the proxy (intercepted):
	// no answer of another name opens them while they last, so that a connection with the
	// intercepted name never meets the fast path's refusal.
	slow     map[netip.Addr]time.Time
	verified *bounded[flowKey, verifiedFlow]
	// flushed is the policy the verified flows were last judged by; inherited and stale are
	// vmTCP's, for the fast path's own cut (which may fail and be retried alone).
	flushed          *policy.Effective
	inherited, stale bool
}

func newFastState() *fastState {
	return &fastState{
		answers:  make(map[netip.Addr]fastAnswer),
		slow:     make(map[netip.Addr]time.Time),
		verified: newBounded[flowKey, verifiedFlow](maxRemembered),
	}
}

// intercepts reports whether tenant's connections to host must go through the proxy's
// interception engine (Config.Intercepts; without it, the policy's http_rules alone).
func (g *Gateway) intercepts(tenant string, eff *policy.Effective, host string) bool {
	if g.cfg.Intercepts != nil {
		return g.cfg.Intercepts(tenant, eff, host)
	}
	return eff.Intercepts(host)
}

// fastDecide is the decision that lets a flow to host at ip take the fast path: allowed on
// 443 by name at that address, not by the address alone (allowed_cidrs: the proxy judges a
// name seen there at that address, as before), and not intercepted. ok is false for what
// stays the proxy's: then d is empty.
func (g *Gateway) fastDecide(tenant string, eff *policy.Effective, host string, ip netip.Addr) (d policy.Decision, ok bool) {
	if eff == nil || eff.MonitorOnly() || g.intercepts(tenant, eff, host) {
		return policy.Decision{}, false
	}
	if byAddr := eff.Decide(policy.Conn{IP: ip, Port: fastPort, Transport: policy.TCP, IPLiteral: true}); byAddr.Allow {
		return policy.Decision{}, false
	}
	d = eff.Decide(policy.Conn{Host: host, IP: ip, Port: fastPort, Transport: policy.TCP})
	return d, d.Allow && !d.WouldDeny
}

// openFastLocked puts the answer's addresses that the fast path may take into the VM's
// fast_<name> set (firewall.AdmitFast) until now + life, and remembers the name for each,
// for Judge. Addresses of an intercepted name are kept out of the set (and taken out when
// another name's answer had put them there), so that its connections go to the proxy.
// Called with g.mu held, from OpenTCP.
func (g *Gateway) openFastLocked(vm VM, st *vmTCP, a dnsfilter.Answered, now time.Time, life time.Duration) error {
	if st == nil {
		return nil // no rules in force yet: the proxy takes its connections
	}
	fs := st.fast
	host, err := policy.NormalizeName(a.Name)
	if err != nil {
		return nil
	}
	var add, revoke []firewall.Endpoint
	exp := now.Add(life)
	intercepted := g.intercepts(vm.Tenant, vm.Effective, host)
	fs.mu.Lock()
	for _, ip := range a.Addrs {
		ip = ip.Unmap()
		if !ip.Is4() {
			continue
		}
		if intercepted {
			if t := fs.slow[ip]; t.Before(exp) {
				fs.slow[ip] = exp
			}
			if _, ok := fs.answers[ip]; ok {
				delete(fs.answers, ip)
				revoke = append(revoke, firewall.Endpoint{Addr: ip, Port: fastPort, Timeout: time.Second})
			}
			continue
		}
		if fs.slow[ip].After(now) {
			continue
		}
		if _, ok := g.fastDecide(vm.Tenant, vm.Effective, host, ip); !ok {
			continue
		}
		ans := fs.answers[ip]
		if ans == nil {
			if len(fs.answers) >= maxAdmissions {
				break // past the bound, the proxy takes the rest
			}
			ans = make(fastAnswer)
			fs.answers[ip] = ans
		}
		if ans[host].Before(exp) {
			ans[host] = exp
		}
		add = append(add, firewall.Endpoint{Addr: ip, Port: fastPort, Timeout: ans.expires().Sub(now)})
	}
	fs.mu.Unlock()
	name := g.inForce[a.Src]
	if len(revoke) > 0 {
		if err := g.fw.RevokeFast(name, revoke); err != nil {
			return fmt.Errorf("gateway: fast path: closing addresses of intercepted %s for %s/%s: %w", host, vm.Tenant, vm.ID, err)
		}
	}
	if len(add) > 0 {
		if err := g.fw.AdmitFast(name, add); err != nil {
			return fmt.Errorf("gateway: fast path: opening %s for %s/%s: %w", host, vm.Tenant, vm.ID, err)
		}
	}
	return nil
}

// fastLocked is the fast path part of a VM's sandbox in the desired state: its answers that
// have not expired and whose names its policy still lets through the fast path, with their
// remaining lifetimes. cut says some were dropped (the table must be replaced now).
func (g *Gateway) fastLocked(vm VM, st *vmTCP, now time.Time) (eps []firewall.Endpoint, cut bool) {
	if !g.cfg.FastPath {
		return nil, false
	}
	fs := st.fast
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for ip, t := range fs.slow {
		if !t.After(now) {
			delete(fs.slow, ip)
		}
	}
	for ip, ans := range fs.answers {
		for host, t := range ans {
			if !t.After(now) {
				delete(ans, host)
				continue
			}
			if _, ok := g.fastDecide(vm.Tenant, vm.Effective, host, ip); !ok {
				delete(ans, host)
				cut = true
			}
		}
		if len(ans) == 0 {
			delete(fs.answers, ip)
			continue
		}
		eps = append(eps, firewall.Endpoint{Addr: ip, Port: fastPort, Timeout: ans.expires().Sub(now)})
	}
	return eps, cut
}

// Judge decides a fast-path flow whose ClientHello the verifier read whole from its packets
// (fastpath.Judge): the sandbox is the VM whose network has the source address; the server
// name, normalised, must be allowed on 443 by that VM's effective policy at the
// destination address, not intercepted, and the destination must be an address that the
// gateway's DNS filter answered this VM for that name, in an answer still in force. Every
// decision is recorded as the proxy records one (a "connect" record, via "fast_path"); an
// allowed flow is remembered for the record of its close and for the cut of a tightening.
// A refusal (h.Err set) is recorded too; when it comes for a flow already allowed (its
// later packets disagreed with the hello judged), the flow's close is recorded with it.
func (g *Gateway) Judge(f fastpath.Flow, h fastpath.Hello) bool {
	now := g.now()
	src, dst := f.Src.Addr().Unmap(), netip.AddrPortFrom(f.Dst.Addr().Unmap(), f.Dst.Port())
	c := policy.Conn{IP: dst.Addr(), Port: dst.Port(), Transport: policy.TCP}
	vm, ok := g.view.VMByAddr(src)
	if !ok || !g.owns(vm.Network) || !vm.Network.Live() {
		g.recordFast(events.Source{}, c, policy.Refused(policy.ReasonUnknownSandbox, "fast path: the source address "+src.String()+" belongs to no VM of this node"))
		return false
	}
	rs := events.Source{Tenant: vm.Tenant, VMID: vm.ID}
	st := g.book(vm, src)
	key := flowKey{netip.AddrPortFrom(src, f.Src.Port()), dst}
	if h.Err != nil {
		if st != nil {
			st.fast.mu.Lock()
			v, was := st.fast.verified.get(key)
			was = was && !v.closed
			if was {
				v.closed = true
				st.fast.verified.put(key, v)
			}
			st.fast.mu.Unlock()
			if was {
				c.Host = v.host
				g.cfg.Sink.Record(fastClosed(rs, c, 0, 0, now.Sub(v.at), "reset"))
			}
		}
		g.recordFast(rs, c, refusal(h.Err))
		return false
	}
	host, err := policy.NormalizeName(h.Name)
	if err != nil {
		g.recordFast(rs, c, policy.Refused(policy.ReasonBadName, "fast path: TLS server name: "+err.Error()))
		return false
	}
	c.Host = host
	eff := vm.Effective
	if eff == nil {
		g.recordFast(rs, c, policy.Decision{Reason: policy.ReasonNoPolicy, Rule: "no policy is in force for this sandbox", Layer: policy.LayerDefault, Mode: policy.Enforce})
		return false
	}
	if g.intercepts(vm.Tenant, eff, host) {
		g.recordFast(rs, c, policy.Refused(policy.ReasonInterceptionUnavailable, "fast path: "+host+" is intercepted, which only the transparent proxy does: look the name up again and reconnect"))
		return false
	}
	d := eff.Decide(c)
	if !d.Allow || d.WouldDeny {
		g.recordFast(rs, c, d)
		return false
	}
	if st == nil {
		g.recordFast(rs, c, policy.Refused(policy.ReasonNotResolved, "fast path: no answer of this gateway is in force for this sandbox"))
		return false
	}
	st.fast.mu.Lock()
	defer st.fast.mu.Unlock()
	if !st.fast.answers[dst.Addr()][host].After(now) {
		g.recordFast(rs, c, policy.Refused(policy.ReasonNotResolved, "fast path: "+dst.Addr().String()+" was not answered to this sandbox for "+host))
		return false
	}
	st.fast.verified.put(key, verifiedFlow{host: host, d: d, at: now})
	g.recordFast(rs, c, d)
	return true
}

// StillAllowed reports whether a flow that Judge let through may be forwarded by the kernel
// now that its server has acknowledged the ClientHello: the VM's policy of now still lets
// its name through the fast path at its address. The cut of a tightening reads the kernel's
// marks, so a tightening between Judge and the flow's first mark would miss it; this second
// look, at the confirmation, closes that gap. A flow refused here has its close recorded
// (the caller refuses it in the kernel).
func (g *Gateway) StillAllowed(f fastpath.Flow) bool {
	src, dst := f.Src.Addr().Unmap(), netip.AddrPortFrom(f.Dst.Addr().Unmap(), f.Dst.Port())
	vm, ok := g.view.VMByAddr(src)
	if !ok || !g.owns(vm.Network) || !vm.Network.Live() {
		return false
	}
	st := g.book(vm, src)
	if st == nil {
		return false
	}
	key := flowKey{netip.AddrPortFrom(src, f.Src.Port()), dst}
	st.fast.mu.Lock()
	v, ok := st.fast.verified.get(key)
	st.fast.mu.Unlock()
	if !ok || v.closed {
		return false
	}
	if _, ok := g.fastDecide(vm.Tenant, vm.Effective, v.host, dst.Addr()); ok {
		return true
	}
	st.fast.mu.Lock()
	v.closed = true
	st.fast.verified.put(key, v)
	st.fast.mu.Unlock()
	rs := events.Source{Tenant: vm.Tenant, VMID: vm.ID}
	g.cfg.Sink.Record(fastClosed(rs, policy.Conn{Host: v.host, IP: dst.Addr(), Port: dst.Port(), Transport: policy.TCP}, 0, 0, g.now().Sub(v.at), "policy"))
	return false
}

// refusal is the decision recorded for a flow the verifier could not verify.
func refusal(err error) policy.Decision {
	switch {
	case errors.Is(err, sni.ErrNoServerName):
		return policy.Refused(policy.ReasonNoHost, "fast path: the ClientHello has no server name")
	case errors.Is(err, fastpath.ErrNotTLS), errors.Is(err, sni.ErrNotTLS), errors.Is(err, sni.ErrMalformed):
		return policy.Refused(policy.ReasonNotTLS, "fast path: "+err.Error())
	}
	return policy.Refused(policy.ReasonAmbiguousStream, "fast path: "+err.Error())
}

// recordFast records a fast-path decision.
func (g *Gateway) recordFast(src events.Source, c policy.Conn, d policy.Decision) {
	r := events.Decided(events.KindConnect, src, c, d)
	r.Via = ViaFastPath
	g.cfg.Sink.Record(r)
}

func fastClosed(src events.Source, c policy.Conn, up, down int64, lived time.Duration, reason string) events.Record {
	r := events.Closed(src, c, up, down, lived, reason)
	r.Via = ViaFastPath
	return r
}

// recordFastFlow records the close of a verified flow that conntrack reports ended (its
// connect record was made by Judge). A flow that this run did not verify (an earlier run
// did, or the book forgot it) gets both records, without a name.
func (g *Gateway) recordFastFlow(vm VM, f Flow) {
	rs := events.Source{Tenant: vm.Tenant, VMID: vm.ID}
	src := f.Src.Unmap()
	c := policy.Conn{IP: f.Dst.Unmap(), Port: f.DstPort, Transport: policy.TCP}
	var v verifiedFlow
	var ok bool
	if st := g.book(vm, src); st != nil {
		key := flowKey{netip.AddrPortFrom(src, f.SrcPort), netip.AddrPortFrom(c.IP, c.Port)}
		st.fast.mu.Lock()
		if v, ok = st.fast.verified.get(key); ok {
			if v.closed {
				st.fast.mu.Unlock()
				return // recorded when the flow was refused
			}
			v.closed = true
			st.fast.verified.put(key, v)
		}
		st.fast.mu.Unlock()
	}
	if ok {
		c.Host = v.host
	} else {
		r := events.Decided(events.KindConnect, rs, c, policy.Decision{Allow: true, Reason: policy.ReasonAllowHTTPS, Rule: "fast path (the verified ClientHello is forgotten)", Mode: policy.Enforce})
		r.Via = ViaFastPath
		r.Time = f.Start
		g.cfg.Sink.Record(r)
	}
	g.cfg.Sink.Record(fastClosed(rs, c, f.BytesUp, f.BytesDown, f.Duration, f.CloseReason))
}

// flushFastLocked cuts, for a sandbox whose effective policy changed since its verified
// flows were last judged, those that the new policy no longer lets through the fast path
// (judged by the name of their ClientHello, at their address, as Judge did), and those of
// which nothing is known (an earlier run verified them, or the book forgot them). A stale
// book (a new VM at an address) cuts every verified flow from its address that it did not
// verify itself. A sandbox's first policy is the one its flows were verified under.
func (g *Gateway) flushFastLocked(name string, st *vmTCP) {
	fs := st.fast
	if !g.cfg.FastPath || fs.flushed == st.eff && !fs.stale {
		return
	}
	fs.mu.Lock()
	known := fs.verified.len()
	fs.mu.Unlock()
	if !fs.stale && (fs.flushed == nil || (known == 0 && !fs.inherited)) {
		fs.flushed = st.eff
		return
	}
	eff := st.eff
	keep := func(src, dst netip.AddrPort) bool {
		key := flowKey{netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())}
		fs.mu.Lock()
		v, ok := fs.verified.get(key)
		fs.mu.Unlock()
		if !ok {
			return false
		}
		_, ok = g.fastDecide(st.tenant, eff, v.host, key.dst.Addr())
		return ok
	}
	if _, err := g.fw.CutFast(st.addr, keep); err != nil {
		g.log.Warn("gateway: cutting fast-path flows of a tightened policy", "netns", name, "err", err)
		return // again at the next apply
	}
	fs.flushed, fs.inherited, fs.stale = st.eff, false, false
}

// fastVerified says whether the book ever verified a flow (so that its sandbox's going
// must cut).
func (st *vmTCP) fastVerified() bool {
	st.fast.mu.Lock()
	defer st.fast.mu.Unlock()
	return st.fast.verified.len() > 0
}
