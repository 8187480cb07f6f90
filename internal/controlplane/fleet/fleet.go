// Package fleet makes an egressd process a node of its fleet (DESIGN §5): it registers the
// node in the store and heartbeats every second with the store revision its view has applied
// and the number of VMs it runs, so that the API can tell which nodes are up (GET /v1/nodes)
// and wait until every up gateway enforces a write (?wait=fleet).
//
// A heartbeat takes no store revision and is not in the change log (store.Store.PutNode), so
// that a fleet's heartbeats never wake its views. The time of a heartbeat is the store's, so
// whether a node is up (store.Node.Up) does not depend on the nodes' clocks.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
)

// Interval is how often a node heartbeats.
const Interval = time.Second

// MinKickInterval is the least time between two heartbeats when kicks come faster: a node
// heartbeats at most this often, however many waited-for writes it applies (docs/fleet.md
// has the figures).
const MinKickInterval = 50 * time.Millisecond

// beatTimeout bounds one heartbeat: a store that hangs must not hold back the next one.
const beatTimeout = 5 * time.Second

// Registry is where a node registers: store.Store is one.
type Registry interface {
	PutNode(ctx context.Context, n store.Node) error
}

// Config is what a node says of itself.
type Config struct {
	// Node is this node: ID (required), Roles, Address and Labels. Each heartbeat sets its
	// Revision and VMs from the functions below; the store sets Heartbeat.
	Node store.Node
	// Revision is the store revision this node's view has applied; nil for a node without
	// a view (it reports 0).
	Revision func() int64
	// VMs is how many VMs' networks this node runs; nil reports 0.
	VMs func() int
	// Interval between heartbeats; zero is Interval.
	Interval time.Duration
	// MinGap is the least time between a heartbeat and one that a Kick asks for; zero is
	// MinKickInterval.
	MinGap time.Duration
	// Logger receives a line when heartbeats start failing and one when they work again;
	// nil is slog.Default().
	Logger *slog.Logger
}

// Heartbeat is a node's registration, kept fresh until Stop.
type Heartbeat struct {
	reg    Registry
	cfg    Config
	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// Start registers the node and returns once the store has it: a node that cannot register
// does not start (the error says why). It then heartbeats every Interval until ctx ends or
// Stop is called. A heartbeat that fails is logged and tried again at the next interval;
// meanwhile the node's registration ages and, after store.DownAfter, it shows down.
func Start(ctx context.Context, reg Registry, cfg Config) (*Heartbeat, error) {
	if cfg.Node.ID == "" {
		return nil, errors.New("fleet: the node's ID is empty; every node needs a unique one")
	}
	cfg.Node.Roles = slices.Clone(cfg.Node.Roles) // the caller's slices and maps stay the caller's
	cfg.Node.Labels = maps.Clone(cfg.Node.Labels)
	if cfg.Interval <= 0 {
		cfg.Interval = Interval
	}
	if cfg.MinGap <= 0 {
		cfg.MinGap = MinKickInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Heartbeat{reg: reg, cfg: cfg, kick: make(chan struct{}, 1), done: make(chan struct{})}
	if err := h.beat(ctx); err != nil {
		return nil, fmt.Errorf("fleet: register node %q: %w", cfg.Node.ID, err)
	}
	ctx, h.cancel = context.WithCancel(ctx)
	go h.run(ctx)
	return h, nil
}

// Kick sends a heartbeat now rather than at the next interval, or MinGap after the last one if
// that is later: call it when the node enforces a new revision, so that a write waiting for the
// fleet learns of it at once. Kicks that come while one is pending merge; Kick never blocks.
func (h *Heartbeat) Kick() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// Stop ends the heartbeats and waits for the one in flight, if any. The node stays
// registered, and shows down once store.DownAfter has passed. Calling it again is harmless.
func (h *Heartbeat) Stop() {
	h.cancel()
	<-h.done
}

func (h *Heartbeat) run(ctx context.Context) {
	defer close(h.done)
	tick := time.NewTicker(h.cfg.Interval)
	defer tick.Stop()
	failing := false
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-h.kick:
			if wait := h.cfg.MinGap - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
		last = time.Now()
		err := h.beat(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			h.cfg.Logger.Warn("fleet: heartbeat failed; retrying at every interval (the node shows down once it has been silent for "+store.DownAfter.String()+")",
				"node", h.cfg.Node.ID, "err", err)
			failing = true
		case err == nil && failing:
			h.cfg.Logger.Info("fleet: heartbeats reach the store again", "node", h.cfg.Node.ID)
			failing = false
		}
	}
}

// beat puts the node's registration, with its current figures.
func (h *Heartbeat) beat(ctx context.Context) error {
	n := h.cfg.Node
	if h.cfg.Revision != nil {
		n.Revision = h.cfg.Revision()
	}
	if h.cfg.VMs != nil {
		n.VMs = h.cfg.VMs()
	}
	ctx, cancel := context.WithTimeout(ctx, beatTimeout)
	defer cancel()
	return h.reg.PutNode(ctx, n)
}
