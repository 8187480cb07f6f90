package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/internal/host/fastpath"
	"github.com/egressd/egressd/internal/host/firewall"
	"github.com/egressd/egressd/internal/host/gateway"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/host/nfqueue"
)

// beLiberal is the sysctl that makes conntrack accept TCP segments outside the window.
const beLiberal = "net.netfilter.nf_conntrack_tcp_be_liberal"

// sweepEvery is how often the verifier's time limits are enforced.
const sweepEvery = 100 * time.Millisecond

// fastPath wires the kernel fast path (--fast-path): the firewall's queue, read by the
// verifier, which asks the gateway to judge each ClientHello it read.
type fastPath struct {
	q   *nfqueue.Queue
	mu  sync.Mutex // Handle and Sweep take turns
	v   *fastpath.Verifier
	log *slog.Logger
}

// startFastPath binds the firewall's queue in this namespace and reads it until ctx ends.
// If the reader stops, the kernel drops what the queue holds and what comes to it: new
// fast-path flows fail closed, and verified ones go on by their mark.
func startFastPath(ctx context.Context, gw *gateway.Gateway, log *slog.Logger, reg prometheus.Registerer) error {
	// The verifier cannot see the server's side; it leaves to conntrack's TCP window
	// tracking the segments the server would drop (the ruleset drops "ct state invalid"
	// before the queue). A liberal tracker takes them as valid: refuse to run on one.
	if v, err := netns.Sysctl(beLiberal); err != nil || v != "0" {
		return fmt.Errorf("fast path: %s must be 0 in the gateway's network namespace (it is %q, %v): with it, segments the server drops would pass unverified", beLiberal, v, err)
	}
	// The verdict marks the flow through ctnetlink (firewall.FastMarker), not in the
	// queue's message: queues carry no conntrack (see the nfqueue package doc).
	q, err := nfqueue.Open(firewall.DefaultFastQueue, nfqueue.Config{})
	if err != nil {
		return fmt.Errorf("fast path: %w", err)
	}
	mk, err := firewall.NewFastMarker()
	if err != nil {
		q.Close()
		return fmt.Errorf("fast path: %w", err)
	}
	m := newFastMetrics(reg)
	f := &fastPath{q: q, log: log}
	f.v = fastpath.New(&verdicts{q: q, mk: mk, gw: gw, m: m, log: log}, countingJudge{gw, m}, fastpath.Limits{})
	go func() {
		f.run(ctx)
		mk.Close()
	}()
	return nil
}

func (f *fastPath) run(ctx context.Context) {
	defer f.q.Close()
	go func() {
		t := time.NewTicker(sweepEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				f.mu.Lock()
				f.v.Sweep(now)
				f.mu.Unlock()
			}
		}
	}()
	err := f.q.Run(ctx, func(p nfqueue.Packet) {
		f.mu.Lock()
		f.v.Handle(fastpath.Packet{ID: p.ID, Data: p.Payload}, time.Now())
		f.mu.Unlock()
	})
	if ctx.Err() == nil {
		// Nothing new is verified from now on: the kernel drops the queue's packets.
		f.log.Error("fast path: reading the queue failed; new TLS flows on the fast path fail until egressd restarts", "err", err)
	}
}

// verdicts maps the verifier's verdicts onto the queue's. Pass, Confirm and Reset first
// put the verdict on the flow's conntrack entry, then give the packet its verdict:
//   - Pass (the ClientHello was judged allowed): firewall.MarkFastWait, then NF_ACCEPT.
//     The kernel does not forward the flow yet: its packets, the server's too, still come
//     to the queue, so that no other bytes at the ClientHello's offsets reach the server
//     before it has the judged ones (firewall doc.go "Why wait for the server").
//   - Confirm (a server's packet acknowledging the whole ClientHello): firewall.MarkFast,
//     then NF_ACCEPT: from then on the kernel forwards the flow.
//   - Reset: firewall.MarkFastDeny, then NF_REPEAT: the packet meets the forward chain
//     again, which answers it with a TCP reset.
//
// Every such verdict marks anew (one ctnetlink request): a flow's entry may have been cut
// and made again since its last one. If the mark cannot be set (no entry: a flow cut
// meanwhile), the packet is dropped, and a retransmission meets the rules again.
type verdicts struct {
	q   *nfqueue.Queue
	mk  *firewall.FastMarker
	gw  stillAllowed
	m   *fastMetrics
	log *slog.Logger
}

// stillAllowed is the gateway's second look at a flow, when its server confirms it
// (gateway.Gateway.StillAllowed).
type stillAllowed interface {
	StillAllowed(f fastpath.Flow) bool
}

func (a *verdicts) SetVerdict(id uint32, v fastpath.Verdict, f fastpath.Flow) error {
	a.m.packets.WithLabelValues(verdictName(v)).Inc()
	switch v {
	case fastpath.Accept:
		return a.q.SetVerdict(id, nfqueue.Accept)
	case fastpath.Pass, fastpath.Confirm, fastpath.Reset:
		if !f.Src.IsValid() {
			return a.q.SetVerdict(id, nfqueue.Drop) // no flow to mark (a fragment)
		}
		mark, then := a.mk.Release, nfqueue.Accept
		switch v {
		case fastpath.Confirm:
			mark = a.mk.Confirm
			if !a.gw.StillAllowed(f) {
				// A tightening since the verdict: refused before the kernel forwards it.
				a.m.flows.WithLabelValues("refused").Inc()
				mark, then = func(src, dst netip.AddrPort) error { return a.mk.Mark(src, dst, true) }, nfqueue.Drop
			}
		case fastpath.Reset:
			mark = func(src, dst netip.AddrPort) error { return a.mk.Mark(src, dst, true) }
			then = nfqueue.Repeat
		}
		if err := mark(f.Src, f.Dst); err != nil {
			a.log.Debug("fast path: marking a flow", "src", f.Src.String(), "dst", f.Dst.String(), "verdict", verdictName(v), "err", err)
			return a.q.SetVerdict(id, nfqueue.Drop)
		}
		return a.q.SetVerdict(id, then)
	default:
		return a.q.SetVerdict(id, nfqueue.Drop)
	}
}

func verdictName(v fastpath.Verdict) string {
	switch v {
	case fastpath.Accept:
		return "accept"
	case fastpath.Pass:
		return "pass"
	case fastpath.Reset:
		return "reset"
	case fastpath.Confirm:
		return "confirm"
	}
	return "drop"
}

// countingJudge counts the gateway's judgements of fast-path flows.
type countingJudge struct {
	gw *gateway.Gateway
	m  *fastMetrics
}

func (j countingJudge) Judge(f fastpath.Flow, h fastpath.Hello) bool {
	ok := j.gw.Judge(f, h)
	switch {
	case ok:
		j.m.flows.WithLabelValues("verified").Inc()
	default:
		j.m.flows.WithLabelValues("refused").Inc()
	}
	return ok
}

type fastMetrics struct {
	packets, flows *prometheus.CounterVec
}

func newFastMetrics(reg prometheus.Registerer) *fastMetrics {
	m := &fastMetrics{
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_fastpath_packets_total",
			Help: "Packets of the fast path's queue, by verdict: accept (handshake, checked packets of a released flow), pass (released: judged allowed), confirm (the server acknowledged the ClientHello: the kernel forwards the rest), drop, reset (refused).",
		}, []string{"verdict"}),
		flows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_fastpath_flows_total",
			Help: "Fast-path flows judged, by outcome: verified (the kernel forwards the rest) or refused (reset).",
		}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.packets, m.flows)
	}
	return m
}
