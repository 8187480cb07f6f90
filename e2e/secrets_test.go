package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
)

// TestSecretWritesOnATransparentNode: secret writes are answered at once by a node that runs
// the transparent gateway, whose firewall nothing about a secret changes (the node's enforced
// revision must follow its view's, not wait for the next firewall resync), with wait=fleet too.
func TestSecretWritesOnATransparentNode(t *testing.T) {
	l := newGWLab(t)
	ctx := context.Background()
	start := time.Now()
	s, err := l.api.CreateSecret(ctx, client.CreateSecretRequest{Name: "tok", Value: "v-1", Domains: []string{"api.example.test"}})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := l.api.RotateSecret(ctx, "tok", "v-2"); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	fleet, err := client.New(l.in.URL, l.in.AdminKey, client.WithHTTPClient(l.in.HTTPClient), client.WithWaitFleet())
	if err != nil {
		t.Fatal(err)
	}
	rot, err := fleet.RotateSecret(ctx, "tok", "v-3")
	if err != nil || rot.Enforcement == nil || len(rot.Lagging) != 0 || len(rot.EnforcedBy) != 1 {
		t.Fatalf("rotate with wait=fleet: %+v, %v", rot, err)
	}
	if err := l.api.DeleteSecret(ctx, "tok"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("four secret writes took %s: each waited for something that never came", took)
	}
	if s.Placeholder == "" {
		t.Error("no placeholder")
	}
}
