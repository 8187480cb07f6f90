package dnsfilter

import (
	"net/netip"

	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/policy"
)

// FromView adapts the gateway's view of the store to VMs: a query's source address is
// looked up among the VMs' network attachments, and the VM's effective policy (its policy AND every
// open session's on it) is read atomically, once per query, so that a policy change
// applies to the next query.
func FromView(v *view.View) VMs { return viewVMs{v} }

type viewVMs struct{ v *view.View }

func (w viewVMs) VMByAddr(a netip.Addr) (string, string, *policy.Effective, bool) {
	vm := w.v.VMByAddr(a)
	if vm == nil {
		return "", "", nil, false
	}
	return vm.Tenant, vm.ID, vm.Effective(), true
}
