package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
)

// grantSweep is how often expired grants are deleted. Readers ignore them from the instant
// they expire (the gateway's view enforces expiry on its own clock): sweeping only keeps the
// table small, so a minute is plenty.
const grantSweep = time.Minute

// sweepGrants deletes expired grants until ctx ends. Every node does it; in a fleet the
// store's write lock makes them take turns, and a sweep that finds nothing writes nothing.
func sweepGrants(ctx context.Context, st store.Store, log *slog.Logger) {
	t := time.NewTicker(grantSweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := st.SweepGrants(ctx, time.Now()); err != nil {
			if ctx.Err() == nil {
				log.Warn("sweeping expired grants failed; they stay ignored and are retried", "err", err)
			}
		} else if n > 0 {
			log.Debug("swept expired grants", "grants", n)
		}
	}
}
