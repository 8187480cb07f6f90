package view

import (
	"sync"
	"sync/atomic"

	"github.com/egressd/egressd/internal/store"
	"github.com/egressd/egressd/policy"
)

// Reasons a tracked connection is cancelled.
const (
	CancelPolicy       = "policy"        // the new effective policy denies it
	CancelSessionEnded = "session ended" // the session was ended or its VM deleted
)

// Session is one open session as the data path sees it.
type Session struct {
	Tenant, ID, VMID string

	tokenHash []byte
	set       atomic.Pointer[policy.Set]
	done      chan struct{}

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

func newSession(se store.Session) *Session {
	return &Session{
		Tenant: se.Tenant, ID: se.ID, VMID: se.VMID,
		tokenHash: se.TokenHash,
		done:      make(chan struct{}),
		conns:     make(map[*tracked]struct{}),
	}
}

// Set is the session's effective policy now. Read it for every decision: it is replaced,
// never changed, when a policy changes.
func (s *Session) Set() *policy.Set { return s.set.Load() }

// Done is closed when the session ends.
func (s *Session) Done() <-chan struct{} { return s.done }

// Track registers a live connection that was allowed as c (Host, the IP dialled, Port,
// Transport). cancel is called at most once, on its own goroutine, with CancelPolicy when a
// new effective policy denies c, or CancelSessionEnded when the session ends; it must close
// the connection. untrack must be called when the connection ends.
func (s *Session) Track(c policy.Conn, cancel func(reason string)) (untrack func()) {
	t := &tracked{conn: c, cancel: cancel}
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		t.fire(CancelSessionEnded)
		return func() {}
	}
	s.conns[t] = struct{}{}
	s.mu.Unlock()
	// A policy published between the caller's decision and this registration must still
	// be applied to this connection.
	if set := s.Set(); set != nil && !set.Decide(c).Allow {
		s.mu.Lock()
		delete(s.conns, t)
		s.mu.Unlock()
		t.fire(CancelPolicy)
		return func() {}
	}
	return func() {
		s.mu.Lock()
		delete(s.conns, t)
		s.mu.Unlock()
	}
}

// publish makes set the session's effective policy and cancels what it no longer allows.
func (s *Session) publish(set *policy.Set) {
	old := s.set.Swap(set)
	if old == nil {
		return
	}
	s.mu.Lock()
	var denied []*tracked
	for t := range s.conns {
		if !set.Decide(t.conn).Allow {
			denied = append(denied, t)
			delete(s.conns, t)
		}
	}
	s.mu.Unlock()
	for _, t := range denied {
		t.fire(CancelPolicy)
	}
}

// end cancels every connection of the session and marks it ended.
func (s *Session) end() {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	conns := s.conns
	s.conns = nil
	close(s.done)
	s.mu.Unlock()
	for t := range conns {
		t.fire(CancelSessionEnded)
	}
}
