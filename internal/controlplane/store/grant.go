package store

import (
	"time"

	"github.com/egressd/egressd/policy"
)

// Grant is an allowance that ends by itself (DESIGN §2.8): entries added to one session's
// or VM's layer until ExpiresAt. Its entries are normalised (policy.NormalizeGrant) before
// they are stored. An expired grant is ignored by every reader (ListGrants, AllGrants) and
// removed by SweepGrants; deleting its session or VM deletes it.
type Grant struct {
	Tenant   string
	ID       string // "gr_" and random: unique store-wide
	Scope    Scope
	ObjectID string // the session_id or vm_id it is attached to
	Domains  []string
	TCP      []string
	CIDRs    []string
	Note     string
	Revision int64 // the revision of its creation
	// CreatedAt is set by CreateGrant; ExpiresAt is CreatedAt plus the TTL given to it.
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Policy is the grant as package policy compiles it.
func (g Grant) Policy() policy.Grant {
	return policy.Grant{ID: g.ID, Domains: g.Domains, TCP: g.TCP, CIDRs: g.CIDRs, ExpiresAt: g.ExpiresAt}
}

// Grant limits (DESIGN §2.8).
const (
	MinGrantTTL = time.Second
	MaxGrantTTL = 24 * time.Hour
	// MaxGrantsPerObject bounds the active grants of one session or VM, so that a layer's
	// compile stays bounded whatever a client does.
	MaxGrantsPerObject = 100
)

// Change-log kinds of grants. Like a policy's, a grant's change names the session or VM it is
// attached to (Change.ID is the object's ID), so that a reader refreshes that layer.
const (
	KindSessionGrant = "session_grant"
	KindVMGrant      = "vm_grant"
)

// GrantKind is the change-log kind of a grant of scope.
func GrantKind(scope Scope) string {
	if scope == ScopeVM {
		return KindVMGrant
	}
	return KindSessionGrant
}
