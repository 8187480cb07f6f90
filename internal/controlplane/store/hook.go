package store

import (
	"context"
	"time"
)

// WithHook wraps s so that after is called once every successful mutation has returned. In a
// single process the API's store is wrapped with the gateway view's Kick, so that a policy
// written through the API is enforced on the very next connection rather than at the next
// poll.
func WithHook(s Store, after func()) Store { return hooked{s, after} }

type hooked struct {
	Store
	after func()
}

func (h hooked) done(err error) error {
	if err == nil {
		h.after()
	}
	return err
}

func (h hooked) CreateAPIKey(ctx context.Context, k APIKey) error {
	return h.done(h.Store.CreateAPIKey(ctx, k))
}

func (h hooked) DeleteAPIKey(ctx context.Context, id string) error {
	return h.done(h.Store.DeleteAPIKey(ctx, id))
}

func (h hooked) CreateVM(ctx context.Context, vm VM) (VM, error) {
	out, err := h.Store.CreateVM(ctx, vm)
	return out, h.done(err)
}

func (h hooked) DeleteVM(ctx context.Context, tenant, id string) error {
	return h.done(h.Store.DeleteVM(ctx, tenant, id))
}

func (h hooked) CreateSession(ctx context.Context, s Session) (Session, error) {
	out, err := h.Store.CreateSession(ctx, s)
	return out, h.done(err)
}

func (h hooked) DeleteSession(ctx context.Context, tenant, id string) error {
	return h.done(h.Store.DeleteSession(ctx, tenant, id))
}

func (h hooked) PutPolicy(ctx context.Context, r PolicyRecord) (PolicyRecord, error) {
	out, err := h.Store.PutPolicy(ctx, r)
	return out, h.done(err)
}

func (h hooked) DeletePolicy(ctx context.Context, tenant string, scope Scope, id string) error {
	return h.done(h.Store.DeletePolicy(ctx, tenant, scope, id))
}

func (h hooked) RetireVM(ctx context.Context, tenant, id string) (VM, error) {
	out, err := h.Store.RetireVM(ctx, tenant, id)
	return out, h.done(err)
}

func (h hooked) UpdateVMNetwork(ctx context.Context, tenant, id string, update func(Network) (Network, error)) (VM, error) {
	out, err := h.Store.UpdateVMNetwork(ctx, tenant, id, update)
	return out, h.done(err)
}

func (h hooked) CreateSecret(ctx context.Context, s Secret) (Secret, error) {
	out, err := h.Store.CreateSecret(ctx, s)
	return out, h.done(err)
}

func (h hooked) UpdateSecret(ctx context.Context, tenant, name string, update func(Secret) (Secret, error)) (Secret, error) {
	out, err := h.Store.UpdateSecret(ctx, tenant, name, update)
	return out, h.done(err)
}

func (h hooked) DeleteSecret(ctx context.Context, tenant, name string) error {
	return h.done(h.Store.DeleteSecret(ctx, tenant, name))
}

func (h hooked) CreateGrant(ctx context.Context, g Grant, ttl time.Duration) (Grant, error) {
	out, err := h.Store.CreateGrant(ctx, g, ttl)
	return out, h.done(err)
}

func (h hooked) DeleteGrant(ctx context.Context, tenant string, scope Scope, id, grantID string) error {
	return h.done(h.Store.DeleteGrant(ctx, tenant, scope, id, grantID))
}

func (h hooked) SweepGrants(ctx context.Context, now time.Time) (int, error) {
	n, err := h.Store.SweepGrants(ctx, now)
	if n == 0 {
		return n, err // nothing changed: no view needs waking
	}
	return n, h.done(err)
}
