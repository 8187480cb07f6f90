package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/postgres"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
)

// openedStore is the store the flags name, and what to say about it.
type openedStore struct {
	store.Store
	// pg is the PostgreSQL store, whose notifications the gateway's view follows; nil
	// for the embedded store, whose only writer is this process (which kicks the view).
	pg   *postgres.Store
	name string // for the log: the data directory, or the URL without its password
	kind string // for GET /v1/status: "sqlite" or "postgres"
}

// openStore opens PostgreSQL with --store, and the embedded SQLite store in --data-dir
// otherwise. Either way the schema is migrated before anything else runs.
func openStore(ctx context.Context, cfg *config) (*openedStore, error) {
	if cfg.storeURL == "" {
		st, err := sqlite.Open(ctx, cfg.dataDir)
		if err != nil {
			return nil, err
		}
		return &openedStore{Store: st, name: cfg.dataDir, kind: "sqlite"}, nil
	}
	if !strings.HasPrefix(cfg.storeURL, "postgres://") && !strings.HasPrefix(cfg.storeURL, "postgresql://") {
		return nil, fmt.Errorf("--store %s: want a postgres:// URL", postgres.Redact(cfg.storeURL))
	}
	pg, err := postgres.Open(ctx, cfg.storeURL)
	if err != nil {
		return nil, fmt.Errorf("--store: %w", err)
	}
	return &openedStore{Store: pg, pg: pg, name: postgres.Redact(cfg.storeURL), kind: "postgres"}, nil
}
