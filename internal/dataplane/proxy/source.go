package proxy

import (
	"net/netip"

	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/policy"
)

// Sessions checks proxy credentials: the session ID and token of a Proxy-Authorization
// header. FromView adapts the gateway's view; tests pass their own.
type Sessions interface {
	Authenticate(sessionID, token string) (*Source, error)
}

// Source is where a connection comes from, as the proxy judges and records it. In the
// explicit proxy it is the session whose credentials the request carried, and Live is that
// session (its policy AND its VM's); in transparent mode it is the sandbox found by its
// address: ID is empty, VMID names the VM, and Live is the VM, whose policy is its own AND
// every open session's on it (DESIGN §2.4).
type Source struct {
	Tenant, ID, VMID string
	Live             Live
}

// key identifies the session, or the VM in transparent mode, for the connection cap.
func (s *Source) key() string {
	if s.ID != "" {
		return "session\x00" + s.ID
	}
	return "vm\x00" + s.Tenant + "\x00" + s.VMID
}

// who names the session, or the VM, in a message.
func (s *Source) who() string {
	if s.ID != "" {
		return "session " + s.ID
	}
	return "VM " + s.VMID
}

// same reports whether a and b are one session, or one VM.
func (s *Source) same(o *Source) bool {
	return s.Tenant == o.Tenant && s.ID == o.ID && s.VMID == o.VMID
}

// Live is a session's policy as it is now, and the registry of its live connections.
// *view.Session is one.
type Live interface {
	// Effective is the effective policy now; it is read again for every decision.
	Effective() *policy.Effective
	// Track registers a live connection allowed as c; cancel must close it, and is called
	// at most once, when a new policy denies c or the session ends. untrack is called when
	// the connection ends.
	Track(c policy.Conn, cancel func(reason string)) (untrack func())
	// Done is closed when the session (or the VM) ends; from then on it allows nothing,
	// whatever its last policy said. A nil channel: it never ends.
	Done() <-chan struct{}
}

// FromView authenticates against the gateway's live view of the store.
func FromView(v *view.View) Sessions { return viewSessions{v} }

type viewSessions struct{ v *view.View }

func (s viewSessions) Authenticate(id, token string) (*Source, error) {
	vs, err := s.v.Authenticate(id, token)
	if err != nil {
		return nil, err
	}
	return &Source{Tenant: vs.Tenant, ID: vs.ID, VMID: vs.VMID, Live: vs}, nil
}

// Sandboxes finds the sandbox a transparent connection comes from by its source address,
// the address egressd gave the VM's network. SandboxesFromView adapts the gateway's view;
// tests pass their own.
type Sandboxes interface {
	// BySource returns the VM whose sandbox has the address src, as a Session with an
	// empty ID, or false when no VM has it.
	BySource(src netip.Addr) (*Source, bool)
}

// SandboxesFromView finds sandboxes in the gateway's live view of the store: a VM by its
// network address, with its policy AND every open session's on it.
func SandboxesFromView(v *view.View) Sandboxes { return viewSandboxes{v} }

type viewSandboxes struct{ v *view.View }

func (s viewSandboxes) BySource(src netip.Addr) (*Source, bool) {
	vm := s.v.VMByAddr(src)
	if vm == nil {
		return nil, false
	}
	return &Source{Tenant: vm.Tenant, VMID: vm.ID, Live: vm}, true
}
