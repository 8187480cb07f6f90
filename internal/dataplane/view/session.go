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
type VM struct {
	Tenant, ID string
	Network    store.Network

	live
}

func newVM(vm store.VM, set *policy.Effective) *VM {
	v := &VM{Tenant: vm.Tenant, ID: vm.ID, Network: vm.Network}
	v.init(set)
	return v
}
