package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/egressd/egressd/internal/store"
)

const keyColumns = `id, tenant, admin, hash, created_at`

// CreateAPIKey stores k. A zero CreatedAt is set to the current time.
func (s *Store) CreateAPIKey(ctx context.Context, k store.APIKey) error {
	return s.write(ctx, "create api key", func(tx *sql.Tx) error {
		now := s.timestamp()
		if k.CreatedAt.IsZero() {
			k.CreatedAt = now
		}
		if _, err := logChange(ctx, tx, k.Tenant, store.KindAPIKey, k.ID, store.OpCreate, now); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO api_keys (`+keyColumns+`) VALUES (?, ?, ?, ?, ?)`,
			k.ID, k.Tenant, k.Admin, k.Hash, k.CreatedAt.UnixNano())
		return err
	})
}

// APIKeyByHash finds the key whose secret hashes to hash.
func (s *Store) APIKeyByHash(ctx context.Context, hash []byte) (store.APIKey, error) {
	row := s.reads.keyByHash.QueryRowContext(ctx, hash)
	k, err := scanKey(row)
	if errors.Is(err, sql.ErrNoRows) {
		return store.APIKey{}, fmt.Errorf("sqlite: api key by hash: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.APIKey{}, wrap("api key by hash", err)
	}
	return k, nil
}

// ListAPIKeys lists every tenant's keys, oldest first.
func (s *Store) ListAPIKeys(ctx context.Context) ([]store.APIKey, error) {
	// rowid breaks ties between keys created in the same nanosecond, in insertion order.
	rows, err := s.reader.QueryContext(ctx, `SELECT `+keyColumns+` FROM api_keys ORDER BY created_at, rowid`)
	if err != nil {
		return nil, wrap("list api keys", err)
	}
	defer rows.Close()
	keys := []store.APIKey{}
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, wrap("list api keys", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("list api keys", err)
	}
	return keys, nil
}

// DeleteAPIKey removes a key by ID.
func (s *Store) DeleteAPIKey(ctx context.Context, id string) error {
	return s.write(ctx, "delete api key", func(tx *sql.Tx) error {
		var tenant string
		err := tx.QueryRowContext(ctx, `DELETE FROM api_keys WHERE id = ? RETURNING tenant`, id).Scan(&tenant)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("api key %q: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		_, err = logChange(ctx, tx, tenant, store.KindAPIKey, id, store.OpDelete, s.timestamp())
		return err
	})
}

func scanKey(row scanner) (store.APIKey, error) {
	var k store.APIKey
	var created int64
	if err := row.Scan(&k.ID, &k.Tenant, &k.Admin, &k.Hash, &created); err != nil {
		return store.APIKey{}, err
	}
	k.CreatedAt = fromNanos(created)
	return k, nil
}
