package proxy

import (
	"github.com/egressd/egressd/internal/view"
	"github.com/egressd/egressd/policy"
)

// Sessions checks proxy credentials: the session ID and token of a Proxy-Authorization
// header. FromView adapts the gateway's view; tests pass their own.
type Sessions interface {
	Authenticate(sessionID, token string) (*Session, error)
}

// Session is an authenticated session as the proxy uses it.
type Session struct {
	Tenant, ID, VMID string
	Live             Live
}

// Live is a session's policy as it is now, and the registry of its live connections.
// *view.Session is one.
type Live interface {
	// Set is the effective policy now; it is read again for every decision.
	Set() *policy.Set
	// Track registers a live connection allowed as c; cancel must close it, and is called
	// at most once, when a new policy denies c or the session ends. untrack is called when
	// the connection ends.
	Track(c policy.Conn, cancel func(reason string)) (untrack func())
}

// FromView authenticates against the gateway's live view of the store.
func FromView(v *view.View) Sessions { return viewSessions{v} }

type viewSessions struct{ v *view.View }

func (s viewSessions) Authenticate(id, token string) (*Session, error) {
	vs, err := s.v.Authenticate(id, token)
	if err != nil {
		return nil, err
	}
	return &Session{Tenant: vs.Tenant, ID: vs.ID, VMID: vs.VMID, Live: vs}, nil
}
