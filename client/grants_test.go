package client

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// TestGrantPaths: each call goes to its path, IDs escaped into one segment, the body as the
// API takes it; a bad scope or ID is refused before anything is sent.
func TestGrantPaths(t *testing.T) {
	f := newFakeAPI(t, answerJSON(200, `{"id": "gr_x", "scope": "vm", "scope_id": "a/b", "grants": []}`))
	c := mustNew(t, f.URL, "k")
	ctx := context.Background()
	if _, err := c.CreateGrant(ctx, GrantVM, "a/b", GrantRequest{TCP: []string{"github.com:22"}, TTLSeconds: 60}); err != nil {
		t.Fatal(err)
	}
	r := f.last(t)
	if r.method != http.MethodPost || r.rawPath != "/v1/egress/vm/a%2Fb/grants" || r.body != `{"tcp":["github.com:22"],"ttl_seconds":60}` {
		t.Errorf("create: %s %s %s", r.method, r.rawPath, r.body)
	}
	if _, err := c.ListGrants(ctx, GrantSession, "ses 1"); err != nil {
		t.Fatal(err)
	}
	if r := f.last(t); r.method != http.MethodGet || r.rawPath != "/v1/egress/session/ses%201/grants" {
		t.Errorf("list: %s %s", r.method, r.rawPath)
	}
	if err := c.RevokeGrant(ctx, GrantSession, "s", "gr_x"); err != nil {
		t.Fatal(err)
	}
	if r := f.last(t); r.method != http.MethodDelete || r.rawPath != "/v1/egress/session/s/grants/gr_x" {
		t.Errorf("revoke: %s %s", r.method, r.rawPath)
	}
	n := f.count()
	for name, call := range map[string]func() error{
		"bad scope":       func() error { _, err := c.ListGrants(ctx, "tenant", "s"); return err },
		"empty id":        func() error { _, err := c.ListGrants(ctx, GrantVM, ""); return err },
		"dot-dot id":      func() error { _, err := c.CreateGrant(ctx, GrantVM, "..", GrantRequest{}); return err },
		"empty grant id":  func() error { return c.RevokeGrant(ctx, GrantVM, "v", "") },
		"dot-dot grant":   func() error { return c.RevokeGrant(ctx, GrantVM, "v", "..") },
		"empty object id": func() error { return c.RevokeGrant(ctx, GrantVM, "", "gr_x") },
	} {
		if err := call(); err == nil || !strings.HasPrefix(err.Error(), "client: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if f.count() != n {
		t.Errorf("a refused call reached the server")
	}
}
