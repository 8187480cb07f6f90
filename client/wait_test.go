package client

import (
	"context"
	"reflect"
	"testing"

	"github.com/egressd/egressd/policy"
)

// TestWithWaitFleet: with the option, every write that the gateways enforce asks for
// wait=fleet and nothing else does; without it, no request carries a query it did not have.
func TestWithWaitFleet(t *testing.T) {
	f := newFakeAPI(t, answerJSON(200, `{"enforced_by": ["gw-a", "gw-b"], "lagging": ["gw-c"]}`))
	ctx := context.Background()
	calls := []struct {
		name  string
		write bool
		call  func(c *Client) error
	}{
		{"SetSessionPolicy", true, func(c *Client) error { _, err := c.SetSessionPolicy(ctx, "s1", policy.Policy{}); return err }},
		{"DeleteSessionPolicy", true, func(c *Client) error { return c.DeleteSessionPolicy(ctx, "s1") }},
		{"SetVMPolicy", true, func(c *Client) error { _, err := c.SetVMPolicy(ctx, "v1", policy.Policy{}); return err }},
		{"DeleteVMPolicy", true, func(c *Client) error { return c.DeleteVMPolicy(ctx, "v1") }},
		{"CreateVM", true, func(c *Client) error { _, err := c.CreateVM(ctx, CreateVMRequest{}); return err }},
		{"DeleteVM", true, func(c *Client) error { return c.DeleteVM(ctx, "v1") }},
		{"CreateSession", true, func(c *Client) error { _, err := c.CreateSession(ctx, CreateSessionRequest{VMID: "v1"}); return err }},
		{"DeleteSession", true, func(c *Client) error { return c.DeleteSession(ctx, "s1") }},
		{"GetVMPolicy", false, func(c *Client) error { _, err := c.GetVMPolicy(ctx, "v1"); return err }},
		{"GetVM", false, func(c *Client) error { _, err := c.GetVM(ctx, "v1"); return err }},
		{"Check", false, func(c *Client) error { _, err := c.Check(ctx, "s1", CheckRequest{URL: "https://a.test/"}); return err }},
		{"CreateAPIKey", false, func(c *Client) error { _, err := c.CreateAPIKey(ctx, CreateAPIKeyRequest{Tenant: "t"}); return err }},
	}
	for _, opt := range []bool{false, true} {
		var opts []Option
		if opt {
			opts = append(opts, WithWaitFleet())
		}
		c := mustNew(t, f.URL, "k", opts...)
		for _, tc := range calls {
			if err := tc.call(c); err != nil {
				t.Errorf("%s: %v", tc.name, err)
				continue
			}
			want := ""
			if opt && tc.write {
				want = "wait=fleet"
			}
			if got := f.last(t).query; got != want {
				t.Errorf("%s (WithWaitFleet %v) sent the query %q, want %q", tc.name, opt, got, want)
			}
		}
	}

	// The answers carry who enforces the write.
	c := mustNew(t, f.URL, "k", WithWaitFleet())
	want := &Enforcement{EnforcedBy: []string{"gw-a", "gw-b"}, Lagging: []string{"gw-c"}}
	p, err := c.SetVMPolicy(ctx, "v1", policy.Policy{})
	if err != nil || !reflect.DeepEqual(p.Enforcement, want) {
		t.Errorf("SetVMPolicy: Enforcement %+v, %v; want %+v", p.Enforcement, err, want)
	}
	s, err := c.CreateSession(ctx, CreateSessionRequest{VMID: "v1"})
	if err != nil || !reflect.DeepEqual(s.Enforcement, want) {
		t.Errorf("CreateSession: Enforcement %+v, %v; want %+v", s.Enforcement, err, want)
	}
	vm, err := c.CreateVM(ctx, CreateVMRequest{})
	if err != nil || !reflect.DeepEqual(vm.Enforcement, want) {
		t.Errorf("CreateVM: Enforcement %+v, %v; want %+v", vm.Enforcement, err, want)
	}
}
