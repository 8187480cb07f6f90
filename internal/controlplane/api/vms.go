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
			if n.Node != "" || n.NodeSelector != nil {
				return badRequest("network.node", `network.node and network.node_selector place a "netns" network; a VM without one has nothing to place`)
			}
		case "netns":
			vm.Network.Mode = "netns"
		default:
			return badRequest("network.mode", `network mode %q is unknown; use "none" or "netns"`, n.Mode)
		}
		if n.Netns != "" || n.Path != "" || n.Address != "" || n.Gateway != "" || n.State != "" || n.Error != "" {
			return badRequest("network", "only network.mode, network.node and network.node_selector may be set; the node assigns the rest")
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
		if vm.Network.Node, err = s.place(r.Context(), req.Network); err != nil {
			return err
		}
		// Nodes leave a creating VM alone: its network is made once its policy is stored.
		vm.Network.State = store.NetworkPending
		if pol != nil {
			vm.Network.State = store.NetworkCreating
		}
	}
	created, err := s.store.CreateVM(r.Context(), vm)
	if errors.Is(err, store.ErrConflict) {
		return errorf(http.StatusConflict, client.CodeConflict, "vm_id", "VM %q exists already", vm.ID)
	} else if err != nil {
		return err
	}
	mine := created // what undo takes back: this VM, whatever created becomes below
	undo := func(ctx context.Context) error { return s.removeVM(ctx, mine) }
	out := vmOut(created, 0)
	if pol != nil {
		rec, err := s.store.PutPolicy(r.Context(), store.PolicyRecord{Tenant: k.Tenant, Scope: store.ScopeVM, ID: created.ID, Policy: *pol})
		if errors.Is(err, store.ErrNotFound) {
			return errorf(http.StatusConflict, client.CodeConflict, "vm_id", "VM %q was deleted while it was being created", vm.ID)
		} else if err != nil {
			// Do not leave a VM without the policy its creator asked for.
			return s.notCreated(r.Context(), created.ID, "storing its policy", err, undo)
		}
		out.EgressPolicy = policyOut(rec, warnings)
	}
	status := http.StatusCreated
	if created.Network.Mode == "netns" {
		var ready bool
		if created, ready, err = s.makeNetwork(r.Context(), created); err != nil {
			return s.notCreated(r.Context(), mine.ID, "handing it to its node", err, undo)
		}
		out.Network = networkOut(created.Network)
		if !ready {
			status = http.StatusAccepted
		}
	}
	if out.Enforcement, err = s.enforcedNewest(r.Context(), mode); err != nil {
		return s.createdButNotEnforced(r.Context(), "VM", err, undo)
	}
	w.Header().Set("Location", "/v1/vms/"+url.PathEscape(created.ID))
	writeJSON(w, status, out)
	return nil
}

// notCreated answers a creation that failed after the VM was stored (step names what
// failed), once undo has taken the VM back: err as it is when it is an answer already (a 409,
// the node's 503), else a 503 that says whether the VM is gone or left for the client to
// delete: the store that failed the step may fail the undo too (the database lost).
func (s *Server) notCreated(ctx context.Context, id, step string, err error, undo func(context.Context) error) error {
	uerr := undo(context.WithoutCancel(ctx))
	if uerr != nil {
		s.log.Error("removing a VM that was not created", "vm_id", id, "err", uerr)
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return err
	}
	s.log.Error("creating a VM failed after it was stored", "vm_id", id, "step", step, "err", err)
	if uerr != nil {
		return errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "",
			"VM %q was stored, but %s failed (%v), and removing it again failed (%v): delete it and try again", id, step, err, uerr)
	}
	return errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "", "VM %q was not created: %s failed (%v). Try again", id, step, err)
}

// errDeletedMeanwhile: a VM under creation was deleted by another request.
var errDeletedMeanwhile = errors.New("deleted while being created")

