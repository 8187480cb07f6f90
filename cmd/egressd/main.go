// Command egressd is the egress firewall for code sandboxes: the control-plane API and the
// gateway, in one process (--role all, the default) or apart in a fleet (--role api,
// --role gateway, on a shared PostgreSQL --store). It is thin wiring; the work is done in the
// packages it imports.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/egressd/egressd/internal/controlplane/api"
	"github.com/egressd/egressd/internal/controlplane/fleet"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/postgres"
	"github.com/egressd/egressd/internal/dataplane/dialer"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/resolve"
	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/internal/process/buildinfo"
	"github.com/egressd/egressd/internal/process/shutdown"
	"github.com/egressd/egressd/policy"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "egressd:", err)
		os.Exit(2)
	}
	if cfg.version {
		fmt.Println("egressd", buildinfo.Get())
		return
	}
	if err := run(context.Background(), cfg); err != nil {
		fmt.Fprintln(os.Stderr, "egressd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg *config) error {
	log, err := newLogger(cfg.logLevel, cfg.logFormat)
	if err != nil {
		return err
	}
	ctx, stop := shutdown.OnSignal(ctx, log, os.Exit)
	defer stop()
	if err := checkPlatform(cfg); err != nil {
		return err
	}
	if err := checkRole(cfg); err != nil {
		return err
	}
	def, err := loadDefault(cfg.defaultPolicy)
	if err != nil {
		return err
	}
	preset := policy.BuiltinPreset()
	if cfg.packageManagers != "" {
		if preset, err = policy.LoadPresetFile(cfg.packageManagers); err != nil {
			return err
		}
	}
	listens := []string{cfg.apiListen, cfg.proxyListen}
	if cfg.socksListen != "" {
		listens = append(listens, cfg.socksListen)
	}
	if cfg.transparent {
		// Sandboxes reach these ports only through the firewall's redirects.
		listens = append(listens, fmt.Sprintf("0.0.0.0:%d", cfg.transparentPort), fmt.Sprintf("0.0.0.0:%d", cfg.dnsPort))
	}
	self, err := listenAddrs(listens...)
	if err != nil {
		return err
	}
	classifier := &policy.Classifier{Public: cfg.publicCIDRs, HardDeny: ownRanges(cfg), Self: self}
	// One setting, one resolver and one planner for the API and the gateway alike: what
	// /check answers is what the data path does (DESIGN §4).
	env, err := policy.NewEnv(classifier, preset, def)
	if err != nil {
		return err
	}
	// Both proxies hand connections to intercepted hosts to the interception engine (DESIGN
	// §2.7), so /check answers for them what the engine does. A path that still splices
	// (a connection by address) never sets Conn.Intercepted, so policy.Decide denies it
	// (interception_unavailable).
	env = env.WithInterception()
	res := &resolve.Resolver{Upstream: cfg.dnsUpstream}

	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	if cfg.role.servesAPI() {
		// In a fleet the first API node to start finds no key and creates it; the others
		// find it and write nothing (docs/fleet.md).
		if path, err := api.BootstrapAdminKey(ctx, st, cfg.dataDir); err != nil {
			return err
		} else if path != "" {
			log.Info("created the first admin API key", "file", path)
		}
	}
	ix, err := setupInterception(ctx, cfg, st, log)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	build := buildinfo.Get()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), build.Collector())
	hub, err := events.NewHub(hubConfig(cfg, reg, log))
	if err != nil {
		return err
	}
	// The data plane records through conns, which counts the open connections for
	// GET /v1/status and the drain.
	conns := events.NewOpenConns(hub)
	defer func() {
		if err := hub.Close(); err != nil {
			log.Error("closing the audit log or the event ring", "err", err)
		}
	}()
	reopenOnHangup(ctx, hub, log)

	viewCtx, stopView := context.WithCancel(context.Background())
	var background sync.WaitGroup
	defer background.Wait() // after stopView, before the store closes
	defer stopView()
	apiCfg := api.Config{
		Store:     st,
		Env:       env,
		Planner:   &dialer.Dialer{Resolver: res},
		ProxyAddr: cfg.proxyListen,
		SOCKSAddr: cfg.socksListen,
		RateLimit: cfg.rateLimit,
		Logger:    log,
		Registry:  reg,
		Events:    hub,
		Status:    api.StatusConfig{Build: build, NodeID: cfg.nodeID, Roles: cfg.roles(), Store: st.kind},
		Sealer:    ix.keys,
		CA:        ix.ca,
	}
	var dp *dataPlane
	var v *view.View // the gateway's view of the store; nil with --role api
	// changes wakes what waits on the store: the view, and the API's waits for a node's work
	// on a VM's network. This process's writes kick it at once; in a fleet, the other nodes'
	// writes kick it through PostgreSQL's notifications.
	changes := &store.Signal{}
	kick := changes.Kick
	var late atomic.Pointer[dataPlane] // set once the data plane runs
	if cfg.role.servesGateway() {
		// The gateway's live view of the store, so that a new policy is enforced on the very
		// next connection.
		v, err = view.New(st, view.Config{Env: env, Logger: log, Node: cfg.nodeID})
		if err != nil {
			return err
		}
		if err := v.Start(viewCtx); err != nil {
			return err
		}
		kick = func() {
			v.Kick()
			changes.Kick()
			if d := late.Load(); d != nil {
				d.book.Kick() // a secret written is what the next intercepted request gets
			}
		}
	}
	// A gateway node heartbeats as soon as it enforces what an API node waits for.
	var reporter *waitReporter
	if st.pg != nil {
		handlers := postgres.Handlers{Changed: kick}
		if v != nil {
			reporter = newWaitReporter(cfg.nodeID)
			handlers.Wanted = reporter.Wanted
		}
		background.Go(func() { st.pg.Listen(viewCtx, handlers, log) })
		apiCfg.Announcer = st.pg
	}
	if cfg.transparent {
		// Before the node registers, so that a misconfigured one is refused without a trace.
		if err := checkSandboxRange(ctx, st, cfg); err != nil {
			return err
		}
	}
	apiLn, err := net.Listen("tcp", cfg.apiListen)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	defer apiLn.Close() // if egressd stops before it serves; harmless after

	// The node registers before its data plane touches anything, so that a second process
	// with its ID is refused before it can make or remove a sandbox network, and heartbeats
	// with the revision it enforces, for GET /v1/nodes and ?wait=fleet (DESIGN §5). Until the
	// data plane runs it reports revision 0: behind everything.
	node := fleet.Config{
		Node:   store.Node{ID: cfg.nodeID, Roles: cfg.roles(), Address: apiLn.Addr().String(), Labels: cfg.nodeLabels},
		Logger: log,
		Shared: st.pg != nil,
	}
	if cfg.transparent {
		node.Node.SandboxCIDR = cfg.sandboxCIDR.String()
		node.VMs = func() int {
			if d := late.Load(); d != nil {
				return d.vms()
			}
			return 0
		}
	}
	if v != nil {
		node.Revision = func() int64 {
			if d := late.Load(); d != nil {
				return d.revision(v)()
			}
			return 0
		}
	}
	hb, err := fleet.Start(viewCtx, st, node)
	if err != nil {
		return err
	}
	defer hb.Stop()
	if cfg.transparent {
		// Two nodes that started at once both passed the check before either registered.
		if err := checkSandboxRange(ctx, st, cfg); err != nil {
			return err
		}
	}

	if v != nil {
		// The data plane before the API: with --transparent, the sandbox networks are
		// re-adopted and the firewall applied before anyone can create a VM.
		if dp, err = startDataPlane(viewCtx, cfg, log, store.WithHook(st, kick), v, conns, res, env, ix, reg); err != nil {
			return err
		}
		late.Store(dp)
		// A write is answered once this view enforces it (DESIGN §3).
		apiCfg.Enforcer = dp.enforcer(v)
		apiCfg.Ready = viewReady(v, dp.ready)
		apiCfg.Status.Conns = conns
		if reporter != nil {
			background.Go(func() { reporter.run(viewCtx, apiCfg.Enforcer, hb.Kick) })
		}
	}
	background.Go(func() { sweepGrants(viewCtx, st, log) })
	apiCfg.Store = store.WithHook(st, kick)
	apiCfg.Changes = changes
	apiCfg.Fleet = api.StoreFleet(st)
	srv := api.New(apiCfg)
	var handler http.Handler = srv
	if !cfg.role.servesAPI() {
		handler = opsOnly(srv)
	}
	hs := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 2)
	go func() { errc <- fmt.Errorf("api: %w", hs.Serve(apiLn)) }()
	attrs := []any{"version", build.Version, "role", cfg.role, "node", cfg.nodeID, "api", apiLn.Addr().String(), "store", st.name}
	if dp != nil {
		go func() { errc <- dp.serve() }()
		attrs = append(attrs, "proxy", cfg.proxyListen)
		if cfg.socksListen != "" {
			attrs = append(attrs, "socks", cfg.socksListen)
		}
	}
	if cfg.role.servesAPI() {
		attrs = append(attrs, "console", "http://"+apiLn.Addr().String()+"/ui/")
	}
	log.Info("egressd listening", attrs...)

	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	api := shutdown.Bounded(hs.Shutdown, hs.Close)
	parts := []shutdown.Part{{Name: "api", Drain: func(ctx context.Context) error {
		// Event streams never end by themselves: end them first, so that the API's
		// connections can go idle and the server can stop.
		srv.CloseStreams()
		return api(ctx)
	}}}
	if dp != nil {
		parts = append(parts, dp.drainParts()...)
	}
	open := conns.Open("")
	log.Info(fmt.Sprintf("draining %d connections (up to %s)", open, cfg.drainTimeout), "connections", open, "drain_timeout", cfg.drainTimeout)
	start := time.Now()
	if derr := shutdown.Drain(parts, cfg.drainTimeout); derr != nil {
		err = errors.Join(err, derr)
	}
	if took := time.Since(start); took >= cfg.drainTimeout {
		log.Info("drained: what was still open at the end of --drain-timeout was closed", "took", took.Round(time.Millisecond))
	} else {
		log.Info("drained", "took", took.Round(time.Millisecond))
	}
	return err
}

