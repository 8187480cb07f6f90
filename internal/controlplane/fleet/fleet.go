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
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
)

// Interval is how often a node heartbeats.
const Interval = time.Second

// MinKickInterval is the least time between two heartbeats when kicks come faster: a node
// heartbeats at most this often, however many waited-for writes it applies (docs/fleet.md
// has the figures).
const MinKickInterval = 50 * time.Millisecond

// claimPoll is how often Start reads the row of a node ID that another instance holds.
// Shorter than Interval, so that a live holder's next heartbeat is seen before the row ages
// out.
const claimPoll = 250 * time.Millisecond

// beatTimeout bounds one heartbeat: a store that hangs must not hold back the next one.
const beatTimeout = 5 * time.Second

// Registry is where a node registers: store.Store is one.
type Registry interface {
	PutNode(ctx context.Context, n store.Node) error
	// ListNodes and Now let a node see whether a live process holds its ID already.
	ListNodes(ctx context.Context) ([]store.Node, error)
	Now(ctx context.Context) (time.Time, error)
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
	// Shared says that other processes may register in the store (PostgreSQL): Start then
	// makes sure that no live process holds this node's ID (see Start). An embedded store
	// belongs to one process, which locks its data directory, so it need not.
	Shared bool
}

// Heartbeat is a node's registration, kept fresh until Stop.
type Heartbeat struct {
	reg    Registry
	cfg    Config
	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	stopOnce sync.Once
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
	h.cfg.Node.Instance = rand.Text()
	if cfg.Shared {
		if err := h.claim(ctx); err != nil {
			return nil, err
		}
	}
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

// Stop ends the heartbeats, waits for the one in flight, if any, and lets go of the node's
// ID, so that the process that takes over (this node restarted) need not wait. The node stays
// registered, and shows down once store.DownAfter has passed. Calling it again is harmless.
func (h *Heartbeat) Stop() {
	h.cancel()
	<-h.done
	h.stopOnce.Do(func() {
		h.cfg.Node.Instance = ""
		ctx, cancel := context.WithTimeout(context.Background(), beatTimeout)
		defer cancel()
		if err := h.beat(ctx); err != nil {
			h.cfg.Logger.Warn("fleet: could not let go of the node's ID; a process that takes it over waits until it shows down", "node", h.cfg.Node.ID, "err", err)
		}
	})
}

// claim makes sure that no live process holds this node's ID. Two processes with one ID would
// overwrite each other's heartbeats, so that ?wait=fleet could count a node that is behind as
// enforcing, and, on transparent nodes, would both make and remove the same VMs' networks.
//
// The row of a process that stopped cleanly has let go of the ID (Stop). A row still held by
// another instance is either a process that died (a crash, restarted at once) or a live one:
// claim waits until the row shows down (at most store.DownAfter), and refuses the ID if a
// heartbeat comes in meanwhile.
func (h *Heartbeat) claim(ctx context.Context) error {
	var seen time.Time // the other instance's heartbeat when first read
	logged := false
	for {
		nodes, err := h.reg.ListNodes(ctx)
		if err != nil {
			return fmt.Errorf("fleet: read the nodes to claim ID %q: %w", h.cfg.Node.ID, err)
		}
		now, err := h.reg.Now(ctx)
		if err != nil {
			return fmt.Errorf("fleet: the store's clock: %w", err)
		}
		i := slices.IndexFunc(nodes, func(n store.Node) bool { return n.ID == h.cfg.Node.ID })
		if i < 0 || nodes[i].Instance == "" || !nodes[i].Up(now) {
			return nil
		}
		other := nodes[i]
		switch {
		case seen.IsZero():
			seen = other.Heartbeat
		case other.Heartbeat.After(seen):
			return fmt.Errorf("fleet: node ID %q is held by another running egressd (it heartbeat %s ago, at %s); give every process of a fleet its own --node-id",
				h.cfg.Node.ID, now.Sub(other.Heartbeat).Round(time.Millisecond), other.Address)
		}
		if !logged {
			h.cfg.Logger.Info("fleet: waiting for the previous process with this node ID to show down (it did not let go of the ID: a crash?)",
				"node", h.cfg.Node.ID, "wait_at_most", store.DownAfter-now.Sub(other.Heartbeat))
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(claimPoll):
		}
	}
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
