// Package store keeps egressd's control-plane state: tenants' API keys, VMs, sessions and their
// policies, tenants' secrets, the interception CA, and the fleet's nodes. Store is the one interface; package sqlite is the embedded
// implementation, package postgres the fleet's, both over the shared SQL of package sqlstore.
//
// Every mutation takes the next value of one store-wide revision counter, so that a reader can
// tell what is newer and (in a fleet) catch up on what it missed. An acknowledged write is
// durable: when a method returns nil the change survives a crash of the process. Nodes are the
// exception: their heartbeats take no revision (see PutNode); so are the values written once
// for the whole store, the secrets key's check value and the CA (InitKeyCheck, InitCA).
//
// Every method that reads or changes a tenant's object takes the tenant, and an object of
// another tenant is reported as ErrNotFound, exactly as if it did not exist.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/egressd/egressd/policy"
)

var (
	// ErrNotFound: no such object for this tenant.
	ErrNotFound = errors.New("not found")
	// ErrConflict: an object with that ID exists already.
	ErrConflict = errors.New("already exists")
	// ErrNoPolicy: the object exists but has no policy of that scope set.
	ErrNoPolicy = errors.New("no policy set")
	// ErrTooMany: the object has as many grants as it may have.
	ErrTooMany = errors.New("too many")
)

// Scope is what a policy is attached to.
type Scope string

const (
	ScopeSession Scope = "session"
	ScopeVM      Scope = "vm"
)

// APIKey is one tenant's credential. Only a hash of the secret is kept.
type APIKey struct {
	ID        string
	Tenant    string
	Admin     bool
	Hash      []byte // SHA-256 of the secret key
	CreatedAt time.Time
}

// Network is how a VM is attached (DESIGN §3, §4, §5). Its wire form is client.Network; the
// API converts.
//
// A "netns" network belongs to one gateway node (Node), which makes and removes it while
// following the store; State says how far it got. The API writes the network of a VM it
// creates or deletes (NetworkCreating, NetworkPending, NetworkDeleting); the owning node
// writes the rest (NetworkReady, NetworkFailed, and the attachment's Netns, Path, Address and
// Gateway), and is the only one that ever touches the namespace.
type Network struct {
	Mode    string // "none" or "netns"
	Node    string // netns: the ID of the gateway node that owns it
	State   string // netns: one of the Network* states; "" in stores written before nodes
	Error   string // NetworkFailed: why
	Netns   string // the namespace's name
	Path    string // its path, /run/netns/<name>
	Address string // the sandbox's address in it
	Gateway string // the gateway's address on the VM's link
}

// The states of a "netns" network (DESIGN §5). A node's being down is no state of the VM's:
// the API shows "node_down" over the stored state while the owning node is silent.
const (
	// NetworkCreating: the API is still storing the VM's policy; nodes leave it alone, so
	// that no sandbox network is up before the policy its creator asked for is stored.
	NetworkCreating = "creating"
	// NetworkPending: stored and complete; the owning node is to make the network.
	NetworkPending = "pending"
	// NetworkReady: the node made it; the attachment fields say where it is.
	NetworkReady = "ready"
	// NetworkFailed: the node could not make it; Error says why. Nothing of it is left.
	NetworkFailed = "failed"
	// NetworkDeleting: the VM was deleted (its sessions and policies are gone); its node
	// removes the network and then the VM itself (DeleteVM).
	NetworkDeleting = "deleting"
)

// Live reports whether n is a network the owning node runs: ready, or stored before
// networks had states.
func (n Network) Live() bool {
	return n.Mode == "netns" && (n.State == NetworkReady || n.State == "")
}

// VM is one sandbox.
type VM struct {
	Tenant    string
	ID        string
	Network   Network
	Revision  int64
	CreatedAt time.Time
}

// Session is one use of a VM. TokenHash is the SHA-256 of its proxy token.
type Session struct {
	Tenant    string
	ID        string
	VMID      string
	TokenHash []byte
	Revision  int64
	CreatedAt time.Time
}

