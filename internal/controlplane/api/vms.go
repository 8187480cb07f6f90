package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/policy"
)

// idPattern is what a client may choose as a vm_id: it becomes part of file and interface
// names later, so it is kept to a safe alphabet.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func (s *Server) createVM(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	mode, err := parseWait(r)
	if err != nil {
		return err
	}
	var req client.CreateVMRequest
	if err := readJSON(w, r, &req, true); err != nil {
		return asPolicyError(err, "egress_policy") // the size and type errors name no field
	}
	vm := store.VM{Tenant: k.Tenant, ID: req.VMID, Network: store.Network{Mode: "none"}}
	if vm.ID == "" {
		vm.ID = randomID("vm_")
	} else if !idPattern.MatchString(vm.ID) {
		return badRequest("vm_id", "vm_id must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	if n := req.Network; n != nil {
		switch n.Mode {
		case "", "none":
		case "netns":
			if s.networks == nil {
				return badRequest("network.mode", `network mode "netns" needs the transparent gateway; start egressd with --transparent (Linux, root)`)
			}
			vm.Network.Mode = "netns"
		default:
			return badRequest("network.mode", `network mode %q is unknown; use "none" or "netns"`, n.Mode)
		}
		if n.Netns != "" || n.Path != "" || n.Address != "" || n.Gateway != "" {
			return badRequest("network", "only network.mode may be set; egressd assigns the rest")
		}
	}
	var pol *policy.Policy
	var warnings []string
	if req.EgressPolicy != nil {
		p, w, err := req.EgressPolicy.NormalizeFor(s.env.Classifier())
		if err != nil {
			return policyError(err, "egress_policy")
		}
		pol, warnings = &p, w
	}
	if vm.Network.Mode == "netns" {
		if _, err := s.store.GetVM(r.Context(), k.Tenant, vm.ID); err == nil {
			return errorf(http.StatusConflict, client.CodeConflict, "vm_id", "VM %q exists already", vm.ID)
		}
		// The network exists before the VM is stored: a VM that a client can see is one it
		// can run code in. If storing fails, the network goes again.
		n, err := s.networks.Attach(r.Context(), k.Tenant, vm.ID)
		if errors.Is(err, store.ErrConflict) {
			return errorf(http.StatusConflict, client.CodeConflict, "vm_id", "VM %q exists already or is being created", vm.ID)
		}
		if err != nil {
			return errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "network", "could not attach the VM's network: %v", err)
		}
		vm.Network = n
	}
	created, err := s.store.CreateVM(r.Context(), vm)
	if err != nil && vm.Network.Mode == "netns" {
		if derr := s.networks.Detach(r.Context(), k.Tenant, vm.ID, vm.Network); derr != nil {
			s.log.Error("removing the network of a VM that was not stored", "vm_id", vm.ID, "err", derr)
		}
	}
	if errors.Is(err, store.ErrConflict) {
		return errorf(http.StatusConflict, client.CodeConflict, "vm_id", "VM %q exists already", vm.ID)
	} else if err != nil {
		return err
	}
	out := vmOut(created, 0)
	rev := created.Revision
	if pol != nil {
		rec, err := s.store.PutPolicy(r.Context(), store.PolicyRecord{Tenant: k.Tenant, Scope: store.ScopeVM, ID: created.ID, Policy: *pol})
		if err != nil {
			// Do not leave a VM without the policy its creator asked for.
			if uerr := s.removeVM(context.WithoutCancel(r.Context()), created); uerr != nil {
				s.log.Error("removing a VM whose policy was not stored", "vm_id", created.ID, "err", uerr)
			}
			return err
		}
		out.EgressPolicy = policyOut(rec, warnings)
		rev = rec.Revision
	}
	if out.Enforcement, err = s.enforced(r.Context(), mode, rev); err != nil {
		return s.createdButNotEnforced(r.Context(), "VM", err, func(ctx context.Context) error { return s.removeVM(ctx, created) })
	}
	w.Header().Set("Location", "/v1/vms/"+url.PathEscape(created.ID))
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// removeVM takes back a VM that this request created: from the store, then its network.
func (s *Server) removeVM(ctx context.Context, vm store.VM) error {
	if err := s.store.DeleteVM(ctx, vm.Tenant, vm.ID); err != nil {
		return fmt.Errorf("deleting VM %q: %w", vm.ID, err)
	}
	if vm.Network.Mode == "netns" && s.networks != nil {
		if err := s.networks.Detach(ctx, vm.Tenant, vm.ID, vm.Network); err != nil {
			return fmt.Errorf("removing the network of VM %q: %w", vm.ID, err)
		}
	}
	return nil
}

func (s *Server) getVM(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	out, err := s.loadVM(r, k.Tenant, r.PathValue("vm_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// loadVM reads a VM with its policy and session count, as the API shows it.
func (s *Server) loadVM(r *http.Request, tenant, id string) (client.VM, error) {
	vm, err := s.store.GetVM(r.Context(), tenant, id)
	if errors.Is(err, store.ErrNotFound) {
		return client.VM{}, notFound("VM", id)
	} else if err != nil {
		return client.VM{}, err
	}
	sessions, err := s.store.ListSessions(r.Context(), tenant, id)
	if err != nil {
		return client.VM{}, err
	}
	out := vmOut(vm, len(sessions))
	rec, err := s.store.GetPolicy(r.Context(), tenant, store.ScopeVM, id)
	switch {
	case err == nil:
		out.EgressPolicy = policyOut(rec, nil)
	case !errors.Is(err, store.ErrNoPolicy) && !errors.Is(err, store.ErrNotFound):
		return client.VM{}, err
	}
	return out, nil
}

func (s *Server) listVMs(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	vms, err := s.store.ListVMs(r.Context(), k.Tenant)
	if err != nil {
		return err
	}
	sessions, err := s.store.ListSessions(r.Context(), k.Tenant, "")
	if err != nil {
		return err
	}
	count := make(map[string]int)
	for _, se := range sessions {
		count[se.VMID]++
	}
	out := client.VMList{VMs: make([]client.VM, 0, len(vms))}
	for _, vm := range vms {
		out.VMs = append(out.VMs, vmOut(vm, count[vm.ID]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deleteVM(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	mode, err := parseWait(r)
	if err != nil {
		return err
	}
	id := r.PathValue("vm_id")
	vm, err := s.store.GetVM(r.Context(), k.Tenant, id)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("VM", id)
	} else if err != nil {
		return err
	}
	if err := s.store.DeleteVM(r.Context(), k.Tenant, id); errors.Is(err, store.ErrNotFound) {
		return notFound("VM", id)
	} else if err != nil {
		return err
	}
	// The VM is gone from the store first, so its sessions' credentials stop working and the
	// gateway drops it from the firewall; then its network goes.
	if vm.Network.Mode == "netns" && s.networks != nil {
		if err := s.networks.Detach(r.Context(), k.Tenant, id, vm.Network); err != nil {
			s.log.Error("removing a deleted VM's network", "vm_id", id, "err", err)
		}
	}
	return s.answerDeleted(w, r, mode)
}

func vmOut(vm store.VM, sessions int) client.VM {
	return client.VM{
		VMID:      vm.ID,
		Network:   networkOut(vm.Network),
		Sessions:  sessions,
		CreatedAt: vm.CreatedAt,
	}
}

// networkOut is a stored network as the API shows it.
func networkOut(n store.Network) client.Network {
	return client.Network{
		Mode: n.Mode, Node: n.Node, State: n.State, Error: n.Error,
		Netns: n.Netns, Path: n.Path, Address: n.Address, Gateway: n.Gateway,
	}
}
