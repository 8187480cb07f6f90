package view

import (
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/policy"
)

// Session is one open session as the explicit proxy sees it: its credentials, and its own
// policy AND its VM's.
type Session struct {
	Tenant, ID, VMID string

	tokenHash []byte
	live
}

func newSession(se store.Session, set *policy.Effective) *Session {
	s := &Session{Tenant: se.Tenant, ID: se.ID, VMID: se.VMID, tokenHash: se.TokenHash}
	s.init(set)
	return s
}

// VM is one VM as the transparent gateway sees it: its network attachment, and its policy
// AND every open session's policy on it, since in transparent mode the sessions of a VM
// share its network and cannot be told apart.
//
// A VM is never changed: when its network changes (its node made it, or it is being
// deleted), the view replaces it with a new VM. The two share their connections (the live
// part) when the sandbox stays the same (Live, at the same address), and the old one ends
// otherwise.
type VM struct {
	Tenant, ID string
	Network    store.Network

	*live
}

// newVM makes a VM. l is the live part of the VM it replaces, or nil for a new one.
func newVM(vm store.VM, set *policy.Effective, l *live) *VM {
	if l == nil {
		l = &live{}
		l.init(set)
	} else {
		l.publish(set)
	}
	return &VM{Tenant: vm.Tenant, ID: vm.ID, Network: vm.Network, live: l}
}

// sameSandbox reports whether a VM whose network was a and is now b is still the same
// sandbox for the data path: live both times, at the same address. Its connections then
// carry on (a node claiming a VM stored before nodes changes its network, not its sandbox).
func sameSandbox(a, b store.Network) bool {
	return a.Live() && b.Live() && a.Address == b.Address
}
