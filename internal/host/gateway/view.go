package gateway

import (
	"net/netip"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/policy"
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
	// VMByAddr is the VM whose live network has the address a (a sandbox's source
	// address), as VMs would show it.
	VMByAddr(a netip.Addr) (VM, bool)
}

// VM is a VM as the gateway sees it.
type VM struct {
	Tenant, ID string
	Network    store.Network
	// Allowed is the effective allowed_cidrs: what the VM's policy AND every open
	// session's on it allow (DESIGN §2.4), forwarded by the kernel on any port.
	Allowed []netip.Prefix
	// Effective is the effective policy itself: allowed_tcp admissions are judged by it,
	// and monitor mode (every layer monitor) read from it. nil allows nothing.
	Effective *policy.Effective
}

// FromView adapts the view of the store. Each call of VMs reads every VM's effective
// policy once, atomically, so that the firewall built from it is one consistent state.
func FromView(v *view.View) View { return liveView{v} }

type liveView struct{ v *view.View }

func (l liveView) VMs() []VM {
	vms := l.v.VMs()
	out := make([]VM, 0, len(vms))
	for _, vm := range vms {
		out = append(out, gatewayVM(vm))
	}
	return out
}

func (l liveView) VMByAddr(a netip.Addr) (VM, bool) {
	vm := l.v.VMByAddr(a)
	if vm == nil {
		return VM{}, false
	}
	return gatewayVM(vm), true
}

// gatewayVM reads vm's effective policy once, so that Allowed and Effective agree.
func gatewayVM(vm *view.VM) VM {
	eff := vm.Effective()
	return VM{Tenant: vm.Tenant, ID: vm.ID, Network: vm.Network, Allowed: eff.AllowedPrefixes(), Effective: eff}
}

func (l liveView) Changed() <-chan struct{} { return l.v.Changed() }

func (l liveView) Revision() int64 { return l.v.Revision() }