// hubConfig is the events hub's configuration. The event ring is kept where decisions are
// taken: a process without the gateway records none. The buffer holds at least what the
// ring keeps, so that all of it is seen after a restart.
func hubConfig(cfg *config, reg prometheus.Registerer, log *slog.Logger) events.HubConfig {
	hc := events.HubConfig{AuditPath: cfg.auditLog, Registerer: reg, Logger: log}
	if cfg.role.servesGateway() && cfg.eventsKeep > 0 && cfg.eventsKeepBytes > 0 {
		hc.Buffer = max(events.DefaultBuffer, cfg.eventsKeep)
		hc.RingDir = filepath.Join(cfg.dataDir, "events")
		hc.RingKeep, hc.RingKeepBytes = cfg.eventsKeep, cfg.eventsKeepBytes
	}
	return hc
}

// reopenOnHangup reopens the audit log on SIGHUP, so that logrotate can move it away.
func reopenOnHangup(ctx context.Context, hub *events.Hub, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := hub.Reopen(); err != nil {
					log.Error("reopening the audit log", "err", err)
				} else {
					log.Info("reopened the audit log")
				}
			}
		}
	}()
}

// ownRanges is the operator's hard-deny list plus the gateway's own addresses: every address
// of this host's interfaces at start, and with --transparent the whole sandbox range (the
// gateway ends of every veth are in it). A name must never lead the gateway to dial itself.
func ownRanges(cfg *config) []netip.Prefix {
	out := append([]netip.Prefix(nil), cfg.hardDenyCIDRs...)
	if cfg.transparent {
		out = append(out, cfg.sandboxCIDR)
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return out
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && !ip.Unmap().IsLoopback() {
				ip = ip.Unmap()
				out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
			}
		}
	}
	return out
}

