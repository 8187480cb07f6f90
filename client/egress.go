package client

import (
	"context"
	"net/http"

	"github.com/egressd/egressd/policy"
)

// Scopes of a stored policy, as Policy.Scope reports them.
const (
	ScopeSession = "session"
	ScopeVM      = "vm"
)

// SetSessionPolicy replaces the policy of a session (POST /v1/egress/session/{session_id}) and
// returns it as stored: normalised, with its revision and any warnings. Setting replaces the
// whole policy: a field left at its zero value takes its default, so the zero policy.Policy
// denies everything. An invalid policy is a 400 *Error with Code CodeInvalidPolicy whose Field
// names the entry to blame.
func (c *Client) SetSessionPolicy(ctx context.Context, sessionID string, p policy.Policy) (*Policy, error) {
	return c.setPolicy(ctx, ScopeSession, sessionID, p)
}

// GetSessionPolicy returns the policy set on a session (GET /v1/egress/session/{session_id}).
// When none is set the error satisfies IsPolicyNotSet; the session then runs under its VM's
// policy or the operator's default, see Effective.
func (c *Client) GetSessionPolicy(ctx context.Context, sessionID string) (*Policy, error) {
	return c.getPolicy(ctx, ScopeSession, sessionID)
}

// DeleteSessionPolicy clears the policy of a session (DELETE /v1/egress/session/{session_id}).
func (c *Client) DeleteSessionPolicy(ctx context.Context, sessionID string) error {
	return c.deletePolicy(ctx, ScopeSession, sessionID)
}

// SetVMPolicy replaces the policy of a VM (POST /v1/egress/vm/{vm_id}); it holds for every
// session of the VM, now and later, as SetSessionPolicy describes.
func (c *Client) SetVMPolicy(ctx context.Context, vmID string, p policy.Policy) (*Policy, error) {
	return c.setPolicy(ctx, ScopeVM, vmID, p)
}

// GetVMPolicy returns the policy set on a VM (GET /v1/egress/vm/{vm_id}); when none is set
// the error satisfies IsPolicyNotSet.
func (c *Client) GetVMPolicy(ctx context.Context, vmID string) (*Policy, error) {
	return c.getPolicy(ctx, ScopeVM, vmID)
}

// DeleteVMPolicy clears the policy of a VM (DELETE /v1/egress/vm/{vm_id}).
func (c *Client) DeleteVMPolicy(ctx context.Context, vmID string) error {
	return c.deletePolicy(ctx, ScopeVM, vmID)
}

func (c *Client) setPolicy(ctx context.Context, scope, id string, p policy.Policy) (*Policy, error) {
	path, err := policyPath(scope, id)
	if err != nil {
		return nil, err
	}
	var out Policy
	if err := c.do(ctx, http.MethodPost, path, c.writeQuery(), p.WithDefaults(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) getPolicy(ctx context.Context, scope, id string) (*Policy, error) {
	path, err := policyPath(scope, id)
	if err != nil {
		return nil, err
	}
	var out Policy
	if err := c.do(ctx, http.MethodGet, path, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) deletePolicy(ctx context.Context, scope, id string) error {
	path, err := policyPath(scope, id)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, path, c.writeQuery(), nil, nil)
}

// policyPath is the path of a session's or VM's policy.
func policyPath(scope, id string) (string, error) {
	kind := "session"
	if scope == ScopeVM {
		kind = "VM"
	}
	return pathFor(kind, "/v1/egress/"+scope+"/", id)
}

// Effective returns the policy that applies to a session's traffic (GET
// /v1/egress/session/{session_id}/effective): its own policy AND its VM's, or the operator's
// default when neither is set, as one readable object that says which layer each part comes
// from.
func (c *Client) Effective(ctx context.Context, sessionID string) (*Effective, error) {
	path, err := pathFor("session", "/v1/egress/session/", sessionID, "/effective")
	if err != nil {
		return nil, err
	}
	var out Effective
	if err := c.do(ctx, http.MethodGet, path, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Check asks what the gateway would decide for one connection attempt or DNS query of a
// session (POST /v1/egress/session/{session_id}/check), without making it. Set exactly one
// form of req, see CheckRequest. A deny is a result, not an error: the error is for requests
// the API could not judge.
func (c *Client) Check(ctx context.Context, sessionID string, req CheckRequest) (*CheckResult, error) {
	path, err := pathFor("session", "/v1/egress/session/", sessionID, "/check")
	if err != nil {
		return nil, err
	}
	var out CheckResult
	if err := c.do(ctx, http.MethodPost, path, nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PackageManagers returns the package-manager preset in force (GET
// /v1/egress/package-managers): the registry hosts that allow_package_managers opens, by
// manager, after the operator's additions or replacement.
func (c *Client) PackageManagers(ctx context.Context) (*PackageManagers, error) {
	var out PackageManagers
	if err := c.do(ctx, http.MethodGet, "/v1/egress/package-managers", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
