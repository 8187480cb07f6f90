package view

import (
	"context"
	"time"
)

// Grants end by themselves (DESIGN §2.8): the view compiles each effective policy with the
// active grants of its layers and notes when the first of them expires. At that time (a
// timer kicks a sync, and every sync checks) it compiles the policy again, without the
// expired grant, and publishes it like any tightening: connections it no longer allows are
// cut, and the gateway, signalled, brings the firewall in line and flushes what the kernel
// forwarded. A store write is not needed for that: expiry is a matter of the clock.

// expiryKey is a session (by ID) or a VM whose policy holds a grant.
type expiryKey struct {
	session string
	vm      vmKey
}

// setExpiry records when k's policy must be compiled again (zero: never). v.mu must be held.
func (v *View) setExpiry(k expiryKey, at time.Time) {
	old, had := v.expiries[k]
	switch {
	case at.IsZero() && !had:
		return
	case at.IsZero():
		delete(v.expiries, k)
	case had && old.Equal(at):
		return
	default:
		v.expiries[k] = at
	}
	select {
	case v.rearm <- struct{}{}:
	default:
	}
}

// nextExpiry is the earliest expiry the view waits for; zero if none.
func (v *View) nextExpiry() time.Time {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var next time.Time
	for _, at := range v.expiries {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// expire recompiles the sessions and VMs whose grants expired by now, and publishes them.
// It runs in the sync, so that it never races the application of the change log.
func (v *View) expire(ctx context.Context, now time.Time) error {
	var sessions []string
	var vms []vmKey
	v.mu.RLock()
	for k, at := range v.expiries {
		if at.After(now) {
			continue
		}
		if k.session != "" {
			sessions = append(sessions, k.session)
		} else {
			vms = append(vms, k.vm)
		}
	}
	v.mu.RUnlock()
	if len(sessions)+len(vms) == 0 {
		return nil
	}
	defer v.signal() // the gateway re-applies its firewall: a grant's CIDR may be gone
	defer v.commit()
	for _, id := range sessions {
		s := v.Session(id)
		if s == nil {
			v.mu.Lock()
			delete(v.expiries, expiryKey{session: id})
			v.mu.Unlock()
			continue
		}
		vmID, err := v.refresh(ctx, s.Tenant, id)
		if err != nil {
			return err
		}
		if vmID != "" {
			vms = append(vms, vmKey{s.Tenant, vmID})
		}
	}
	for _, k := range vms {
		if err := v.refreshVM(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// expiryTimer kicks a sync when the next grant expires, so that expiry is enforced at once
// rather than at the next poll.
func (v *View) expiryTimer(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		t.Stop()
		if next := v.nextExpiry(); !next.IsZero() {
			t.Reset(time.Until(next))
		}
		select {
		case <-ctx.Done():
			return
		case <-v.rearm:
		case <-t.C:
			v.Kick()
			// The sync that this kick starts removes the expiry (or records the next one,
			// which rearms); wait for it rather than spin on an expiry in the past.
			select {
			case <-ctx.Done():
				return
			case <-v.rearm:
			case <-time.After(v.cfg.Poll):
			}
		}
	}
}
