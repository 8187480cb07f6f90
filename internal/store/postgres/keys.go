package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/egressd/egressd/internal/store"
)

const keyColumns = `id, tenant, admin, hash, created_at`

// CreateAPIKey stores k. A zero CreatedAt is set to the current time; any other is kept to
// the microsecond.
func (s *Store) CreateAPIKey(ctx context.Context, k store.APIKey) error {
	return s.write(ctx, "create api key", func(tx *wtx) error {
		now := s.timestamp()
		if k.CreatedAt.IsZero() {
			k.CreatedAt = now
		}
		_, err := tx.logged(ctx, change{k.Tenant, store.KindAPIKey, k.ID, store.OpCreate, now},
			`INSERT INTO api_keys (`+keyColumns+`, revision) SELECT $3, $1, $6, $7, $8, revision FROM c`,
			k.Admin, k.Hash, micros(k.CreatedAt))
		return err
	})
}

// APIKeyByHash finds the key whose secret hashes to hash.
func (s *Store) APIKeyByHash(ctx context.Context, hash []byte) (store.APIKey, error) {
	row := s.pool.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE hash = $1`, hash)
	k, err := scanKey(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.APIKey{}, fmt.Errorf("postgres: api key by hash: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.APIKey{}, wrap("api key by hash", err)
	}
	return k, nil
}

// ListAPIKeys lists every tenant's keys, oldest first.
func (s *Store) ListAPIKeys(ctx context.Context) ([]store.APIKey, error) {
	// The revision breaks ties between keys created in the same microsecond, in creation order.
	rows, err := s.pool.Query(ctx, `SELECT `+keyColumns+` FROM api_keys ORDER BY created_at, revision`)
	if err != nil {
		return nil, wrap("list api keys", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.APIKey, error) { return scanKey(r) })
	if err != nil {
		return nil, wrap("list api keys", err)
	}
	return nonNil(keys), nil
}

// DeleteAPIKey removes a key by ID.
func (s *Store) DeleteAPIKey(ctx context.Context, id string) error {
	return s.write(ctx, "delete api key", func(tx *wtx) error {
		var tenant string
		err := tx.QueryRow(ctx, `DELETE FROM api_keys WHERE id = $1 RETURNING tenant`, id).Scan(&tenant)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("api key %q: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		_, err = tx.logChange(ctx, tenant, store.KindAPIKey, id, store.OpDelete, s.timestamp())
		return err
	})
}

func scanKey(row scanner) (store.APIKey, error) {
	var k store.APIKey
	var created time.Time
	if err := row.Scan(&k.ID, &k.Tenant, &k.Admin, &k.Hash, &created); err != nil {
		return store.APIKey{}, err
	}
	k.CreatedAt = created.UTC()
	return k, nil
}

// nonNil turns a nil list into an empty one: the store's lists are never nil, so that they
// encode as [] and compare the same whatever the implementation.
func nonNil[T any](list []T) []T {
	if list == nil {
		return []T{}
	}
	return list
}
