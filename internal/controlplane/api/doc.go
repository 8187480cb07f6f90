// Package api is egressd's HTTP control plane (DESIGN §3): tenants' API keys, VMs, sessions,
// their egress policies, the effective policy of a session and the decision the gateway would
// take for a URL, a host, an address or a DNS query.
//
// The server is a plain http.Handler over a store.Store. Every request is authenticated by an
// API key (X-API-Key or Authorization: Bearer); a key belongs to one tenant and sees only that
// tenant's objects: another tenant's VM answers 404, exactly like a VM that does not exist.
// Bodies are JSON, at most 1 MiB, decoded strictly. Errors have one shape,
//
//	{"error": {"code": "invalid_policy", "message": "...", "field": "allowed_cidrs[1]"}}
//
// with the codes of package client. A 500 means a bug, never bad input.
package api
