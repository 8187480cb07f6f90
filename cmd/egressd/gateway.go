package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/internal/controlplane/api"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/dialer"
	"github.com/egressd/egressd/internal/dataplane/dnsfilter"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/intercept"
	"github.com/egressd/egressd/internal/dataplane/proxy"
	"github.com/egressd/egressd/internal/dataplane/resolve"
	"github.com/egressd/egressd/internal/dataplane/secrets"
	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/internal/host/firewall"
	"github.com/egressd/egressd/internal/host/flowlog"
	"github.com/egressd/egressd/internal/host/gateway"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/process/shutdown"
	"github.com/egressd/egressd/policy"
)

// dataPlane is what this process serves besides the API: the explicit proxy always, and with
// --transparent the transparent proxy, the DNS filter and the sandbox networks.
type dataPlane struct {
	log      *slog.Logger
	explicit *proxy.Proxy
	proxyLn  net.Listener
	socksLn  net.Listener // the explicit proxy's SOCKS5 front; nil without --socks-listen

	transparent *proxy.Proxy
	tpLn        net.Listener
	dns         *dnsfilter.Server
	dnsUDP      net.PacketConn
	dnsTCP      net.Listener
	gw          *gateway.Gateway

	// The interception of DESIGN §2.7: the tenants' secrets as the gateway reads them, and
	// the engine that serves intercepted connections.
	book   *secrets.Book
	engine *intercept.Engine
}

// ready is the readiness of the sandbox networks' firewall: nil without --transparent.
func (d *dataPlane) ready() error {
	if d.gw == nil {
		return nil
	}
	return d.gw.Ready()
}

// enforcer is what a write waits for before it is answered (DESIGN §3): the view, which the
// proxies and the DNS filter read, and with --transparent the kernel rules built from it.
func (d *dataPlane) enforcer(v *view.View) api.Enforcer {
	var e api.Enforcer = v
	if d.gw != nil {
		e = kernelEnforcer{v, d.gw}
	}
	// A secret written (created, rotated, deleted) is answered once the next intercepted
	// request gets it.
	return bookEnforcer{e, d.book}
}

type bookEnforcer struct {
	api.Enforcer
	book *secrets.Book
}

func (e bookEnforcer) WaitRevision(ctx context.Context, rev int64) error {
	if err := e.Enforcer.WaitRevision(ctx, rev); err != nil {
		return err
	}
	return e.book.WaitRevision(ctx, rev)
}

// requestSink sends the engine's per-request records to the events hub.
type requestSink struct{ sink events.Sink }

func (s requestSink) Request(r intercept.Record) {
	rec := r.Record
	rec.Method, rec.Path, rec.Status, rec.Secrets = r.Method, r.Path, r.Status, r.Secrets
	if r.Ended != "" {
		rec.CloseReason = r.Ended
	}
	s.sink.Record(rec)
}

// revision is the store revision this node enforces, which its heartbeat reports for
// ?wait=fleet on the other nodes: the same as enforcer waits for, so that no node counts
// this one while its kernel rules are older than its view (an apply under way, or failing).
func (d *dataPlane) revision(v *view.View) func() int64 {
	rev := v.Revision
	if d.gw != nil {
		rev = d.gw.Revision
	}
	// The secrets book too, as enforcer waits for it: a node counts for a secret's
	// ?wait=fleet once its next intercepted request gets the secret.
	return func() int64 { return min(rev(), d.book.Revision()) }
}

type kernelEnforcer struct {
	v  *view.View
	gw *gateway.Gateway
}

func (e kernelEnforcer) WaitRevision(ctx context.Context, rev int64) error {
	if err := e.v.WaitRevision(ctx, rev); err != nil {
		return err
	}
	return e.gw.WaitApplied(ctx, rev)
}

