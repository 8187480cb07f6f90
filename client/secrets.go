package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// SecretValue is a secret's value as a request carries it. It encodes in JSON as the plain
// string, but prints as "[redacted]" with every fmt verb, so that logging a request by
// accident shows no secret.
type SecretValue string

// String hides the value.
func (SecretValue) String() string { return "[redacted]" }

// GoString hides the value from %#v too.
func (SecretValue) GoString() string { return `client.SecretValue("[redacted]")` }

// CreateSecretRequest is the body of POST /v1/secrets (DESIGN §2.7). Name is 1 to 63 letters,
// digits, '_' or '-', starting with a letter or digit; Value is what the gateway puts on
// requests in place of the placeholder (at most 16 KiB, no control characters, no white space
// at either end, since it goes into HTTP header values); Domains are the hosts it may go to,
// as in allowed_domains ("api.example.com", "*.example.com"), at least one.
type CreateSecretRequest struct {
	Name    string      `json:"name"`
	Value   SecretValue `json:"value"`
	Domains []string    `json:"domains"`
}

// UpdateSecretRequest is the body of PUT /v1/secrets/{name}: a new Value (a rotation), new
// Domains (replacing the old ones), or both. The placeholder stays.
type UpdateSecretRequest struct {
	Value   *SecretValue `json:"value,omitempty"`
	Domains []string     `json:"domains,omitempty"`
}

// Secret is a secret as the API answers it: never with its value. Placeholder is what the
// sandbox uses where it would use the value (an API key in an environment variable); the
// gateway replaces it by the value in requests to Domains.
type Secret struct {
	Name        string    `json:"name"`
	Domains     []string  `json:"domains"`
	Placeholder string    `json:"placeholder"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	// Set only in the answer to a write made with wait=fleet.
	*Enforcement
}

// SecretList is the body of GET /v1/secrets.
type SecretList struct {
	Secrets []Secret `json:"secrets"`
}

// CreateSecret stores a secret of the key's tenant (POST /v1/secrets) and returns it with
// its placeholder. A name the tenant uses already is a Conflict error.
func (c *Client) CreateSecret(ctx context.Context, req CreateSecretRequest) (*Secret, error) {
	var s Secret
	if err := c.do(ctx, http.MethodPost, "/v1/secrets", c.writeQuery(), req, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// ListSecrets lists the tenant's secrets by name, without values (GET /v1/secrets).
func (c *Client) ListSecrets(ctx context.Context) ([]Secret, error) {
	var list SecretList
	if err := c.do(ctx, http.MethodGet, "/v1/secrets", nil, nil, &list); err != nil {
		return nil, err
	}
	return list.Secrets, nil
}

// GetSecret reads one secret, without its value (GET /v1/secrets/{name}).
func (c *Client) GetSecret(ctx context.Context, name string) (*Secret, error) {
	path, err := pathFor("secret", "/v1/secrets/", name)
	if err != nil {
		return nil, err
	}
	var s Secret
	if err := c.do(ctx, http.MethodGet, path, nil, nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// UpdateSecret changes a secret's value, its domains or both (PUT /v1/secrets/{name}); the
// placeholder stays, so sandboxes need no change. The next intercepted request gets the new
// value.
func (c *Client) UpdateSecret(ctx context.Context, name string, req UpdateSecretRequest) (*Secret, error) {
	path, err := pathFor("secret", "/v1/secrets/", name)
	if err != nil {
		return nil, err
	}
	var s Secret
	if err := c.do(ctx, http.MethodPut, path, c.writeQuery(), req, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// RotateSecret gives a secret a new value and keeps its placeholder and domains.
func (c *Client) RotateSecret(ctx context.Context, name string, value SecretValue) (*Secret, error) {
	return c.UpdateSecret(ctx, name, UpdateSecretRequest{Value: &value})
}

// DeleteSecret removes a secret (DELETE /v1/secrets/{name}): its placeholder is replaced no
// more, and a request that still carries it is refused.
func (c *Client) DeleteSecret(ctx context.Context, name string) error {
	path, err := pathFor("secret", "/v1/secrets/", name)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, path, c.writeQuery(), nil, nil)
}

// maxCAPEM bounds the answer of GET /v1/ca.pem: a CA certificate and its issuers.
const maxCAPEM = 1 << 20

// CAPEM returns the interception CA's certificate as PEM (GET /v1/ca.pem; no key needed): what
// a sandbox adds to the roots it trusts, so that the certificates the gateway presents for
// intercepted domains verify.
func (c *Client) CAPEM(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/ca.pem", nil)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	req.Header.Set("Accept", "application/x-pem-file")
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer drainAndClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, readError(resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxCAPEM+1))
	if err != nil {
		return nil, fmt.Errorf("client: reading GET /v1/ca.pem: %w", err)
	}
	if len(data) > maxCAPEM {
		return nil, fmt.Errorf("client: GET /v1/ca.pem answered over %d bytes; that is no CA certificate", maxCAPEM)
	}
	return data, nil
}
