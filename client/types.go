package client

import (
	"time"

	"github.com/egressd/egressd/policy"
)

// Network is how a VM is attached to the gateway (DESIGN §3, §5). Mode is "none" (the
// default: the VM reaches the world only through the explicit proxy) or "netns".
//
// On create, a "netns" network may name its gateway Node, or a NodeSelector that the chosen
// node's labels must match; without either, the up transparent node with the fewest VMs
// takes it. The answer says which node it is and the network's State: "ready" (the
// attachment fields are set), "pending" (the node has not made it yet), "failed" (Error
// says why), "deleting", or "node_down" while its node is silent.
type Network struct {
	Mode         string            `json:"mode"`
	Node         string            `json:"node,omitempty"`
	NodeSelector map[string]string `json:"node_selector,omitempty"`
	State        string            `json:"state,omitempty"`
	Error        string            `json:"error,omitempty"`
	Netns        string            `json:"netns,omitempty"`
	Path         string            `json:"path,omitempty"`
	Address      string            `json:"address,omitempty"`
	Gateway      string            `json:"gateway,omitempty"`
}

// CreateVMRequest is the body of POST /v1/vms. Every field is optional: the server picks a
// vm_id when VMID is empty.
type CreateVMRequest struct {
	VMID         string         `json:"vm_id,omitempty"`
	EgressPolicy *policy.Policy `json:"egress_policy,omitempty"`
	Network      *Network       `json:"network,omitempty"`
}

// VM is one sandbox. EgressPolicy is its VM policy, nil when none is set.
type VM struct {
	VMID         string    `json:"vm_id"`
	Network      Network   `json:"network"`
	EgressPolicy *Policy   `json:"egress_policy,omitempty"`
	Sessions     int       `json:"sessions"`
	CreatedAt    time.Time `json:"created_at"`
	// Set only in the answer to a write made with wait=fleet.
	*Enforcement
}

// CreateSessionRequest is the body of POST /v1/sessions.
type CreateSessionRequest struct {
	VMID string `json:"vm_id"`
}

// Enforcement says which gateway nodes enforce a write, in the answer to a write made with
// wait=fleet (see WithWaitFleet): EnforcedBy are the nodes that have applied it, Lagging
// the up gateway nodes that had not within the server's wait (5 s). The write is stored
// either way; a lagging node applies it when its view catches up.
type Enforcement struct {
	EnforcedBy []string `json:"enforced_by"`
	Lagging    []string `json:"lagging,omitempty"`
}