// PolicyRecord is a stored policy and where it is attached.
type PolicyRecord struct {
	Tenant    string
	Scope     Scope
	ID        string // session_id or vm_id
	Policy    policy.Policy
	Revision  int64
	UpdatedAt time.Time
}

// Store is the control-plane state. Implementations are safe for concurrent use.
type Store interface {
	// CreateAPIKey stores k; ErrConflict if its ID or hash exists. A zero CreatedAt is set to
	// the current time.
	CreateAPIKey(ctx context.Context, k APIKey) error
	// APIKeyByHash finds the key whose secret hashes to hash; ErrNotFound if none.
	APIKeyByHash(ctx context.Context, hash []byte) (APIKey, error)
	// ListAPIKeys lists every tenant's keys, oldest first (admin only, enforced by the caller).
	ListAPIKeys(ctx context.Context) ([]APIKey, error)
	// DeleteAPIKey removes a key by ID; ErrNotFound if none.
	DeleteAPIKey(ctx context.Context, id string) error

	// CreateVM stores a new VM, setting Revision and CreatedAt; ErrConflict if the tenant has one with that ID.
	CreateVM(ctx context.Context, vm VM) (VM, error)
	GetVM(ctx context.Context, tenant, id string) (VM, error)
	// ListVMs lists the tenant's VMs, oldest first.
	ListVMs(ctx context.Context, tenant string) ([]VM, error)
	// DeleteVM removes the VM, its policy, its sessions and their policies in one transaction.
	DeleteVM(ctx context.Context, tenant, id string) error
	// RetireVM is the first half of deleting a VM whose network a node must remove: in one
	// transaction it removes the VM's sessions and policies, as DeleteVM does, and sets its
	// network's State to NetworkDeleting. The node then removes the network and the VM
	// (DeleteVM). It returns the VM as it is now; ErrNotFound if the tenant has none.
	RetireVM(ctx context.Context, tenant, id string) (VM, error)
	// UpdateVMNetwork replaces a VM's network with what update makes of the stored one, in
	// one transaction, so that two writers (the API deleting, the node finishing) cannot
	// overwrite each other. An error from update aborts the change and is returned as it is
	// (wrapped); ErrNotFound if the tenant has no such VM. The VM keeps its Revision (that of
	// its creation, which orders VMs by age); the change log records the update.
	UpdateVMNetwork(ctx context.Context, tenant, id string, update func(Network) (Network, error)) (VM, error)

	// CreateSession stores a new session on an existing VM of the tenant (ErrNotFound if the VM
	// is not there, is being deleted, or is still being created: its policy may not be stored
	// yet), setting Revision and CreatedAt. Session IDs are unique store-wide.
	CreateSession(ctx context.Context, s Session) (Session, error)
	GetSession(ctx context.Context, tenant, id string) (Session, error)
	// ListSessions lists the tenant's sessions on one VM (all VMs when vmID is ""), oldest first.
	// A VM that is not the tenant's has no sessions: the list is empty, not ErrNotFound.
	ListSessions(ctx context.Context, tenant, vmID string) ([]Session, error)
	// DeleteSession ends a session and deletes its policy in one transaction.
	DeleteSession(ctx context.Context, tenant, id string) error

	// PutPolicy replaces the policy of a session or VM (ErrNotFound if the object is not the
	// tenant's, or is a VM being deleted), setting Revision and UpdatedAt.
	PutPolicy(ctx context.Context, r PolicyRecord) (PolicyRecord, error)
	// GetPolicy reads it: ErrNotFound if the object is not there, ErrNoPolicy if it has none.
	GetPolicy(ctx context.Context, tenant string, scope Scope, id string) (PolicyRecord, error)
	// DeletePolicy clears it: ErrNotFound if the object is not there, ErrNoPolicy if it has none.
	DeletePolicy(ctx context.Context, tenant string, scope Scope, id string) error

	// AllVMs lists every tenant's VMs, oldest first: for the gateway, which attaches every
	// tenant's sandboxes, never for an answer to a tenant.
	AllVMs(ctx context.Context) ([]VM, error)
	// AllSessions lists every tenant's sessions, oldest first: for the gateway, which
	// enforces every tenant's policies, never for an answer to a tenant.
	AllSessions(ctx context.Context) ([]Session, error)
	// ChangesSince lists up to limit changes with a revision greater than rev, oldest first
	// (limit at most MaxChanges). A reader that has applied everything up to rev calls it
	// until it returns fewer than limit changes, passing the last revision it got each time.
	ChangesSince(ctx context.Context, rev int64, limit int) ([]Change, error)

	// PutNode registers a node, or replaces its registration (by ID), with Heartbeat set to the
	// store's Now whatever n says. It takes no revision and is not in the change log: every
	// node heartbeats every second, and that must not wake every view.
	PutNode(ctx context.Context, n Node) error
	// ListNodes lists every registered node, by ID. Roles and Labels are never nil.
	ListNodes(ctx context.Context) ([]Node, error)
	// Now is the store's clock, the one that sets Heartbeat: the database server's for
	// PostgreSQL, so that the nodes of a fleet agree on it whatever their own clocks say.
	// Judge a heartbeat against it (Node.Up), never against the local clock.
	Now(ctx context.Context) (time.Time, error)

	// CreateSecret stores a new secret of a tenant, setting Revision, CreatedAt and
	// UpdatedAt; ErrConflict if the tenant has one of that name (or, never in practice, its
	// placeholder is taken).
	CreateSecret(ctx context.Context, s Secret) (Secret, error)
	// GetSecret reads one of the tenant's secrets; ErrNotFound if it has none of that name.
	GetSecret(ctx context.Context, tenant, name string) (Secret, error)
	// ListSecrets lists the tenant's secrets, by name (byte order).
	ListSecrets(ctx context.Context, tenant string) ([]Secret, error)
	// UpdateSecret replaces a secret's Domains and Sealed value with what update makes of the
	// stored secret, in one transaction, setting Revision and UpdatedAt; the rest (Tenant,
	// Name, Placeholder, CreatedAt) stays as it is whatever update returns. An error from
	// update aborts the change and is returned (wrapped); ErrNotFound if there is no such
	// secret.
	UpdateSecret(ctx context.Context, tenant, name string, update func(Secret) (Secret, error)) (Secret, error)
	// DeleteSecret removes one of the tenant's secrets; ErrNotFound if there is none.
	DeleteSecret(ctx context.Context, tenant, name string) error
	// AllSecrets lists every tenant's secrets, by tenant and name: for the gateway, which
	// puts every tenant's secrets on their requests, never for an answer to a tenant.
	AllSecrets(ctx context.Context) ([]Secret, error)

	// KeyCheck is the check value of the secrets key that the store's sealed data is sealed
	// with (package keyring); ErrNotFound before the first node stored one.
	KeyCheck(ctx context.Context) ([]byte, error)
	// InitKeyCheck stores check unless a check value is stored already, and returns the
	// check value stored now: the first node's, whichever node asks. Like nodes, it takes no
	// revision.
	InitKeyCheck(ctx context.Context, check []byte) ([]byte, error)
	// GetCA reads the interception CA; ErrNotFound before the first node made one.
	GetCA(ctx context.Context) (CA, error)
	// InitCA stores ca unless a CA is stored already, and returns the CA stored now, so that
	// nodes that start together all end up with the one CA that won. A zero CreatedAt is set
	// to the current time. It takes no revision.
	InitCA(ctx context.Context, ca CA) (CA, error)

	// CreateGrant stores a new grant on one of the tenant's sessions or VMs (ErrNotFound if
	// the object is not there, or is a VM being created or deleted), setting Revision,
	// CreatedAt and ExpiresAt = CreatedAt + ttl; ttl must be within MinGrantTTL..MaxGrantTTL.
	// ErrConflict if the ID is taken, ErrTooMany if the object has MaxGrantsPerObject active
	// grants already. The write takes a revision like a policy write, so views follow it.
	CreateGrant(ctx context.Context, g Grant, ttl time.Duration) (Grant, error)
	// ListGrants lists the active grants (ExpiresAt after now) of one of the tenant's
	// sessions or VMs, oldest first; ErrNotFound if the object is not there.
	ListGrants(ctx context.Context, tenant string, scope Scope, id string, now time.Time) ([]Grant, error)
	// DeleteGrant revokes one grant of a session or VM; ErrNotFound if that object of the
	// tenant has no grant with this ID.
	DeleteGrant(ctx context.Context, tenant string, scope Scope, id, grantID string) error
	// SweepGrants deletes every grant that expired at or before now, logging each, and
	// returns how many it deleted. Readers ignore expired grants already: sweeping only
	// keeps the table small.
	SweepGrants(ctx context.Context, now time.Time) (int, error)

	// Revision is the newest revision the store has handed out.
	Revision(ctx context.Context) (int64, error)
	// Ping reports whether the store can serve requests (readiness).
	Ping(ctx context.Context) error
	Close() error
}

