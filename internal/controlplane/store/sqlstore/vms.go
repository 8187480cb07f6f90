package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/egressd/egressd/internal/controlplane/store"
)

const vmColumns = `tenant, id, network, revision, created_at`

// CreateVM stores a new VM, setting Revision and CreatedAt.
func (s *Store) CreateVM(ctx context.Context, vm store.VM) (store.VM, error) {
	network, err := encodeNetwork(vm.Network)
	if err != nil {
		return store.VM{}, fmt.Errorf("%s: create vm: encode network: %w", s.d.Name(), err)
	}
	err = s.write(ctx, "create vm", func(tx *wtx) error {
		vm.CreatedAt = s.timestamp()
		var err error
		vm.Revision, err = tx.insert(ctx, change{vm.Tenant, store.KindVM, vm.ID, store.OpCreate, vm.CreatedAt}, row{
			table:   "vms",
			columns: []string{"tenant", "id", "network", "created_at"},
			values:  []any{vm.Tenant, vm.ID, network, s.d.TimeArg(vm.CreatedAt)},
		})
		return err
	})
	if err != nil {
		return store.VM{}, err
	}
	return vm, nil
}

// GetVM reads one of the tenant's VMs.
func (s *Store) GetVM(ctx context.Context, tenant, id string) (store.VM, error) {
	vm, err := scanVM(s.reads.vm.QueryRowContext(ctx, tenant, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.VM{}, fmt.Errorf("%s: get vm %q: %w", s.d.Name(), id, store.ErrNotFound)
	}
	if err != nil {
		return store.VM{}, s.wrap("get vm", err)
	}
	return vm, nil
}

// ListVMs lists the tenant's VMs, oldest first.
func (s *Store) ListVMs(ctx context.Context, tenant string) ([]store.VM, error) {
	// A VM's revision is the revision of its creation, so it orders VMs by age exactly.
	return list(ctx, s, "list vms", `SELECT `+vmColumns+` FROM vms WHERE tenant = $1 ORDER BY revision`, scanVM, tenant)
}

// AllVMs lists every tenant's VMs, oldest first: for the gateway only.
func (s *Store) AllVMs(ctx context.Context) ([]store.VM, error) {
	return list(ctx, s, "all vms", `SELECT `+vmColumns+` FROM vms ORDER BY revision`, scanVM)
}

// DeleteVM removes the VM, its policy, its sessions and their policies in one transaction,
// logging one change for each object removed: the session policies, the sessions, the VM's
// policy, and last the VM, so the VM's deletion has the transaction's highest revision.
func (s *Store) DeleteVM(ctx context.Context, tenant, id string) error {
	return s.write(ctx, "delete vm", func(tx *wtx) error {
		ok, err := tx.exists(ctx, `SELECT EXISTS (SELECT 1 FROM vms WHERE tenant = $1 AND id = $2)`, tenant, id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("vm %q: %w", id, store.ErrNotFound)
		}
		return tx.deleteVMParts(ctx, tenant, id, true)
	})
}

// RetireVM removes the VM's sessions and policies as DeleteVM does, and marks its network
// for deletion by its node, in one transaction.
func (s *Store) RetireVM(ctx context.Context, tenant, id string) (store.VM, error) {
	var vm store.VM
	err := s.write(ctx, "retire vm", func(tx *wtx) error {
		if err := tx.deleteVMParts(ctx, tenant, id, false); err != nil {
			return err
		}
		var err error
		vm, err = tx.updateNetwork(ctx, tenant, id, func(n store.Network) (store.Network, error) {
			n.State = store.NetworkDeleting
			return n, nil
		})
		return err
	})
	return vm, err
}

// UpdateVMNetwork replaces the VM's network with update's, in one transaction.
func (s *Store) UpdateVMNetwork(ctx context.Context, tenant, id string, update func(store.Network) (store.Network, error)) (store.VM, error) {
	var vm store.VM
	err := s.write(ctx, "update vm network", func(tx *wtx) error {
		var err error
		vm, err = tx.updateNetwork(ctx, tenant, id, update)
		return err
	})
	return vm, err
}

// updateNetwork reads the VM in the transaction (which holds the write lock, so that nobody
// changes it in between), writes what update makes of its network, and logs the change.
func (w *wtx) updateNetwork(ctx context.Context, tenant, id string, update func(store.Network) (store.Network, error)) (store.VM, error) {
	vm, err := scanVM(w.QueryRowContext(ctx, `SELECT `+vmColumns+` FROM vms WHERE tenant = $1 AND id = $2`, tenant, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.VM{}, fmt.Errorf("vm %q: %w", id, store.ErrNotFound)
	} else if err != nil {
		return store.VM{}, err
	}
	n, err := update(vm.Network)
	if err != nil {
		return store.VM{}, err
	}
	doc, err := encodeNetwork(n)
	if err != nil {
		return store.VM{}, fmt.Errorf("encode network: %w", err)
	}
	if _, err := w.ExecContext(ctx, `UPDATE vms SET network = $3 WHERE tenant = $1 AND id = $2`, tenant, id, doc); err != nil {
		return store.VM{}, err
	}
	if _, err := w.log(ctx, change{tenant, store.KindVM, id, store.OpReplace, w.s.timestamp()}); err != nil {
		return store.VM{}, err
	}
	vm.Network = n
	return vm, nil
}

// network reads a VM's network in the transaction; ErrNotFound if the tenant has no such VM.
func (w *wtx) network(ctx context.Context, tenant, id string) (store.Network, error) {
	var doc []byte
	err := w.QueryRowContext(ctx, `SELECT network FROM vms WHERE tenant = $1 AND id = $2`, tenant, id).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Network{}, fmt.Errorf("vm %q: %w", id, store.ErrNotFound)
	} else if err != nil {
		return store.Network{}, err
	}
	return decodeNetwork(doc)
}

// deleteVMParts deletes what hangs off a VM, and with withVM the VM itself, logging one change
// for each object removed: the session policies, the sessions, the VM's policy, and last the
// VM, so that the VM's deletion has the transaction's highest revision.
func (w *wtx) deleteVMParts(ctx context.Context, tenant, id string, withVM bool) error {
	now := w.s.timestamp()
	// Grants first: the session grants are found through the sessions.
	if err := w.deleteGrantsOf(ctx, store.KindSessionGrant, `DELETE FROM grants WHERE tenant = $1 AND scope = 'session'
			AND object_id IN (SELECT id FROM sessions WHERE tenant = $1 AND vm_id = $2) RETURNING object_id`, tenant, id, now); err != nil {
		return err
	}
	if err := w.deleteGrantsOf(ctx, store.KindVMGrant, `DELETE FROM grants WHERE tenant = $1 AND scope = 'vm' AND object_id = $2
			RETURNING object_id`, tenant, id, now); err != nil {
		return err
	}
	steps := []struct {
		kind  string
		query string
	}{
		{store.KindSessionPolicy, `DELETE FROM policies WHERE tenant = $1 AND scope = 'session'
				AND id IN (SELECT id FROM sessions WHERE tenant = $1 AND vm_id = $2) RETURNING id`},
		// The foreign key would cascade this delete; doing it here lists the sessions for the log.
		{store.KindSession, `DELETE FROM sessions WHERE tenant = $1 AND vm_id = $2 RETURNING id`},
		{store.KindVMPolicy, `DELETE FROM policies WHERE tenant = $1 AND scope = 'vm' AND id = $2 RETURNING id`},
	}
	if withVM {
		steps = append(steps, struct{ kind, query string }{store.KindVM, `DELETE FROM vms WHERE tenant = $1 AND id = $2 RETURNING id`})
	}
	for _, step := range steps {
		deleted, err := w.ids(ctx, step.query, tenant, id)
		if err != nil {
			return err
		}
		slices.Sort(deleted) // RETURNING has no defined order; keep the log deterministic
		if err := w.logDeletes(ctx, tenant, step.kind, deleted, now); err != nil {
			return err
		}
	}
	return nil
}

func scanVM(r scanner) (store.VM, error) {
	var vm store.VM
	var network []byte
	var created timeValue
	if err := r.Scan(&vm.Tenant, &vm.ID, &network, &vm.Revision, &created); err != nil {
		return store.VM{}, err
	}
	n, err := decodeNetwork(network)
	if err != nil {
		return store.VM{}, fmt.Errorf("vm %q: %w", vm.ID, err)
	}
	vm.Network, vm.CreatedAt = n, created.t
	return vm, nil
}
