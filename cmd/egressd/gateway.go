package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/internal/dialer"
	"github.com/egressd/egressd/internal/events"
	"github.com/egressd/egressd/internal/proxy"
	"github.com/egressd/egressd/internal/view"
	"github.com/egressd/egressd/policy"
)

// gateway is the data plane this process runs: the explicit proxy.
type gateway struct {
	ln net.Listener
	px *proxy.Proxy
}

func startGateway(cfg *config, log *slog.Logger, v *view.View, sink events.Sink, _ *policy.Classifier, _ prometheus.Registerer) (*gateway, error) {
	d := &dialer.Dialer{Resolver: &dialer.DNS{Upstream: cfg.dnsUpstream}}
	px, err := proxy.New(proxy.Config{
		Sessions:             proxy.FromView(v),
		Dialer:               d,
		Sink:                 sink,
		Logger:               log,
		MaxTunnelsPerSession: cfg.maxTunnels,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.proxyListen)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return &gateway{ln: ln, px: px}, nil
}

func (g *gateway) serve() error { return fmt.Errorf("proxy: %w", g.px.Serve(g.ln)) }

func (g *gateway) shutdown(ctx context.Context) {
	if err := g.px.Shutdown(ctx); err != nil {
		g.px.Close()
	}
}
