package client

import (
	"context"
	"net/http"
)

// CreateAPIKey creates an API key for a tenant (POST /v1/api-keys; admin keys only). The
// answer's Key is the secret, shown this once: egressd stores only its hash. An admin key
// (req.Admin) can manage keys of every tenant; give one only to operators.
func (c *Client) CreateAPIKey(ctx context.Context, req CreateAPIKeyRequest) (*APIKey, error) {
	var k APIKey
	if err := c.do(ctx, http.MethodPost, "/v1/api-keys", nil, req, &k); err != nil {
		return nil, err
	}
	return &k, nil
}

// ListAPIKeys returns every API key, without secrets (GET /v1/api-keys; admin keys only).
func (c *Client) ListAPIKeys(ctx context.Context) ([]APIKey, error) {
	var list APIKeyList
	if err := c.do(ctx, http.MethodGet, "/v1/api-keys", nil, nil, &list); err != nil {
		return nil, err
	}
	return list.Keys, nil
}

// DeleteAPIKey revokes an API key by its ID, not its secret (DELETE /v1/api-keys/{id}; admin
// keys only). Requests made with it fail with a 401 from then on.
func (c *Client) DeleteAPIKey(ctx context.Context, id string) error {
	path, err := pathFor("API key", "/v1/api-keys/", id)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, path, nil, nil, nil)
}
