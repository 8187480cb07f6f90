package view

import (
	"sync"
	"sync/atomic"

	"github.com/egressd/egressd/policy"
)

// Reasons a tracked connection is cancelled.
const (
	CancelPolicy       = "policy"        // the new effective policy denies it
	CancelSessionEnded = "session ended" // the session was ended or its VM deleted
)

// live is what sessions and VMs share: an effective policy that is replaced, never changed,
// and the connections that were allowed under it.
type live struct {
	set  atomic.Pointer[policy.Effective]
	done chan struct{}

	mu    sync.Mutex
	conns map[*tracked]struct{}
	ended bool
}

type tracked struct {
	conn   policy.Conn
	once   sync.Once
	cancel func(reason string)
}

func (t *tracked) fire(reason string) { t.once.Do(func() { go t.cancel(reason) }) }

func (l *live) init(set *policy.Effective) {
	l.done = make(chan struct{})
	l.conns = make(map[*tracked]struct{})
	l.set.Store(set)
}

// Effective is the effective policy now. Read it for every decision: it is replaced, never
// changed, when a policy changes.
func (l *live) Effective() *policy.Effective { return l.set.Load() }

// Done is closed when the session or VM ends.
func (l *live) Done() <-chan struct{} { return l.done }

// Track registers a live connection that was allowed as c (Host, the IP dialled, Port,
// Transport). cancel is called at most once, on its own goroutine, with CancelPolicy when a
// new effective policy denies c, or CancelSessionEnded when the session (or VM) ends; it
// must close the connection. untrack must be called when the connection ends.
func (l *live) Track(c policy.Conn, cancel func(reason string)) (untrack func()) {
	t := &tracked{conn: c, cancel: cancel}
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		t.fire(CancelSessionEnded)
		return func() {}
	}
	l.conns[t] = struct{}{}
	l.mu.Unlock()
	// A policy published between the caller's decision and this registration must still
	// be applied to this connection.
	if set := l.Effective(); set != nil && !set.Decide(c).Allow {
		l.mu.Lock()
		delete(l.conns, t)
		l.mu.Unlock()
		t.fire(CancelPolicy)
		return func() {}
	}
	return func() {
		l.mu.Lock()
		delete(l.conns, t)
		l.mu.Unlock()
	}
}

// publish makes set the effective policy and cancels what it no longer allows.
func (l *live) publish(set *policy.Effective) {
	l.set.Store(set)
	l.mu.Lock()
	var denied []*tracked
	for t := range l.conns {
		if !set.Decide(t.conn).Allow {
			denied = append(denied, t)
			delete(l.conns, t)
		}
	}
	l.mu.Unlock()
	for _, t := range denied {
		t.fire(CancelPolicy)
	}
}

// end cancels every connection and marks the owner ended.
func (l *live) end() {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return
	}
	l.ended = true
	conns := l.conns
	l.conns = nil
	close(l.done)
	l.mu.Unlock()
	for t := range conns {
		t.fire(CancelSessionEnded)
	}
}