// makeNetwork hands a stored netns VM to its node (pending) and waits, up to networkWait, for
// the node to make its network and enforce it. It reports whether the network is ready; not
// ready in time is no error (the answer is 202, the node goes on), a failure is.
func (s *Server) makeNetwork(ctx context.Context, vm store.VM) (store.VM, bool, error) {
	if vm.Network.State == store.NetworkCreating {
		var err error
		next, err := s.store.UpdateVMNetwork(ctx, vm.Tenant, vm.ID, func(n store.Network) (store.Network, error) {
			if n.State != store.NetworkCreating {
				return n, errDeletedMeanwhile
			}
			n.State = store.NetworkPending
			return n, nil
		})
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, errDeletedMeanwhile) {
			return vm, false, errorf(http.StatusConflict, client.CodeConflict, "vm_id", "VM %q was deleted while it was being created", vm.ID)
		} else if err != nil {
			return vm, false, fmt.Errorf("hand VM %q to node %q: %w", vm.ID, vm.Network.Node, err)
		}
		vm = next
	}
	// One wait in all: the node making the network and then enforcing it share networkWait
	// (each wait below bounds itself by it too, and ends at this deadline first).
	ctx, cancel := context.WithTimeout(ctx, s.networkWait)
	defer cancel()
	got, settled := s.awaitNetwork(ctx, vm.Tenant, vm.ID, func(got store.VM, err error) bool {
		return err != nil || got.Revision != vm.Revision || got.Network.State != store.NetworkPending
	})
	switch {
	case !settled:
		return vm, false, nil
	case got.ID == "" || got.Revision != vm.Revision: // gone, or a VM of the same ID created since
		return vm, false, errorf(http.StatusConflict, client.CodeConflict, "vm_id", "VM %q was deleted while its network was being made", vm.ID)
	case got.Network.State == store.NetworkFailed:
		return got, false, errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "network",
			"node %q could not make the VM's network: %s. The VM was not created; try again, or name another node", got.Network.Node, got.Network.Error)
	case got.Network.State != store.NetworkReady:
		return got, false, errorf(http.StatusConflict, client.CodeConflict, "vm_id", "VM %q is %s", vm.ID, got.Network.State)
	}
	rev, err := s.store.Revision(ctx)
	if err == nil {
		err = s.ownerEnforced(ctx, got.Network.Node, rev)
	}
	if err != nil {
		s.log.Info("a VM's network is made but not yet enforced by its node; answering 202", "vm_id", vm.ID, "node", got.Network.Node, "err", err)
		return got, false, nil
	}
	return got, true, nil
}

// removeVM takes back a VM that this request created. A network that its node may have
// started on is the node's to remove (RetireVM); anything else goes at once. A VM of the
// same ID created since this one was deleted (a VM's revision is that of its creation) is
// another client's, and stays.
func (s *Server) removeVM(ctx context.Context, vm store.VM) error {
	cur, err := s.store.GetVM(ctx, vm.Tenant, vm.ID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && cur.Revision != vm.Revision) {
		return nil
	} else if err != nil {
		return err
	}
	if nodeRemoves(cur.Network) {
		_, err = s.store.RetireVM(ctx, vm.Tenant, vm.ID)
	} else {
		err = s.store.DeleteVM(ctx, vm.Tenant, vm.ID)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("deleting VM %q: %w", vm.ID, err)
	}
	return nil
}

// nodeRemoves reports whether a VM's network may exist on its node, so that deleting the VM
// is the node's work: pending (the node may be making it), ready, or deleting already. A VM
// of no node (stored before nodes) or one whose node made nothing (creating, failed) the API
// removes itself.
func nodeRemoves(n store.Network) bool {
	if n.Mode != "netns" || n.Node == "" {
		return false
	}
	switch n.State {
	case store.NetworkCreating, store.NetworkFailed:
		return false
	}
	return true
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
	down, err := s.downNodes(r.Context())
	if err != nil {
		return client.VM{}, err
	}
	out := vmOut(vm, len(sessions))
	out.Network = shownNetwork(vm.Network, down)
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
	down, err := s.downNodes(r.Context())
	if err != nil {
		return err
	}
	out := client.VMList{VMs: make([]client.VM, 0, len(vms))}
	for _, vm := range vms {
		o := vmOut(vm, count[vm.ID])
		o.Network = shownNetwork(vm.Network, down)
		out.VMs = append(out.VMs, o)
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
	if !nodeRemoves(vm.Network) {
		if err := s.store.DeleteVM(r.Context(), k.Tenant, id); errors.Is(err, store.ErrNotFound) {
			return notFound("VM", id)
		} else if err != nil {
			return err
		}
		return s.answerDeleted(w, r, mode)
	}
	// Its sessions and policies go now, so their credentials stop working at once; its node
	// removes the network and then the VM (DESIGN §5), which this waits for.
	if vm, err = s.store.RetireVM(r.Context(), k.Tenant, id); errors.Is(err, store.ErrNotFound) {
		return notFound("VM", id)
	} else if err != nil {
		return err
	}
	down, err := s.downNodes(r.Context())
	if err != nil {
		// The deletion is stored; whether the node is up is not known: wait for it as if
		// it were, and answer what the wait found.
		s.log.Warn("the fleet's nodes could not be read; waiting for a deleted VM's node as if it were up", "vm_id", id, "node", vm.Network.Node, "err", err)
	}
	if !down[vm.Network.Node] { // a down node removes nothing: answer at once
		_, gone := s.awaitNetwork(r.Context(), k.Tenant, id, func(cur store.VM, err error) bool {
			// Gone, or gone and created again since by another client.
			return errors.Is(err, store.ErrNotFound) || (err == nil && cur.Revision != vm.Revision)
		})
		if gone {
			return s.answerDeleted(w, r, mode)
		}
	}
	out := vmOut(vm, 0)
	out.Network = shownNetwork(vm.Network, down)
	writeJSON(w, http.StatusAccepted, out)
	return nil
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