func startDataPlane(ctx context.Context, cfg *config, log *slog.Logger, st store.Store, v *view.View, sink events.Sink, res *resolve.Resolver, env *policy.Env, ix *interception, reg prometheus.Registerer) (*dataPlane, error) {
	d := &dataPlane{log: log}
	dl := &dialer.Dialer{Resolver: res}
	d.book = secrets.New(st, ix.keys, secrets.Config{Logger: log})
	if err := d.book.Start(ctx); err != nil {
		return nil, err
	}
	var err error
	d.engine, err = intercept.New(intercept.Config{
		Certs:   ix.ca,
		RootCAs: ix.upstreamRoots,
		Sink:    requestSink{sink},
		Logger:  log,
	})
	if err != nil {
		return nil, fmt.Errorf("interception: %w", err)
	}
	d.explicit, err = proxy.New(proxy.Config{
		Sessions:             proxy.FromView(v),
		Dialer:               dl,
		Sink:                 sink,
		Logger:               log,
		MaxTunnelsPerSession: cfg.maxTunnels,
		Interception:         &proxy.Interception{Engine: d.engine, Secrets: d.book},
	})
	if err != nil {
		return nil, err
	}
	if d.proxyLn, err = net.Listen("tcp", cfg.proxyListen); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if cfg.socksListen != "" {
		// The same proxy serves it: one cap per session, one drain, one decision path.
		if d.socksLn, err = net.Listen("tcp", cfg.socksListen); err != nil {
			d.proxyLn.Close()
			return nil, fmt.Errorf("socks: %w", err)
		}
	}
	if !cfg.transparent {
		return d, nil
	}
	if err := d.startTransparent(ctx, cfg, log, st, v, dl, res, sink, env, reg); err != nil {
		d.proxyLn.Close()
		if d.socksLn != nil {
			d.socksLn.Close()
		}
		d.closeTransparent()
		return nil, err
	}
	return d, nil
}

// startTransparent brings up the boundary: the listeners the firewall redirects to, then the
// gateway, which applies the firewall and reconciles this node's sandbox networks. st is
// what the gateway writes through (VMs' network states, deletions): it must kick the view
// and the API's waits, so that a network made or removed is known at once.
func (d *dataPlane) startTransparent(ctx context.Context, cfg *config, log *slog.Logger, st store.Store, v *view.View, dl *dialer.Dialer, res *resolve.Resolver, sink events.Sink, env *policy.Env, reg prometheus.Registerer) error {
	var err error
	d.transparent, err = proxy.New(proxy.Config{
		Sandboxes:            proxy.SandboxesFromView(v),
		Dialer:               dl,
		Sink:                 sink,
		Logger:               log,
		MaxTunnelsPerSession: cfg.maxTunnels,
		Interception:         &proxy.Interception{Engine: d.engine, Secrets: d.book},
	})
	if err != nil {
		return err
	}
	// The listeners bind every address: the firewall redirects sandbox traffic to each
	// sandbox's gateway address, and drops traffic to these ports from anywhere else.
	tpAddr := net.JoinHostPort("0.0.0.0", strconv.Itoa(int(cfg.transparentPort)))
	dnsAddr := net.JoinHostPort("0.0.0.0", strconv.Itoa(int(cfg.dnsPort)))
	if d.tpLn, err = net.Listen("tcp4", tpAddr); err != nil {
		return fmt.Errorf("transparent proxy: %w", err)
	}
	if d.dnsUDP, err = net.ListenPacket("udp4", dnsAddr); err != nil {
		return fmt.Errorf("dns filter: %w", err)
	}
	if d.dnsTCP, err = net.Listen("tcp4", dnsAddr); err != nil {
		return fmt.Errorf("dns filter: %w", err)
	}
	d.dns = &dnsfilter.Server{VMs: dnsfilter.FromView(v), Resolver: res, Sink: sink, Logger: log}
	d.gw, err = gateway.New(st, gateway.FromView(v), netns.NewManager(), firewall.New(), gateway.Config{
		NodeID:      cfg.nodeID,
		SandboxCIDR: cfg.sandboxCIDR,
		ProxyPort:   cfg.transparentPort,
		DNSPort:     cfg.dnsPort,
		Env:         env,
		Logger:      log,
		Sink:        sink,
		FastPath:    cfg.fastPath,
		Intercepts:  d.transparent.Intercepts,
	})
	if err != nil {
		return err
	}
	// The DNS filter opens allowed_tcp (and fast-path) addresses through the gateway before
	// it answers.
	d.dns.TCP = d.gw
	if cfg.fastPath {
		// The queue before the first apply: from then on the firewall sends it packets, and
		// a queue without a reader drops them (fail closed).
		if err := startFastPath(ctx, d.gw, log, reg); err != nil {
			return err
		}
	}
	if err := d.gw.Run(ctx); err != nil {
		return err
	}
	go runFlowLog(ctx, d.gw, log)
	return nil
}

