package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/egressd/egressd/internal/store"
)

const vmColumns = `tenant, id, network, revision, created_at`

// CreateVM stores a new VM, setting Revision and CreatedAt.
func (s *Store) CreateVM(ctx context.Context, vm store.VM) (store.VM, error) {
	network, err := json.Marshal(vm.Network)
	if err != nil {
		return store.VM{}, fmt.Errorf("sqlite: create vm: encode network: %w", err)
	}
	err = s.write(ctx, "create vm", func(tx *sql.Tx) error {
		vm.CreatedAt = s.timestamp()
		rev, err := logChange(ctx, tx, vm.Tenant, store.KindVM, vm.ID, store.OpCreate, vm.CreatedAt)
		if err != nil {
			return err
		}
		vm.Revision = rev
		_, err = tx.ExecContext(ctx, `INSERT INTO vms (`+vmColumns+`) VALUES (?, ?, ?, ?, ?)`,
			vm.Tenant, vm.ID, string(network), vm.Revision, vm.CreatedAt.UnixNano())
		return err
	})
	if err != nil {
		return store.VM{}, err
	}
	return vm, nil
}

// GetVM reads one of the tenant's VMs.
func (s *Store) GetVM(ctx context.Context, tenant, id string) (store.VM, error) {
	row := s.reads.vm.QueryRowContext(ctx, tenant, id)
	vm, err := scanVM(row)
	if errors.Is(err, sql.ErrNoRows) {
		return store.VM{}, fmt.Errorf("sqlite: get vm %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.VM{}, wrap("get vm", err)
	}
	return vm, nil
}

// ListVMs lists the tenant's VMs, oldest first.
func (s *Store) ListVMs(ctx context.Context, tenant string) ([]store.VM, error) {
	// A VM's revision is the revision of its creation, so it orders VMs by age exactly.
	return s.queryVMs(ctx, "list vms", `SELECT `+vmColumns+` FROM vms WHERE tenant = ? ORDER BY revision`, tenant)
}

// AllVMs lists every tenant's VMs, oldest first: for the gateway only.
func (s *Store) AllVMs(ctx context.Context) ([]store.VM, error) {
	return s.queryVMs(ctx, "all vms", `SELECT `+vmColumns+` FROM vms ORDER BY revision`)
}

func (s *Store) queryVMs(ctx context.Context, op, query string, args ...any) ([]store.VM, error) {
	rows, err := s.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	vms := []store.VM{}
	for rows.Next() {
		vm, err := scanVM(rows)
		if err != nil {
			return nil, wrap(op, err)
		}
		vms = append(vms, vm)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return vms, nil
}

// DeleteVM removes the VM, its policy, its sessions and their policies in one transaction,
// logging one change for each object removed: the session policies, the sessions, the VM's
// policy, and last the VM, so the VM's deletion has the transaction's highest revision.
func (s *Store) DeleteVM(ctx context.Context, tenant, id string) error {
	return s.write(ctx, "delete vm", func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, `SELECT EXISTS (SELECT 1 FROM vms WHERE tenant = ? AND id = ?)`, tenant, id)
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
			args  []any
		}{
			{store.KindSessionPolicy, `DELETE FROM policies WHERE tenant = ? AND scope = 'session'
				AND id IN (SELECT id FROM sessions WHERE tenant = ? AND vm_id = ?) RETURNING id`, []any{tenant, tenant, id}},
			// The foreign key would cascade this delete; doing it here lists the sessions for the log.
			{store.KindSession, `DELETE FROM sessions WHERE tenant = ? AND vm_id = ? RETURNING id`, []any{tenant, id}},
			{store.KindVMPolicy, `DELETE FROM policies WHERE tenant = ? AND scope = 'vm' AND id = ? RETURNING id`, []any{tenant, id}},
			{store.KindVM, `DELETE FROM vms WHERE tenant = ? AND id = ? RETURNING id`, []any{tenant, id}},
		}
		for _, step := range steps {
			deleted, err := ids(ctx, tx, step.query, step.args...)
			if err != nil {
				return err
			}
			slices.Sort(deleted) // RETURNING has no defined order; keep the log deterministic
			if err := logDeletes(ctx, tx, tenant, step.kind, deleted, now); err != nil {
				return err
			}
		}
		return nil
	})
}

func scanVM(row scanner) (store.VM, error) {
	var vm store.VM
	var network string
	var created int64
	if err := row.Scan(&vm.Tenant, &vm.ID, &network, &vm.Revision, &created); err != nil {
		return store.VM{}, err
	}
	if err := json.Unmarshal([]byte(network), &vm.Network); err != nil {
		return store.VM{}, fmt.Errorf("vm %q: decode network: %w", vm.ID, err)
	}
	vm.CreatedAt = fromNanos(created)
	return vm, nil
}
