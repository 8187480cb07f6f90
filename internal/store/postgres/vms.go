package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/egressd/egressd/internal/store"
)

const vmColumns = `tenant, id, network, revision, created_at`

// CreateVM stores a new VM, setting Revision and CreatedAt.
func (s *Store) CreateVM(ctx context.Context, vm store.VM) (store.VM, error) {
	network, err := json.Marshal(vm.Network)
	if err != nil {
		return store.VM{}, fmt.Errorf("postgres: create vm: encode network: %w", err)
	}
	err = s.write(ctx, "create vm", func(tx *wtx) error {
		vm.CreatedAt = s.timestamp()
		var err error
		vm.Revision, err = tx.logged(ctx, change{vm.Tenant, store.KindVM, vm.ID, store.OpCreate, vm.CreatedAt},
			`INSERT INTO vms (`+vmColumns+`) SELECT $1, $3, $6, revision, $5 FROM c`, string(network))
		return err
	})
	if err != nil {
		return store.VM{}, err
	}
	return vm, nil
}

// GetVM reads one of the tenant's VMs.
func (s *Store) GetVM(ctx context.Context, tenant, id string) (store.VM, error) {
	row := s.pool.QueryRow(ctx, `SELECT `+vmColumns+` FROM vms WHERE tenant = $1 AND id = $2`, tenant, id)
	vm, err := scanVM(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.VM{}, fmt.Errorf("postgres: get vm %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.VM{}, wrap("get vm", err)
	}
	return vm, nil
}

// ListVMs lists the tenant's VMs, oldest first.
func (s *Store) ListVMs(ctx context.Context, tenant string) ([]store.VM, error) {
	// A VM's revision is the revision of its creation, so it orders VMs by age exactly.
	return s.queryVMs(ctx, "list vms", `SELECT `+vmColumns+` FROM vms WHERE tenant = $1 ORDER BY revision`, tenant)
}

// AllVMs lists every tenant's VMs, oldest first: for the gateway only.
func (s *Store) AllVMs(ctx context.Context) ([]store.VM, error) {
	return s.queryVMs(ctx, "all vms", `SELECT `+vmColumns+` FROM vms ORDER BY revision`)
}

func (s *Store) queryVMs(ctx context.Context, op, query string, args ...any) ([]store.VM, error) {
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	vms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.VM, error) { return scanVM(r) })
	if err != nil {
		return nil, wrap(op, err)
	}
	return nonNil(vms), nil
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
		now := s.timestamp()
		steps := []struct {
			kind  string
			query string
		}{
			{store.KindSessionPolicy, `DELETE FROM policies WHERE tenant = $1 AND scope = 'session'
				AND id IN (SELECT id FROM sessions WHERE tenant = $1 AND vm_id = $2) RETURNING id`},
			// The foreign key would cascade this delete; doing it here lists the sessions for the log.
			{store.KindSession, `DELETE FROM sessions WHERE tenant = $1 AND vm_id = $2 RETURNING id`},
			{store.KindVMPolicy, `DELETE FROM policies WHERE tenant = $1 AND scope = 'vm' AND id = $2 RETURNING id`},
			{store.KindVM, `DELETE FROM vms WHERE tenant = $1 AND id = $2 RETURNING id`},
		}
		for _, step := range steps {
			deleted, err := tx.ids(ctx, step.query, tenant, id)
			if err != nil {
				return err
			}
			slices.Sort(deleted) // RETURNING has no defined order; keep the log deterministic
			if err := tx.logDeletes(ctx, tenant, step.kind, deleted, now); err != nil {
				return err
			}
		}
		return nil
	})
}

func scanVM(row scanner) (store.VM, error) {
	var vm store.VM
	var network []byte
	var created time.Time
	if err := row.Scan(&vm.Tenant, &vm.ID, &network, &vm.Revision, &created); err != nil {
		return store.VM{}, err
	}
	if err := json.Unmarshal(network, &vm.Network); err != nil {
		return store.VM{}, fmt.Errorf("vm %q: decode network: %w", vm.ID, err)
	}
	vm.CreatedAt = created.UTC()
	return vm, nil
}
