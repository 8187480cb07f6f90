package client

import (
	"context"
	"net/http"
)

// Scopes of Status counts.
const (
	StatusScopeTenant = "tenant" // the API key's tenant's objects
	StatusScopeAll    = "all"    // every tenant's (an admin key)
)

// Status is the answer of GET /v1/status: which egressd answered, and how much it holds.
//
// A tenant key gets its own tenant's counts; an admin key gets every tenant's, and also the
// node's roles and store kind, which are the operator's business. VMs and Sessions are the
// store's (the whole fleet's, on a shared store); OpenConnections is this node's gateway's,
// and nil on a node that runs no gateway (--role api).
type Status struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Modified  bool   `json:"modified,omitempty"` // built from a tree with uncommitted changes
	GoVersion string `json:"go_version"`
	NodeID    string `json:"node_id"`
	// Roles are what the node serves: "api", "gateway", and "transparent" with --transparent
	// (admin keys only).
	Roles []string `json:"roles,omitempty"`
	// Store is "sqlite" or "postgres" (admin keys only); never its URL.
	Store string `json:"store,omitempty"`

	Scope           string `json:"scope"` // StatusScopeTenant or StatusScopeAll
	Tenant          string `json:"tenant"`
	VMs             int    `json:"vms"`
	Sessions        int    `json:"sessions"`
	OpenConnections *int64 `json:"open_connections,omitempty"`
}

// Status asks egressd which build it runs and what it holds (GET /v1/status). Any valid key
// may ask; see Status for what a tenant key sees.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	if err := c.do(ctx, http.MethodGet, "/v1/status", nil, nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}
