// Package client is the Go SDK of egressd's HTTP API: it creates sandboxes (VMs) and sessions,
// sets their egress policies, and asks what the gateway would decide for a connection.
//
// # Connecting
//
// Make one Client per API and share it; it is safe for concurrent use:
//
//	c, err := client.New("http://127.0.0.1:8470", os.Getenv("EGRESSD_API_KEY"))
//
// On a fresh install egressd writes an admin key to <data-dir>/admin.key. Every method takes
// a context.Context first: cancel it, or give it a deadline, to bound a call. The Client sets
// no timeout of its own; pass an *http.Client with WithHTTPClient for that, for TLS settings
// or for a proxy.
//
// # Sandboxes and policies
//
// A VM is one sandbox; a session is one use of it. A policy (policy.Policy: the web flags,
// allowed domains and CIDRs, denied domains, TCP endpoints by name, HTTP rules and mode) can
// be set on either. A session's traffic is allowed only if every policy that is set allows
// it, the session's and its VM's; with neither set the operator's default applies, which out
// of the box denies everything.
//
//	vm, err := c.CreateVM(ctx, client.CreateVMRequest{})
//	sess, err := c.CreateSession(ctx, client.CreateSessionRequest{VMID: vm.VMID})
//	// An AI agent's sandbox: HTTPS to two APIs, and the package registries.
//	_, err = c.SetSessionPolicy(ctx, sess.SessionID, policy.Policy{
//		AllowHTTPS:           true,
//		AllowPackageManagers: true,
//		AllowedDomains:       []string{"api.openai.com", "*.githubusercontent.com"},
//	})
//
// AllowedTCP opens TCP that is not web traffic by name and port, whatever the web flags say:
// ssh and git to a code host, a database under a wildcard.
//
//	_, err = c.SetVMPolicy(ctx, vm.VMID, policy.Policy{
//		AllowedTCP: []string{"github.com:22", "*.db.example.com:5432"},
//	})
//
// Setting a policy replaces it whole: a field left at its zero value takes its default, so
// policy.Policy{} denies everything. The answer is the stored policy, normalised, with any
// Warnings about a policy that is valid but probably not what was meant. The sandbox then
// uses sess.ProxyURL as its HTTP_PROXY and HTTPS_PROXY; that URL carries the session's
// credentials and is shown only in the answer to CreateSession.
//
// Check asks what the gateway would decide without making a connection, and Effective shows
// the policy that applies and where each part comes from:
//
//	res, err := c.Check(ctx, sess.SessionID, client.CheckRequest{URL: "https://pypi.org/simple/"})
//	// res.Decision is "allow" or "deny"; res.Layer, Reason and Rule say why.
//	res, err = c.Check(ctx, sess.SessionID, client.CheckRequest{Host: "github.com", Port: 22})
//	// Reason "allowed_tcp", Rule "allowed_tcp github.com:22" when every layer lists it.
//
// With Resolve set, egressd looks the name up as the gateway would and judges each address
// too (res.Addresses): an allowed name whose addresses are not public, and not inside
// allowed_cidrs, is denied with reason "not_public".
//
// # Secrets and the CA
//
// A secret is a value the sandbox never holds: it gets the secret's placeholder, and the
// gateway puts the value in its place in intercepted requests to the secret's domains. The
// value (a SecretValue, which never prints) goes in and never comes out:
//
//	s, err := c.CreateSecret(ctx, client.CreateSecretRequest{
//		Name: "openai", Value: client.SecretValue(key), Domains: []string{"api.openai.com"},
//	})
//	// The sandbox's OPENAI_API_KEY is s.Placeholder. RotateSecret keeps the placeholder.
//
// CAPEM returns the interception CA's certificate, which the sandbox adds to its roots.
//
// # Writes are enforced when answered
//
// A call that changes what the gateway enforces (a policy, a session, a VM, a secret) returns once the
// egressd that answered enforces it: the next connection through its proxy obeys it. In a
// fleet, WithWaitFleet makes those calls wait (up to 5 s) until every gateway node does, and
// the answers say which do in their Enforcement (EnforcedBy, and Lagging when time ran out).
// A write that the answering node could not enforce in time is a 503 *Error (CodeUnavailable)
// whose message says whether the change is stored or was taken back.
//
// # Errors
//
// An answer other than 2xx is returned as an *Error, which carries the HTTP status and the
// API's code, message and blamed field, and prints as one line:
//
//	allowed_cidrs[1]: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8? (400 invalid_policy)
//
// Branch on it with IsNotFound, IsPolicyNotSet, IsUnauthorized, IsForbidden, IsConflict, or
// ErrorCode and the Code constants. A deny from Check is a result, not an error. Network
// failures are returned as the *url.Error of net/http.
//
// # Security
//
// The key is sent as "Authorization: Bearer", which net/http drops on a redirect to another
// host; a Client made without WithHTTPClient follows no redirects at all, since egressd never
// sends one. IDs
// are escaped into exactly one path segment each, so an ID cannot reach another endpoint.
//
// The SDK does not validate policies itself: the server is the one authority on names, ranges
// and limits, so a client and a server of different versions never disagree.
package client
