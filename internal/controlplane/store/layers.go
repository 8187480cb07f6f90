package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/egressd/egressd/policy"
)

// LayerRef names a stored policy that is one layer of an effective policy.
type LayerRef struct {
	Scope Scope
	ID    string // session_id or vm_id
	Layer policy.Layer
}

// SessionLayers are the layers of a session's effective policy as the explicit proxy
// applies it: its own policy and its VM's.
func SessionLayers(s Session) []LayerRef {
	return []LayerRef{{ScopeSession, s.ID, policy.LayerSession}, {ScopeVM, s.VMID, policy.LayerVM}}
}

// VMLayers are the layers of a VM's effective policy as the transparent gateway applies it:
// its own policy and every open session's on it (DESIGN §2.4).
func VMLayers(vmID string, sessionIDs []string) []LayerRef {
	refs := []LayerRef{{ScopeVM, vmID, policy.LayerVM}}
	for _, id := range sessionIDs {
		refs = append(refs, LayerRef{ScopeSession, id, policy.LayerSession})
	}
	return refs
}

// PolicyGetter is what LoadLayers reads.
type PolicyGetter interface {
	GetPolicy(ctx context.Context, tenant string, scope Scope, id string) (PolicyRecord, error)
}

// GrantLister is what LoadLayers reads grants with, when its store has them.
type GrantLister interface {
	ListGrants(ctx context.Context, tenant string, scope Scope, id string, now time.Time) ([]Grant, error)
}

// LoadLayers reads the policies of refs that are set, in order, each with its active grants
// (when st is a GrantLister too). An object that is gone (ErrNotFound) counts as having no
// policy: a layer of something that no longer exists restricts nothing that still does. A
// layer with grants but no policy is returned with NoPolicy set. The caller compiles the
// result with policy.Env, which applies the default policy when no layer is set.
func LoadLayers(ctx context.Context, st PolicyGetter, tenant string, refs ...LayerRef) ([]policy.NamedPolicy, error) {
	var out []policy.NamedPolicy
	gl, _ := st.(GrantLister)
	now := time.Now()
	for _, r := range refs {
		var grants []policy.Grant
		if gl != nil {
			gs, err := gl.ListGrants(ctx, tenant, r.Scope, r.ID, now)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return nil, fmt.Errorf("read the %s grants of %s: %w", r.Layer, r.ID, err)
			}
			for _, g := range gs {
				grants = append(grants, g.Policy())
			}
		}
		rec, err := st.GetPolicy(ctx, tenant, r.Scope, r.ID)
		switch {
		case err == nil:
			out = append(out, policy.NamedPolicy{Layer: r.Layer, Policy: rec.Policy, Revision: rec.Revision, UpdatedAt: rec.UpdatedAt, Grants: grants})
		case errors.Is(err, ErrNoPolicy), errors.Is(err, ErrNotFound):
			if len(grants) > 0 {
				out = append(out, policy.NamedPolicy{Layer: r.Layer, NoPolicy: true, Grants: grants})
			}
		default:
			return nil, fmt.Errorf("read the %s policy of %s: %w", r.Layer, r.ID, err)
		}
	}
	return out, nil
}
