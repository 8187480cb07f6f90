package api_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/policy"
)

// TestGrantOnLayerWithoutPolicy: a grant on a layer that has no policy neither tightens the
// sandbox (the layer still restricts nothing else) nor loosens the other layer's policy.
func TestGrantOnLayerWithoutPolicy(t *testing.T) {
	in := egressdtest.Start(t)
	ctx := context.Background()
	gc := goClient(t, in, in.AdminKey)
	c := newClient(t, in, in.AdminKey)
	if _, err := gc.CreateVM(ctx, client.CreateVMRequest{VMID: "v"}); err != nil {
		t.Fatal(err)
	}
	s, err := gc.CreateSession(ctx, client.CreateSessionRequest{VMID: "v"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gc.SetSessionPolicy(ctx, s.SessionID, policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"ok.test"}}); err != nil {
		t.Fatal(err)
	}
	g := c.do("POST", "/v1/egress/vm/v/grants", map[string]any{"tcp": []string{"x.test:22"}, "domains": []string{"y.test"}, "ttl_seconds": 600}).must(t, http.StatusOK)
	if len(strs(g["warnings"])) == 0 {
		t.Errorf("no warning for a grant on a layer without a policy: %v", g)
	}
	for _, tc := range []struct {
		host string
		port int
		want string
	}{
		{"ok.test", 443, "allow"}, // the VM layer, policy-less, still restricts nothing
		{"x.test", 22, "deny"},    // the VM grant does not loosen the session's policy
		{"y.test", 443, "deny"},
	} {
		d := c.do("POST", "/v1/egress/session/"+s.SessionID+"/check", map[string]any{"host": tc.host, "port": tc.port}).must(t, http.StatusOK)
		if d["decision"] != tc.want {
			t.Errorf("check %s:%d = %v, want %s", tc.host, tc.port, d, tc.want)
		}
	}
}
