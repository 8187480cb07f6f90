// Package follow is the loop that keeps a live copy of store state (the view, the secrets
// book) in step with the store's change log: it syncs when kicked and on a poll tick as a
// safety net, bounds each sync, and on failure keeps the last state, logging once when
// syncs start failing and once when they succeed again rather than at every poll. Revision
// is what such a copy (or the gateway's kernel rules) has applied, which writers wait for.
package follow

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// Loop runs Sync until its context ends. Set the fields before Run; do not copy a Loop.
type Loop struct {
	Sync     func(ctx context.Context) error // applies the changes since the last sync
	Revision func() int64                    // the revision applied, logged when in sync again
	Poll     time.Duration                   // how often to sync without a kick
	Timeout  time.Duration                   // bounds one sync, so a hung store connection fails it
	Log      *slog.Logger
	What     string // log prefix: "view", "secrets"
	// Keeps says what stays in use while syncs fail, for the warning: "using the last state".
	Keeps string

	synced atomic.Bool
}

// Synced reports whether the last sync (or the load, see SetSynced) reached the store.
func (l *Loop) Synced() bool { return l.synced.Load() }

// SetSynced records that the store was reached outside Run: the initial load.
func (l *Loop) SetSynced() { l.synced.Store(true) }

// Run syncs on each kick and each poll tick until ctx ends. A kick that arrives during a
// sync is kept in kick's buffer and runs the next one.
func (l *Loop) Run(ctx context.Context, kick <-chan struct{}) {
	t := time.NewTicker(l.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-t.C:
		}
		syncCtx, cancel := context.WithTimeout(ctx, l.Timeout)
		err := l.Sync(syncCtx)
		cancel()
		if err != nil && ctx.Err() == nil {
			// The last state stays in force: a store outage must not change anything by
			// itself. Logged when it starts, not at every poll.
			if l.synced.Swap(false) {
				l.Log.Warn(l.What+": sync failed; "+l.Keeps+" until the store answers", "err", err)
			} else {
				l.Log.Debug(l.What+": sync failed again", "err", err)
			}
			continue
		}
		if !l.synced.Swap(true) {
			l.Log.Info(l.What+": in sync with the store again", "revision", l.Revision())
		}
	}
}