// Session is one use of a VM. ProxyURL carries the session's proxy credentials and is shown
// only in the answer to POST /v1/sessions: like an API key, its token is stored hashed.
// SOCKSURL (socks5h://<session_id>:<token>@host:port) carries the same credentials for the
// SOCKS5 listener, and is set only when egressd runs one (--socks-listen).
type Session struct {
	SessionID string    `json:"session_id"`
	VMID      string    `json:"vm_id"`
	ProxyURL  string    `json:"proxy_url,omitempty"`
	SOCKSURL  string    `json:"socks_url,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Set only in the answer to a write made with wait=fleet.
	*Enforcement
}

// Policy is a stored policy as the API answers it: the DESIGN §2.1 fields, where it is
// attached, its revision, and warnings about a policy that is accepted but probably not meant.
type Policy struct {
	policy.Policy
	Scope     string    `json:"scope"`
	ID        string    `json:"id"`
	Revision  int64     `json:"revision"`
	UpdatedAt time.Time `json:"updated_at"`
	Warnings  []string  `json:"warnings,omitempty"`
	// Set only in the answer to a write made with wait=fleet.
	*Enforcement
}

// Effective is the answer of GET /v1/egress/session/{id}/effective.
type Effective struct {
	SessionID string `json:"session_id"`
	VMID      string `json:"vm_id"`
	policy.Explanation
}

// CheckRequest is the body of POST /v1/egress/session/{id}/check. Set exactly one of: URL
// (and Method); Host and Port (TCP to a name on any port 1-65535: web ports by the web
// rules, every port by allowed_tcp); IP, Port and Transport; DNSQuery and QType.
type CheckRequest struct {
	URL string `json:"url,omitempty"`
	// Method goes with URL: the request's method, upper case ("POST"); GET when empty. It
	// matters for hosts that http_rules name, whose requests are decided one by one.
	Method    string `json:"method,omitempty"`
	Host      string `json:"host,omitempty"`
	IP        string `json:"ip,omitempty"`
	Port      int    `json:"port,omitempty"`
	Transport string `json:"transport,omitempty"`
	DNSQuery  string `json:"dns_query,omitempty"`
	QType     string `json:"qtype,omitempty"`
	// Resolve makes the server look the name up and judge the addresses too, as the gateway
	// would before dialling. Without it a name is judged as a name.
	Resolve bool `json:"resolve,omitempty"`
}

// CheckResult is the decision the gateway would take. In monitor mode Decision is "allow"
// and WouldDeny says whether an enforcing policy would have denied it.
type CheckResult struct {
	Decision string `json:"decision"`
	// Reason is a stable snake_case code (docs/reasons.md); Message is its sentence.
	Reason    string          `json:"reason"`
	Message   string          `json:"message,omitempty"`
	Rule      string          `json:"rule"`
	Layer     string          `json:"layer"`
	WouldDeny bool            `json:"would_deny"`
	Addresses []AddressResult `json:"addresses,omitempty"`
}

// AddressResult is the decision for one resolved address, with "resolve": true.
type AddressResult struct {
	IP        string `json:"ip"`
	Decision  string `json:"decision"`
	Reason    string `json:"reason"`
	Message   string `json:"message,omitempty"`
	Rule      string `json:"rule"`
	Layer     string `json:"layer"`
	WouldDeny bool   `json:"would_deny"`
}

// CreateAPIKeyRequest is the body of POST /v1/api-keys (admin only).
type CreateAPIKeyRequest struct {
	Tenant string `json:"tenant"`
	Admin  bool   `json:"admin,omitempty"`
}

// APIKey describes a key. Key, the secret, is set only in the answer that creates it.
type APIKey struct {
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	Admin     bool      `json:"admin"`
	Key       string    `json:"key,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// PackageManagers is the answer of GET /v1/egress/package-managers.
type PackageManagers struct {
	Managers map[string][]string `json:"managers"`
}

// ErrorBody is the shape of every error answer.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong. Field names the request field to blame, when one is.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// List wrappers: the API answers lists inside an object so that fields can be added later.
type (
	VMList struct {
		VMs []VM `json:"vms"`
	}
	SessionList struct {
		Sessions []Session `json:"sessions"`
	}
	APIKeyList struct {
		Keys []APIKey `json:"keys"`
	}
)

// Error codes of ErrorDetail.Code, one per kind of failure (DESIGN §3).
const (
	CodeBadRequest       = "bad_request"        // 400: malformed JSON or a bad field
	CodeInvalidPolicy    = "invalid_policy"     // 400: the policy does not validate
	CodeUnauthorized     = "unauthorized"       // 401: no key or a wrong one
	CodeForbidden        = "forbidden"          // 403: an admin-only endpoint with a tenant key
	CodeNotFound         = "not_found"          // 404: unknown, or another tenant's
	CodeNotSet           = "policy_not_set"     // 404: the session or VM has no policy of that scope
	CodeMethodNotAllowed = "method_not_allowed" // 405
	CodeConflict         = "conflict"           // 409: the ID is taken
	CodeTooLarge         = "too_large"          // 413: the body is over 1 MiB
	CodeUnsupportedMedia = "unsupported_media"  // 415: the body is not JSON
	CodeRateLimited      = "rate_limited"       // 429
	CodeInternal         = "internal"           // 500: a bug
	CodeUnavailable      = "unavailable"        // 503: the store cannot be reached
)

// Node is one egressd process of the fleet (GET /v1/nodes, admin only).
type Node struct {
	ID      string            `json:"id"`
	Roles   []string          `json:"roles"`
	Address string            `json:"address,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	// SandboxCIDR is a transparent node's sandbox range.
	SandboxCIDR   string    `json:"sandbox_cidr,omitempty"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	// Revision is the store revision the node's view has applied.
	Revision int64 `json:"revision"`
	VMs      int   `json:"vm_count"`
	// State is "up", or "down" when the node has not heartbeated for 10 s.
	State string `json:"state"`
}

// NodeList is the answer of GET /v1/nodes.
type NodeList struct {
	Nodes []Node `json:"nodes"`
}
