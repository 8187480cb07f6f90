package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/egressd/egressd/internal/controlplane/store"
)

const secretColumns = `tenant, name, domains, placeholder, sealed, revision, created_at, updated_at`

// CreateSecret stores a new secret of a tenant, setting Revision, CreatedAt and UpdatedAt.
func (s *Store) CreateSecret(ctx context.Context, se store.Secret) (store.Secret, error) {
	domains, err := encodeDomains(se.Domains)
	if err != nil {
		return store.Secret{}, fmt.Errorf("%s: create secret: %w", s.d.Name(), err)
	}
	err = s.write(ctx, "create secret", func(tx *wtx) error {
		se.CreatedAt = s.timestamp()
		se.UpdatedAt = se.CreatedAt
		var err error
		se.Revision, err = tx.insert(ctx, change{se.Tenant, store.KindSecret, se.Name, store.OpCreate, se.CreatedAt}, row{
			table:   "secrets",
			columns: []string{"tenant", "name", "domains", "placeholder", "sealed", "created_at", "updated_at"},
			values:  []any{se.Tenant, se.Name, domains, se.Placeholder, se.Sealed, s.d.TimeArg(se.CreatedAt), s.d.TimeArg(se.UpdatedAt)},
		})
		return err
	})
	if err != nil {
		return store.Secret{}, err
	}
	return se, nil
}

// GetSecret reads one of the tenant's secrets.
func (s *Store) GetSecret(ctx context.Context, tenant, name string) (store.Secret, error) {
	se, err := scanSecret(s.reader.QueryRowContext(ctx, `SELECT `+secretColumns+` FROM secrets WHERE tenant = $1 AND name = $2`, tenant, name))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Secret{}, fmt.Errorf("%s: get secret %q: %w", s.d.Name(), name, store.ErrNotFound)
	}
	if err != nil {
		return store.Secret{}, s.wrap("get secret", err)
	}
	return se, nil
}

// ListSecrets lists the tenant's secrets by name, in byte order (sorted here rather than by
// ORDER BY, whose order of text follows the database's collation).
func (s *Store) ListSecrets(ctx context.Context, tenant string) ([]store.Secret, error) {
	list, err := list(ctx, s, "list secrets", `SELECT `+secretColumns+` FROM secrets WHERE tenant = $1`, scanSecret, tenant)
	slices.SortFunc(list, compareSecrets)
	return list, err
}

// AllSecrets lists every tenant's secrets, by tenant and name: for the gateway only.
func (s *Store) AllSecrets(ctx context.Context) ([]store.Secret, error) {
	list, err := list(ctx, s, "all secrets", `SELECT `+secretColumns+` FROM secrets`, scanSecret)
	slices.SortFunc(list, compareSecrets)
	return list, err
}

func compareSecrets(a, b store.Secret) int {
	return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.Name, b.Name))
}

