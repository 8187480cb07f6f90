package follow

import (
	"context"
	"sync"
)

// Revision is a store revision that only grows, which callers can wait for without polling:
// what a follower has applied, or what a gateway's kernel rules enforce. The zero value is
// revision 0 and ready.
type Revision struct {
	mu   sync.Mutex
	rev  int64
	next chan struct{} // closed when rev grows; nil until someone waits
}

// Advance raises the revision to rev, waking the waiters; a lower or equal rev changes nothing.
func (r *Revision) Advance(rev int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rev <= r.rev {
		return
	}
	r.rev = rev
	if r.next != nil {
		close(r.next)
		r.next = nil
	}
}

// Current is the revision now.
func (r *Revision) Current() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rev
}

// Wait returns nil once the revision is at least rev, or ctx's error. It also returns the
// revision it last saw, for the caller's message.
func (r *Revision) Wait(ctx context.Context, rev int64) (int64, error) {
	for {
		r.mu.Lock()
		cur := r.rev
		if cur >= rev {
			r.mu.Unlock()
			return cur, nil
		}
		if r.next == nil {
			r.next = make(chan struct{})
		}
		next := r.next
		r.mu.Unlock()
		select {
		case <-next:
		case <-ctx.Done():
			return cur, context.Cause(ctx)
		}
	}
}
