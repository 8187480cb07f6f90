package store

import "sync"

// Signal tells waiters that the store may have changed: this process's writes (WithHook) and,
// in a fleet, PostgreSQL's notifications of other nodes' writes both Kick it. A waiter takes
// Next before it reads the store, and then waits on the channel: a change after the read
// closes it, so nothing slips between the read and the wait. The zero value is ready.
type Signal struct {
	mu   sync.Mutex
	next chan struct{}
}

// Kick wakes everyone waiting on a channel from Next. It never blocks.
func (s *Signal) Kick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next != nil {
		close(s.next)
		s.next = nil
	}
}

// Next is a channel that is closed by the next Kick.
func (s *Signal) Next() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == nil {
		s.next = make(chan struct{})
	}
	return s.next
}
