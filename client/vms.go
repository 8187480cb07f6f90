package client

import (
	"context"
	"net/http"
	"net/url"
)

// CreateVM creates a VM (POST /v1/vms). Every field of req is optional: the server picks the
// vm_id when req.VMID is empty, and the network mode defaults to "none" (explicit proxy only).
// A taken VMID is a 409, see IsConflict.
//
// A "netns" network is placed on a transparent gateway node (req.Network.Node, or one whose
// labels match req.Network.NodeSelector, or the server's choice) and made by that node. The
// server answers once it is made (201, Network.State "ready", with its attachment), or after
// 10 s with the node still at it (202, State "pending"): both return the VM and a nil error,
// so look at vm.Network.State, and GetVM until it is "ready" or "failed". A network the node
// could not make is a 503 Error whose Message has the node's reason; no VM is left.
func (c *Client) CreateVM(ctx context.Context, req CreateVMRequest) (*VM, error) {
	if req.EgressPolicy != nil {
		p := req.EgressPolicy.WithDefaults()
		req.EgressPolicy = &p
	}
	var vm VM
	if err := c.do(ctx, http.MethodPost, "/v1/vms", c.writeQuery(), req, &vm); err != nil {
		return nil, err
	}
	return &vm, nil
}

// ListVMs returns the VMs of the key's tenant (GET /v1/vms).
func (c *Client) ListVMs(ctx context.Context) ([]VM, error) {
	var list VMList
	if err := c.do(ctx, http.MethodGet, "/v1/vms", nil, nil, &list); err != nil {
		return nil, err
	}
	return list.VMs, nil
}

// GetVM returns one VM (GET /v1/vms/{vm_id}).
func (c *Client) GetVM(ctx context.Context, vmID string) (*VM, error) {
	path, err := pathFor("VM", "/v1/vms/", vmID)
	if err != nil {
		return nil, err
	}
	var vm VM
	if err := c.do(ctx, http.MethodGet, path, nil, nil, &vm); err != nil {
		return nil, err
	}
	return &vm, nil
}

// DeleteVM deletes a VM (DELETE /v1/vms/{vm_id}), which ends its sessions, clears its
// policies and removes its network.
//
// A netns VM's network is removed by its node. The server answers 204 once the node has done
// so, or 202 when it has not within 10 s (or the node is down); DeleteVM returns nil for
// both. After a 202 the VM is still there, in Network.State "deleting": it takes no sessions
// or policies, and its node removes it when it can. GetVM answers a 404 (IsNotFound) once it
// is gone.
func (c *Client) DeleteVM(ctx context.Context, vmID string) error {
	path, err := pathFor("VM", "/v1/vms/", vmID)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, path, c.writeQuery(), nil, nil)
}

// CreateSession starts a session on a VM (POST /v1/sessions). The answer's ProxyURL carries
// the session's proxy credentials and is shown only here: keep it.
func (c *Client) CreateSession(ctx context.Context, req CreateSessionRequest) (*Session, error) {
	var s Session
	if err := c.do(ctx, http.MethodPost, "/v1/sessions", c.writeQuery(), req, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// ListSessions returns the tenant's sessions (GET /v1/sessions), only those of one VM when
// vmID is not empty.
func (c *Client) ListSessions(ctx context.Context, vmID string) ([]Session, error) {
	var q url.Values
	if vmID != "" {
		q = url.Values{"vm_id": {vmID}}
	}
	var list SessionList
	if err := c.do(ctx, http.MethodGet, "/v1/sessions", q, nil, &list); err != nil {
		return nil, err
	}
	return list.Sessions, nil
}

// GetSession returns one session (GET /v1/sessions/{session_id}), without its ProxyURL.
func (c *Client) GetSession(ctx context.Context, sessionID string) (*Session, error) {
	path, err := pathFor("session", "/v1/sessions/", sessionID)
	if err != nil {
		return nil, err
	}
	var s Session
	if err := c.do(ctx, http.MethodGet, path, nil, nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// DeleteSession ends a session (DELETE /v1/sessions/{session_id}); its policy goes with it.
func (c *Client) DeleteSession(ctx context.Context, sessionID string) error {
	path, err := pathFor("session", "/v1/sessions/", sessionID)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, path, c.writeQuery(), nil, nil)
}