// UpdateSecret replaces a secret's domains and sealed value with update's, in one transaction
// that reads the secret under the write lock, so that nobody changes it in between.
func (s *Store) UpdateSecret(ctx context.Context, tenant, name string, update func(store.Secret) (store.Secret, error)) (store.Secret, error) {
	var out store.Secret
	err := s.write(ctx, "update secret", func(tx *wtx) error {
		old, err := scanSecret(tx.QueryRowContext(ctx, `SELECT `+secretColumns+` FROM secrets WHERE tenant = $1 AND name = $2`, tenant, name))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("secret %q: %w", name, store.ErrNotFound)
		} else if err != nil {
			return err
		}
		next, err := update(old)
		if err != nil {
			return err
		}
		// Only what may change is taken from update's answer.
		out = old
		out.Domains, out.Sealed = next.Domains, next.Sealed
		out.UpdatedAt = s.timestamp()
		domains, err := encodeDomains(out.Domains)
		if err != nil {
			return err
		}
		if out.Revision, err = tx.log(ctx, change{tenant, store.KindSecret, name, store.OpReplace, out.UpdatedAt}); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE secrets SET domains = $3, sealed = $4, revision = $5, updated_at = $6
			WHERE tenant = $1 AND name = $2`, tenant, name, domains, out.Sealed, out.Revision, s.d.TimeArg(out.UpdatedAt))
		return err
	})
	if err != nil {
		return store.Secret{}, err
	}
	return out, nil
}

// DeleteSecret removes one of the tenant's secrets and logs it.
func (s *Store) DeleteSecret(ctx context.Context, tenant, name string) error {
	return s.write(ctx, "delete secret", func(tx *wtx) error {
		n, err := tx.deleted(ctx, `DELETE FROM secrets WHERE tenant = $1 AND name = $2`, tenant, name)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("secret %q: %w", name, store.ErrNotFound)
		}
		_, err = tx.log(ctx, change{tenant, store.KindSecret, name, store.OpDelete, s.timestamp()})
		return err
	})
}

func encodeDomains(domains []string) (string, error) {
	if domains == nil {
		domains = []string{} // stored as [], read back as empty, never nil
	}
	doc, err := json.Marshal(domains)
	if err != nil {
		return "", fmt.Errorf("encode domains: %w", err)
	}
	return string(doc), nil
}

func scanSecret(r scanner) (store.Secret, error) {
	var se store.Secret
	var domains []byte
	var created, updated timeValue
	if err := r.Scan(&se.Tenant, &se.Name, &domains, &se.Placeholder, &se.Sealed, &se.Revision, &created, &updated); err != nil {
		return store.Secret{}, err
	}
	if err := json.Unmarshal(domains, &se.Domains); err != nil {
		return store.Secret{}, fmt.Errorf("secret %q: decode domains: %w", se.Name, err)
	}
	se.CreatedAt, se.UpdatedAt = created.t, updated.t
	return se, nil
}

// KeyCheck reads the secrets key's check value.
func (s *Store) KeyCheck(ctx context.Context) ([]byte, error) {
	var check []byte
	err := s.reader.QueryRowContext(ctx, `SELECT value FROM key_check WHERE id = 1`).Scan(&check)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%s: key check: %w", s.d.Name(), store.ErrNotFound)
	}
	if err != nil {
		return nil, s.wrap("key check", err)
	}
	return check, nil
}

// InitKeyCheck stores check unless one is stored, and returns the one stored. It runs under
// the write lock, so that of two nodes starting at once one writes and the other reads.
func (s *Store) InitKeyCheck(ctx context.Context, check []byte) ([]byte, error) {
	var stored []byte
	err := s.write(ctx, "init key check", func(tx *wtx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO key_check (id, value, created_at) VALUES (1, $1, $2)
			ON CONFLICT (id) DO NOTHING`, check, s.d.TimeArg(s.timestamp())); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT value FROM key_check WHERE id = 1`).Scan(&stored)
	})
	return stored, err
}

// GetCA reads the interception CA.
func (s *Store) GetCA(ctx context.Context) (store.CA, error) {
	ca, err := scanCA(s.reader.QueryRowContext(ctx, `SELECT cert, sealed_key, created_at FROM ca WHERE id = 1`))
	if errors.Is(err, sql.ErrNoRows) {
		return store.CA{}, fmt.Errorf("%s: get ca: %w", s.d.Name(), store.ErrNotFound)
	}
	if err != nil {
		return store.CA{}, s.wrap("get ca", err)
	}
	return ca, nil
}

// InitCA stores ca unless a CA is stored, and returns the one stored, under the write lock.
func (s *Store) InitCA(ctx context.Context, ca store.CA) (store.CA, error) {
	var stored store.CA
	err := s.write(ctx, "init ca", func(tx *wtx) error {
		at := ca.CreatedAt
		if at.IsZero() {
			at = s.now()
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO ca (id, cert, sealed_key, created_at) VALUES (1, $1, $2, $3)
			ON CONFLICT (id) DO NOTHING`, ca.CertDER, ca.SealedKey, s.d.TimeArg(s.stamp(at))); err != nil {
			return err
		}
		var err error
		stored, err = scanCA(tx.QueryRowContext(ctx, `SELECT cert, sealed_key, created_at FROM ca WHERE id = 1`))
		return err
	})
	return stored, err
}

func scanCA(r scanner) (store.CA, error) {
	var ca store.CA
	var created timeValue
	if err := r.Scan(&ca.CertDER, &ca.SealedKey, &created); err != nil {
		return store.CA{}, err
	}
	ca.CreatedAt = created.t
	return ca, nil
}
