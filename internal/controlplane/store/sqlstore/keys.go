package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/egressd/egressd/internal/controlplane/store"
)

const keyColumns = `id, tenant, admin, hash, created_at`

// CreateAPIKey stores k. A zero CreatedAt is set to the current time; any other is kept to
// the resolution of the database.
func (s *Store) CreateAPIKey(ctx context.Context, k store.APIKey) error {
	return s.write(ctx, "create api key", func(tx *wtx) error {
		now := s.timestamp()
		if k.CreatedAt.IsZero() {
			k.CreatedAt = now
		}
		_, err := tx.insert(ctx, change{k.Tenant, store.KindAPIKey, k.ID, store.OpCreate, now}, row{
			table:   "api_keys",
			columns: []string{"id", "tenant", "admin", "hash", "created_at"},
			values:  []any{k.ID, k.Tenant, k.Admin, k.Hash, s.d.TimeArg(s.stamp(k.CreatedAt))},
		})
		return err
	})
}

// APIKeyByHash finds the key whose secret hashes to hash.
func (s *Store) APIKeyByHash(ctx context.Context, hash []byte) (store.APIKey, error) {
	k, err := scanKey(s.reads.keyByHash.QueryRowContext(ctx, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return store.APIKey{}, fmt.Errorf("%s: api key by hash: %w", s.d.Name(), store.ErrNotFound)
	}
	if err != nil {
		return store.APIKey{}, s.wrap("api key by hash", err)
	}
	return k, nil
}

// ListAPIKeys lists every tenant's keys, oldest first.
func (s *Store) ListAPIKeys(ctx context.Context) ([]store.APIKey, error) {
	// The revision breaks ties between keys created at the same instant, in creation order.
	return list(ctx, s, "list api keys", `SELECT `+keyColumns+` FROM api_keys ORDER BY created_at, revision`, scanKey)
}

// DeleteAPIKey removes a key by ID.
func (s *Store) DeleteAPIKey(ctx context.Context, id string) error {
	return s.write(ctx, "delete api key", func(tx *wtx) error {
		var tenant string
		err := tx.QueryRowContext(ctx, `DELETE FROM api_keys WHERE id = $1 RETURNING tenant`, id).Scan(&tenant)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("api key %q: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		_, err = tx.log(ctx, change{tenant, store.KindAPIKey, id, store.OpDelete, s.timestamp()})
		return err
	})
}

func scanKey(r scanner) (store.APIKey, error) {
	var k store.APIKey
	var created timeValue
	if err := r.Scan(&k.ID, &k.Tenant, &k.Admin, &k.Hash, &created); err != nil {
		return store.APIKey{}, err
	}
	k.CreatedAt = created.t
	return k, nil
}