// checkPlatform refuses flags that this platform cannot honour, rather than ignoring them.
func checkPlatform(cfg *config) error {
	switch {
	case cfg.transparent && runtime.GOOS != "linux":
		return errors.New("--transparent: the transparent gateway needs Linux (network namespaces and nftables)")
	}
	return nil
}

func loadDefault(path string) (*policy.Policy, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--default-policy: %w", err)
	}
	p, _, err := policy.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("--default-policy %s: %w", path, err)
	}
	return &p, nil
}

// listenAddrs turns egressd's own listen addresses into the classifier's Self list: a
// sandbox must never reach the API or the proxy's own port through the gateway.
func listenAddrs(addrs ...string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("listen address %q: %w", a, err)
		}
		ip := netip.IPv4Unspecified()
		if host != "" {
			if ip, err = netip.ParseAddr(host); err != nil {
				// A host name: resolve it once, as Listen will.
				ips, lerr := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
				if lerr != nil || len(ips) == 0 {
					return nil, fmt.Errorf("listen address %q: %v", a, lerr)
				}
				ip = ips[0]
			}
		}
		var p uint16
		if _, err := fmt.Sscan(port, &p); err != nil {
			return nil, fmt.Errorf("listen address %q: bad port", a)
		}
		out = append(out, netip.AddrPortFrom(ip.Unmap(), p))
	}
	return out, nil
}

func newLogger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}
