package gateway

import (
	"net/netip"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// Bound of the records of denied attempts, all sandboxes together, on top of the kernel's
// rate limit per sandbox: a gateway with many sandboxes probing at once records this many
// a second (and a burst), and drops the rest.
const (
	attemptRate  = 200
	attemptBurst = 400
)

// Flow is one connection that the kernel forwarded for a sandbox through its tcp_<name>
// set (ct mark), reported when conntrack destroys it: the flow log's Flow.
type Flow struct {
	Src, Dst netip.Addr // the sandbox and the destination it dialled
	DstPort  uint16
	Start    time.Time // when the connection was first seen; zero: End - Duration
	Duration time.Duration
	// BytesUp and BytesDown are the bytes from the sandbox and back (conntrack's
	// accounting).
	BytesUp, BytesDown int64
	// CloseReason says why it ended, when the flow log knows ("eof", "reset", "policy",
	// "timeout"); empty otherwise.
	CloseReason string
	// SrcPort is the sandbox's port, and Fast says the flow took the fast path (ct mark
	// firewall.MarkFast, or MarkFastWait: released, not yet confirmed by its server): its
	// connect record was made when Judge let it through.
	SrcPort uint16
	Fast    bool
}

// Attempt is the first packet of a flow that the kernel denied for a sandbox, or let
// through in monitor mode and logged: the flow log's Attempt.
type Attempt struct {
	Src, Dst  netip.Addr
	DstPort   uint16
	Transport policy.Transport // tcp, udp, icmp
	// Monitor: the packet was let through (every layer is monitor) and would have been
	// denied; else it was dropped.
	Monitor bool
	Time    time.Time
}

// untracked is the CloseReason of a monitored flow's close record: the kernel forwards it
// without the gateway's accounting, so its bytes are unknown (0).
const untracked = "untracked"

// RecordFlow records a kernel-forwarded allowed_tcp connection (DESIGN §6) as the proxy
// records one it relays: a "connect" record, allowed, with the decision that admitted its
// address and port (reason allowed_tcp, the rule, the name looked up as host), at its
// start, then its "close" record with bytes each way and duration. A flow of an address
// no VM of this node has is dropped; one whose admission is forgotten is recorded with
// the address and no name. A fast-path flow (Fast) gets only its "close" record, its
// "connect" having been made by Judge (recordFastFlow).
func (g *Gateway) RecordFlow(f Flow) {
	vm, ok := g.view.VMByAddr(f.Src.Unmap())
	if !ok || !g.owns(vm.Network) {
		return
	}
	if f.Fast {
		g.recordFastFlow(vm, f)
		return
	}
	dst := f.Dst.Unmap()
	c := policy.Conn{IP: dst, Port: f.DstPort, Transport: policy.TCP}
	d := policy.Decision{Allow: true, Reason: policy.ReasonAllowedTCP, Rule: "allowed_tcp (the admitting answer is forgotten)", Mode: policy.Enforce}
	g.mu.Lock()
	if st := g.bookOf(vm, f.Src.Unmap()); st != nil {
		k := endpoint{dst, f.DstPort}
		ad, ok := st.admits[k]
		if !ok {
			ad, ok = st.admitted.get(k)
		}
		if ok {
			c.Host, d = ad.name, ad.d
		}
	}
	g.mu.Unlock()
	src := events.Source{Tenant: vm.Tenant, VMID: vm.ID}
	start := f.Start
	if start.IsZero() {
		start = g.now().Add(-f.Duration)
	}
	r := events.Decided(events.KindConnect, src, c, d)
	r.Time = start
	g.cfg.Sink.Record(r)
	g.cfg.Sink.Record(events.Closed(src, c, f.BytesUp, f.BytesDown, f.Duration, f.CloseReason))
}

// RecordAttempt records a logged first packet (DESIGN §6), at most attemptRate a second
// for all sandboxes: a "connect" record of the decision the policy takes on it. The host
// is the name this VM last looked up for the address, when the gateway remembers one, and
// the decision is Decide's with that name (or the address alone, as an IP literal), its
// IP, port and transport. The kernel dropped the packet (or, in monitor mode, let it
// through), so a decision that would allow it (a name whose answer expired, say) is
// recorded as a denial (ip_literal: without an answer in force, the kernel knows only
// addresses), whose rule says to look the name up again.
// A monitor attempt is an allowed record with would_deny, followed at once by its close
// record (reason "untracked": the kernel forwards such flows without the gateway's
// accounting), so that every allowed connect record has its close.
func (g *Gateway) RecordAttempt(a Attempt) {
	if !g.attempts.Allow() {
		return
	}
	src := a.Src.Unmap()
	vm, ok := g.view.VMByAddr(src)
	if !ok || !g.owns(vm.Network) {
		return
	}
	dst := a.Dst.Unmap()
	c := policy.Conn{IP: dst, Port: a.DstPort, Transport: a.Transport}
	if c.Transport == "" {
		c.Transport = policy.TCP
	}
	if st := g.book(vm, src); st != nil {
		st.namesMu.Lock()
		c.Host, _ = st.names.get(dst)
		st.namesMu.Unlock()
	}
	d := decideAttempt(vm.Effective, &c, a.Monitor)
	s := events.Source{Tenant: vm.Tenant, VMID: vm.ID}
	r := events.Decided(events.KindConnect, s, c, d)
	if !a.Time.IsZero() {
		r.Time = a.Time
	}
	g.cfg.Sink.Record(r)
	if d.Allow {
		g.cfg.Sink.Record(events.Closed(s, c, 0, 0, 0, untracked))
	}
}

// ruleNoAnswer is the rule of an attempt that the policy would allow by name but that no
// answer in force opened.
const ruleNoAnswer = "the kernel forwards allowed_tcp to the addresses of a name's current DNS answer only: look the name up again"

// decideAttempt is the decision recorded for a logged packet: see RecordAttempt.
func decideAttempt(eff *policy.Effective, c *policy.Conn, monitor bool) policy.Decision {
	if eff == nil {
		return policy.Decision{Reason: policy.ReasonNoPolicy, Rule: "no policy is in force for this sandbox", Layer: policy.LayerDefault, Mode: policy.Enforce}
	}
	explains := func(d policy.Decision) bool { return !d.Allow || d.WouldDeny }
	if c.Host == "" {
		c.IPLiteral = true
	}
	if d := eff.Decide(*c); explains(d) {
		return fit(d, monitor)
	}
	// The policy allows it, and the kernel still logged it: the name's answer expired (or
	// was never given to this VM), or the kernel had not applied a change yet. The record
	// keeps the name, which says what to look up again.
	d := policy.Refused(policy.ReasonIPLiteral, ruleNoAnswer)
	if c.Host == "" {
		d.Rule = "no answer in force opened this address and port for the sandbox"
	}
	return fit(d, monitor)
}

// fit makes a decision say what the kernel did: dropped (deny), or let through in monitor
// mode (allow, would_deny).
func fit(d policy.Decision, monitor bool) policy.Decision {
	if monitor {
		d.Allow, d.WouldDeny = true, true
		if d.Layer != policy.LayerHard {
			d.Mode = policy.Monitor
		}
		return d
	}
	d.Allow, d.WouldDeny = false, false
	return d
}

// book is the allowed_tcp book of vm at address src, as the last table applied had it,
// without waiting for an apply under way (books is published after each).
func (g *Gateway) book(vm VM, src netip.Addr) *vmTCP {
	m := g.books.Load()
	if m == nil {
		return nil
	}
	st := (*m)[src]
	if st == nil || st.tenant != vm.Tenant || st.vmID != vm.ID {
		return nil
	}
	return st
}

// bookOf is the allowed_tcp book of vm at address src, if the table in force has it.
// Called with g.mu held.
func (g *Gateway) bookOf(vm VM, src netip.Addr) *vmTCP {
	st := g.tcp[g.inForce[src]]
	if st == nil || st.tenant != vm.Tenant || st.vmID != vm.ID {
		return nil
	}
	return st
}
