package client

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// GrantScope is what a grant is attached to: a session or a VM (DESIGN §2.8).
type GrantScope string

const (
	GrantSession GrantScope = "session"
	GrantVM      GrantScope = "vm"
)

// MaxGrantTTL is the longest a grant may live; the shortest is one second.
const MaxGrantTTL = 24 * time.Hour

// GrantRequest is the body of POST /v1/egress/{session|vm}/{id}/grants: entries added to
// that layer's allowed_domains, allowed_tcp and allowed_cidrs for TTLSeconds (1 to 86400).
// At least one entry. Web ports follow the layer's flags: a grant never turns a flag on.
type GrantRequest struct {
	Domains    []string `json:"domains,omitempty"`
	TCP        []string `json:"tcp,omitempty"`
	CIDRs      []string `json:"cidrs,omitempty"`
	TTLSeconds int      `json:"ttl_seconds"`
	Note       string   `json:"note,omitempty"`
}

// Grant is a stored grant, its entries normalised. Warnings (in the answer to POST only) say
// when the grant adds less than its author may expect (a layer without a policy, web flags
// off).
type Grant struct {
	ID        string    `json:"id"`
	Scope     string    `json:"scope"`
	ScopeID   string    `json:"scope_id"` // the session_id or vm_id
	Domains   []string  `json:"domains"`
	TCP       []string  `json:"tcp"`
	CIDRs     []string  `json:"cidrs"`
	Note      string    `json:"note"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Warnings  []string  `json:"warnings,omitempty"`
	// Set only in the answer to a write made with wait=fleet.
	*Enforcement
}

// GrantList is the body of GET .../grants: the active grants, oldest first.
type GrantList struct {
	Grants []Grant `json:"grants"`
}

func grantsPath(scope GrantScope, id string, grantID ...string) (string, error) {
	switch scope {
	case GrantSession, GrantVM:
	default:
		return "", fmt.Errorf("client: grant scope %q is neither %q nor %q", scope, GrantSession, GrantVM)
	}
	parts := []string{"/v1/egress/" + string(scope) + "/", id, "/grants"}
	if len(grantID) > 0 {
		parts = append(parts, grantID[0])
		parts[2] += "/"
	}
	return pathFor(string(scope), parts...)
}

// CreateGrant adds a grant to a session's or VM's layer (POST .../grants). It is answered
// once enforced, like a policy write; at its expiry, what only it allowed is cut.
func (c *Client) CreateGrant(ctx context.Context, scope GrantScope, id string, req GrantRequest) (*Grant, error) {
	path, err := grantsPath(scope, id)
	if err != nil {
		return nil, err
	}
	var g Grant
	if err := c.do(ctx, http.MethodPost, path, c.writeQuery(), req, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// ListGrants lists a session's or VM's active grants, oldest first (GET .../grants).
func (c *Client) ListGrants(ctx context.Context, scope GrantScope, id string) ([]Grant, error) {
	path, err := grantsPath(scope, id)
	if err != nil {
		return nil, err
	}
	var list GrantList
	if err := c.do(ctx, http.MethodGet, path, nil, nil, &list); err != nil {
		return nil, err
	}
	return list.Grants, nil
}

// RevokeGrant ends a grant before its expiry (DELETE .../grants/{grant_id}), enforced like
// a tightening.
func (c *Client) RevokeGrant(ctx context.Context, scope GrantScope, id, grantID string) error {
	if grantID == "" || grantID == "." || grantID == ".." {
		return fmt.Errorf("client: %q is not a valid grant ID", grantID)
	}
	path, err := grantsPath(scope, id, grantID)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, path, c.writeQuery(), nil, nil)
}
