package gateway

import (
	"context"
	"sync"
)

// WaitApplied returns once the kernel rules in force reflect every store change up to rev
// (the view had rev when the table in force was built from it), or ctx's error. A write is
// answered only after this (DESIGN §3), so that a forwarded flow that a tightened
// allowed_cidrs no longer allows cannot start right after the answer.
func (g *Gateway) WaitApplied(ctx context.Context, rev int64) error {
	return g.enforced.wait(ctx, rev)
}

// Revision is the store revision of the kernel rules in force: what this node enforces, as
// its heartbeat reports it for ?wait=fleet on other nodes. It trails the view's revision
// while an apply is under way, and stays behind it while applies fail.
func (g *Gateway) Revision() int64 { return g.enforced.current() }

// revisionWaiter is a revision that only grows, and lets callers wait for it to reach
// theirs without polling. Its zero value is ready.
type revisionWaiter struct {
	mu   sync.Mutex
	rev  int64
	next chan struct{} // closed when rev grows
}

func (w *revisionWaiter) advance(rev int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if rev <= w.rev {
		return
	}
	w.rev = rev
	if w.next != nil {
		close(w.next)
		w.next = nil
	}
}

func (w *revisionWaiter) current() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rev
}

func (w *revisionWaiter) wait(ctx context.Context, rev int64) error {
	for {
		w.mu.Lock()
		if w.rev >= rev {
			w.mu.Unlock()
			return nil
		}
		if w.next == nil {
			w.next = make(chan struct{})
		}
		next := w.next
		w.mu.Unlock()
		select {
		case <-next:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