// Node is one egressd process of a fleet, as it registered itself (DESIGN §5).
type Node struct {
	ID      string
	Roles   []string // what it runs ("api", "gateway", ...), as it says
	Address string   // where to reach it, as it says
	Labels  map[string]string
	// SandboxCIDR is the range a transparent node takes sandbox addresses from ("" for
	// other nodes); no two registered nodes' ranges may overlap.
	SandboxCIDR string
	// Instance tells apart the processes that register with one ID: a random string of the
	// process that holds the ID now, "" once it let go (package fleet).
	Instance string
	Revision int64 // the store revision its view has applied (not a revision of this record)
	VMs      int   // the VMs whose networks it runs
	// Heartbeat is when it last reported, by the store's clock (Store.Now).
	Heartbeat time.Time
}

// DownAfter is how long a node may stay silent before it is down (DESIGN §5).
const DownAfter = 10 * time.Second

// Up reports whether the node has heartbeat within DownAfter of now, a time of the store's
// clock (Store.Now). A heartbeat after now (read before it) is up.
func (n Node) Up(now time.Time) bool { return now.Sub(n.Heartbeat) < DownAfter }

// Change is one entry of a store's change log: one object that a mutation created, replaced or
// deleted, and the revision it took. A fleet node that missed notifications reads the changes
// after the last revision it saw and reloads the objects they name (DESIGN §5).
//
// A mutation that removes several objects (DeleteVM, DeleteSession) logs one Change for each of
// them, in one transaction, so that a reader of the log never needs to know the cascade rules.
type Change struct {
	Revision int64
	Tenant   string
	Kind     string // one of the Kind constants
	ID       string // the object's ID: key ID, vm_id, session_id or secret name
	Op       string // one of the Op constants
	At       time.Time
}

// MaxChanges is the most changes one ChangesSince call may ask for.
const MaxChanges = 10000

// Kinds of object in the change log. A policy's ID is the ID of the VM or session that it is
// attached to, so its kind carries the scope. API keys are logged too, so that a fleet node
// that caches keys learns of a revoked one.
const (
	KindAPIKey        = "api_key"
	KindVM            = "vm"
	KindSession       = "session"
	KindVMPolicy      = "vm_policy"
	KindSessionPolicy = "session_policy"
	// KindSecret: a tenant's secret; its ID is the secret's name. A rotation is a replace.
	KindSecret = "secret"
)

// Operations in the change log.
const (
	OpCreate  = "create"
	OpReplace = "replace"
	OpDelete  = "delete"
)
