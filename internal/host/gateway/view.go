package gateway

import (
	"net/netip"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/view"
)

// View is the live picture of the VMs that the firewall follows. FromView adapts the view
// of the store; tests pass their own.
type View interface {
	// VMs returns every VM, in any order, each with its effective policy as it is now.
	VMs() []VM
	// Changed is signalled whenever a VM comes, goes or changes its effective policy, once
	// Revision says the change's revision.
	Changed() <-chan struct{}
	// Revision is the store revision the view has applied: VMs reflects every change up
	// to it.
	Revision() int64
}

// VM is a VM as the gateway sees it.
type VM struct {
	Tenant, ID string
	Network    store.Network
	// Allowed is the effective allowed_cidrs: what the VM's policy AND every open
	// session's on it allow (DESIGN §2.4), forwarded by the kernel on any port.
	Allowed []netip.Prefix
}

// FromView adapts the view of the store. Each call of VMs reads every VM's effective
// policy once, atomically, so that the firewall built from it is one consistent state.
func FromView(v *view.View) View { return liveView{v} }

type liveView struct{ v *view.View }

func (l liveView) VMs() []VM {
	vms := l.v.VMs()
	out := make([]VM, 0, len(vms))
	for _, vm := range vms {
		out = append(out, VM{Tenant: vm.Tenant, ID: vm.ID, Network: vm.Network, Allowed: vm.Effective().AllowedPrefixes()})
	}
	return out
}

func (l liveView) Changed() <-chan struct{} { return l.v.Changed() }

func (l liveView) Revision() int64 { return l.v.Revision() }