// runFlowLog turns the kernel's conntrack and log events into records (gateway.RecordFlow
// and RecordAttempt) until ctx ends. The firewall keeps forwarding and dropping without
// it: a reader that fails loses records, not enforcement, so it is logged and started
// again after a pause.
func runFlowLog(ctx context.Context, gw *gateway.Gateway, log *slog.Logger) {
	const pause = 5 * time.Second
	// Conntrack counts bytes (and stamps flows) only when asked to: without these, every
	// flow record says 0 bytes. Both only add accounting; the table loaded the module.
	for _, s := range []string{"net.netfilter.nf_conntrack_acct", "net.netfilter.nf_conntrack_timestamp"} {
		if err := netns.SetSysctl(s, "1"); err != nil {
			log.Warn("flow log: records of allowed_tcp connections may lack bytes or times", "err", err)
		}
	}
	for ctx.Err() == nil {
		r := &flowlog.Reader{}
		err := r.Run(ctx, func(f flowlog.Flow) {
			if !(f.Marked || f.Fast) || f.Proto != unix.IPPROTO_TCP {
				return
			}
			var lived time.Duration
			if !f.Start.IsZero() && !f.End.IsZero() { // a missed NEW event leaves no start
				lived = f.End.Sub(f.Start)
			}
			gw.RecordFlow(gateway.Flow{
				Src: f.Src, Dst: f.Dst, DstPort: f.Port, Start: f.Start, Duration: lived,
				BytesUp: int64(f.BytesOut), BytesDown: int64(f.BytesIn),
				SrcPort: f.SrcPort, Fast: f.Fast,
			})
		}, func(a flowlog.Attempt) {
			gw.RecordAttempt(gateway.Attempt{
				Src: a.Src, Dst: a.Dst, DstPort: a.Port, Transport: transport(a.Proto),
				Monitor: a.Prefix == firewall.PrefixMonitor, Time: a.At,
			})
		})
		if err == nil || ctx.Err() != nil {
			return
		}
		log.Error("flow log: reading the kernel's flows and denied attempts failed; their records are lost until it restarts", "err", err, "retry_in", pause)
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

// transport names an IP protocol number as decisions do.
func transport(proto uint8) policy.Transport {
	switch proto {
	case unix.IPPROTO_TCP:
		return policy.TCP
	case unix.IPPROTO_UDP:
		return policy.UDP
	case unix.IPPROTO_ICMP:
		return policy.ICMP
	}
	return policy.Transport("ip-proto-" + strconv.Itoa(int(proto)))
}

// serve runs every listener until one fails.
func (d *dataPlane) serve() error {
	errc := make(chan error, 5)
	go func() { errc <- fmt.Errorf("proxy: %w", d.explicit.Serve(d.proxyLn)) }()
	if d.socksLn != nil {
		go func() { errc <- fmt.Errorf("socks: %w", d.explicit.ServeSOCKS(d.socksLn)) }()
	}
	if d.transparent != nil {
		go func() { errc <- fmt.Errorf("transparent proxy: %w", d.transparent.ServeTransparent(d.tpLn)) }()
		go func() { errc <- fmt.Errorf("dns filter: %w", d.dns.Serve(d.dnsUDP)) }()
		go func() { errc <- fmt.Errorf("dns filter: %w", d.dns.ServeListener(d.dnsTCP)) }()
	}
	return <-errc
}

// drainParts are the data plane's parts to stop, each drained at once with the others. The
// firewall and the sandbox networks stay: with egressd gone, sandbox traffic meets the same
// rules and stops (fail closed).
func (d *dataPlane) drainParts() []shutdown.Part {
	parts := []shutdown.Part{{Name: "proxy", Drain: shutdown.Bounded(d.explicit.Shutdown, d.explicit.Close)}}
	if d.transparent != nil {
		parts = append(parts, shutdown.Part{Name: "transparent proxy", Drain: shutdown.Bounded(d.transparent.Shutdown, d.transparent.Close)})
	}
	if d.dns != nil {
		dns := shutdown.Bounded(d.dns.Shutdown, nil)
		parts = append(parts, shutdown.Part{Name: "dns filter", Drain: func(ctx context.Context) error {
			if err := dns(ctx); !errors.Is(err, dnsfilter.ErrServerClosed) {
				return err
			}
			return nil
		}})
	}
	return parts
}

func (d *dataPlane) closeTransparent() {
	for _, ln := range []net.Listener{d.tpLn, d.dnsTCP} {
		if ln != nil {
			ln.Close()
		}
	}
	if d.dnsUDP != nil {
		d.dnsUDP.Close()
	}
}

// vms is how many VMs' networks this node runs, for its heartbeat (GET /v1/nodes' vm_count):
// 0 without --transparent.
func (d *dataPlane) vms() int {
	if d.gw == nil {
		return 0
	}
	return d.gw.VMs()
}
