package api

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/process/buildinfo"
)

// StatusConfig is what GET /v1/status says of this node besides the store's counts.
type StatusConfig struct {
	Build  buildinfo.Info
	NodeID string
	// Roles are what this process serves ("api", "gateway", "transparent").
	Roles []string
	// Store is the kind of store, "sqlite" or "postgres": never its URL, which may carry a
	// password.
	Store string
	// Conns counts the open connections of this node's gateway (*events.OpenConns); nil on a
	// node that runs none, whose status then has no open_connections.
	Conns OpenConns
}

// OpenConns counts open connections per tenant, every tenant's for "".
type OpenConns interface {
	Open(tenant string) int64
}

// status answers GET /v1/status for any valid key.
//
// What a key sees is thought out per kind: the build and the node's name are the same for
// every key (the build is on the unauthenticated /metrics anyway, and a tenant reporting a
// problem needs both); the counts are the key's tenant's own, so that no tenant learns how
// busy the others are; an admin key gets every tenant's counts (scope "all") and the node's
// roles and store kind, which describe the operator's deployment rather than the tenant's
// objects.
func (s *Server) status(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	cfg := s.statusCfg
	out := client.Status{
		Version:   cfg.Build.Version,
		Commit:    cfg.Build.Commit,
		Modified:  cfg.Build.Modified,
		GoVersion: cfg.Build.GoVersion,
		NodeID:    cfg.NodeID,
		Scope:     client.StatusScopeTenant,
		Tenant:    k.Tenant,
	}
	ctx := r.Context()
	var vms []store.VM
	var sessions []store.Session
	var err error
	connTenant := k.Tenant
	if k.Admin {
		out.Scope, out.Roles, out.Store = client.StatusScopeAll, slices.Clone(cfg.Roles), cfg.Store
		connTenant = ""
		if vms, err = s.store.AllVMs(ctx); err == nil {
			sessions, err = s.store.AllSessions(ctx)
		}
	} else if vms, err = s.store.ListVMs(ctx, k.Tenant); err == nil {
		sessions, err = s.store.ListSessions(ctx, k.Tenant, "")
	}
	if err != nil {
		return fmt.Errorf("status: counting VMs and sessions: %w", err)
	}
	out.VMs, out.Sessions = len(vms), len(sessions)
	if cfg.Conns != nil {
		n := cfg.Conns.Open(connTenant)
		out.OpenConnections = &n
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
