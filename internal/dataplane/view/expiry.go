package view

import (
	"context"
	"time"

	"github.com/egressd/egressd/policy"
)

// Grants end by themselves (DESIGN §2.8): the view compiles each effective policy with the
// active grants of its layers and keeps those layers, with the time the first grant
// expires. At that time (a timer kicks a sync, and every sync checks first) it compiles the
// policy again from the layers it kept, without the expired grants, and publishes it like
// any tightening: connections it no longer allows are cut, and the gateway, signalled,
// brings the firewall in line and flushes what the kernel forwarded. Expiry needs neither a
// store write nor a store read: a store that does not answer must not keep a grant alive
// (the view keeps enforcing its last known policies then, minus what expired).

// expiryKey is a session (by ID) or a VM whose policy holds a grant.
type expiryKey struct {
	session string
	vm      vmKey
}

// expiring is the layers a policy was compiled from, and when the first of their grants
// expires.
type expiring struct {
	at     time.Time
	layers []policy.NamedPolicy
}

// setExpiry records the layers k's policy was compiled from, if a grant of theirs will
// expire. v.mu must be held.
func (v *View) setExpiry(k expiryKey, layers []policy.NamedPolicy) {
	at := nextExpiry(layers)
	old, had := v.expiries[k]
	switch {
	case at.IsZero() && !had:
		return
	case at.IsZero():
		delete(v.expiries, k)
	default:
		v.expiries[k] = expiring{at: at, layers: layers}
		if had && old.at.Equal(at) {
			return
		}
	}
	select {
	case v.rearm <- struct{}{}:
	default:
	}
}

func nextExpiry(layers []policy.NamedPolicy) time.Time {
	var grants []policy.Grant
	for _, l := range layers {
		grants = append(grants, l.Grants...)
	}
	return policy.NextExpiry(grants)
}

// withoutExpired is layers without the grants that expired by now, and without a layer
// that had only grants (NoPolicy) and has none left.
func withoutExpired(layers []policy.NamedPolicy, now time.Time) []policy.NamedPolicy {
	out := make([]policy.NamedPolicy, 0, len(layers))
	for _, l := range layers {
		var kept []policy.Grant
		for _, g := range l.Grants {
			if g.ExpiresAt.After(now) {
				kept = append(kept, g)
			}
		}
		l.Grants = kept
		if l.NoPolicy && len(kept) == 0 {
			continue
		}
		out = append(out, l)
	}
	return out
}

// nextExpiryAt is the earliest expiry the view waits for; zero if none.
func (v *View) nextExpiryAt() time.Time {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var next time.Time
	for _, e := range v.expiries {
		if next.IsZero() || e.at.Before(next) {
			next = e.at
		}
	}
	return next
}

// expire compiles again, from the layers kept, the policies of the sessions and VMs whose
// grants expired by now, and publishes them. It runs in the sync (before the store is
// read), so that it never races the application of the change log.
func (v *View) expire(_ context.Context, now time.Time) error {
	type due struct {
		k   expiryKey
		set *policy.Effective
	}
	var dues []due
	v.mu.Lock()
	for k, e := range v.expiries {
		if e.at.After(now) {
			continue
		}
		layers := withoutExpired(e.layers, now)
		set, err := v.cfg.Env.Effective(layers...)
		if err != nil {
			// The layers compiled a moment ago, and fewer grants cannot break them.
			v.mu.Unlock()
			return err
		}
		dues = append(dues, due{k, set})
		if at := nextExpiry(layers); at.IsZero() {
			delete(v.expiries, k)
		} else {
			v.expiries[k] = expiring{at: at, layers: layers}
		}
	}
	idx := v.next
	if idx == nil {
		idx = v.idx.Load()
	}
	v.mu.Unlock()
	if len(dues) == 0 {
		return nil
	}
	for _, d := range dues {
		if d.k.session != "" {
			if s := idx.sessions[d.k.session]; s != nil {
				s.publish(d.set)
			}
		} else if vm := idx.vms[d.k.vm]; vm != nil {
			vm.publish(d.set)
		}
	}
	v.signal() // the gateway re-applies its firewall: a grant's range may be gone
	select {
	case v.rearm <- struct{}{}:
	default:
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
		if next := v.nextExpiryAt(); !next.IsZero() {
			t.Reset(time.Until(next))
		}
		select {
		case <-ctx.Done():
			return
		case <-v.rearm:
		case <-t.C:
			v.Kick()
			// The sync that this kick starts removes the expiry (and rearms); wait for it
			// rather than spin on an expiry in the past.
			select {
			case <-ctx.Done():
				return
			case <-v.rearm:
			case <-time.After(v.cfg.Poll):
			}
		}
	}
}
