package api_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/policy"
)

// TestGrantsAdversarial: a second tenant with the very same VM ID cannot reach the first
// tenant's grants through its own objects; malformed grants are refused; a grant never
// turns a web flag on, never beats denied_domains, and a session grant never loosens the
// VM layer.
func TestGrantsAdversarial(t *testing.T) {
	in := egressdtest.Start(t)
	ctx := context.Background()
	admin := goClient(t, in, in.AdminKey)
	keyA, err := admin.CreateAPIKey(ctx, client.CreateAPIKeyRequest{Tenant: "ta"})
	if err != nil {
		t.Fatal(err)
	}
	keyB, err := admin.CreateAPIKey(ctx, client.CreateAPIKeyRequest{Tenant: "tb"})
	if err != nil {
		t.Fatal(err)
	}
	a, b := newClient(t, in, keyA.Key), newClient(t, in, keyB.Key)
	sa := sandbox(t, goClient(t, in, keyA.Key), "v")
	sb := sandbox(t, goClient(t, in, keyB.Key), "v") // same VM ID in both tenants

	ga := a.do("POST", "/v1/egress/vm/v/grants", map[string]any{"tcp": []string{"a.test:22"}, "ttl_seconds": 600}).must(t, http.StatusOK)["id"].(string)
	gs := a.do("POST", "/v1/egress/session/"+sa.SessionID+"/grants", map[string]any{"tcp": []string{"a.test:22"}, "ttl_seconds": 600}).must(t, http.StatusOK)["id"].(string)

	// B's own VM "v" has none of A's grants, and B cannot revoke A's grant through it or its own session.
	if l := b.do("GET", "/v1/egress/vm/v/grants", nil).must(t, http.StatusOK)["grants"].([]any); len(l) != 0 {
		t.Errorf("tenant B sees grants on its VM v: %v", l)
	}
	for _, p := range []string{"/v1/egress/vm/v/grants/" + ga, "/v1/egress/vm/v/grants/" + gs,
		"/v1/egress/session/" + sb.SessionID + "/grants/" + gs, "/v1/egress/session/" + sb.SessionID + "/grants/" + ga,
		"/v1/egress/session/" + sa.SessionID + "/grants/" + gs} {
		b.do("DELETE", p, nil).mustError(t, http.StatusNotFound, client.CodeNotFound, "")
	}
	// A's session grant cannot be revoked through A's VM path either (scope is part of the key).
	a.do("DELETE", "/v1/egress/vm/v/grants/"+gs, nil).mustError(t, http.StatusNotFound, client.CodeNotFound, "")
	if l := a.do("GET", "/v1/egress/vm/v/grants", nil).must(t, http.StatusOK)["grants"].([]any); len(l) != 1 {
		t.Errorf("tenant A's VM grants after B's attempts: %v", l)
	}
	if l := a.do("GET", "/v1/egress/session/"+sa.SessionID+"/grants", nil).must(t, http.StatusOK)["grants"].([]any); len(l) != 1 {
		t.Errorf("tenant A's session grants after B's attempts: %v", l)
	}
	// B's session checks are unaffected by A's grant on the same names.
	if d := b.do("POST", "/v1/egress/session/"+sb.SessionID+"/check", map[string]any{"host": "a.test", "port": 22}).must(t, http.StatusOK); d["decision"] != "deny" {
		t.Errorf("tenant B allowed by tenant A's grant: %v", d)
	}
	// B cannot read A's suggestion.
	b.do("GET", "/v1/egress/session/"+sa.SessionID+"/suggestion", nil).mustError(t, http.StatusNotFound, client.CodeNotFound, "")

	// Malformed grants.
	base := "/v1/egress/session/" + sa.SessionID + "/grants"
	for _, body := range []any{
		`{"tcp": ["a.test:22"], "ttl_seconds": 1.5}`,
		`{"tcp": ["a.test:22"], "ttl_seconds": "60"}`,
		`{"tcp": ["a.test:22"], "ttl_seconds": 1e3}`,
		`{"tcp": ["a.test:22"], "ttl_seconds": 99999999999999999999}`,
		map[string]any{"domains": []string{"203.0.113.7"}, "ttl_seconds": 60},
		map[string]any{"domains": []string{"[::1]"}, "ttl_seconds": 60},
		map[string]any{"domains": []string{"169.254.169.254"}, "ttl_seconds": 60},
		map[string]any{"domains": []string{"*"}, "ttl_seconds": 60},
		map[string]any{"domains": []string{"*.com"}, "ttl_seconds": 60},
		map[string]any{"tcp": []string{"a.test:0"}, "ttl_seconds": 60},
		map[string]any{"tcp": []string{"a.test:65536"}, "ttl_seconds": 60},
		map[string]any{"tcp": []string{"a.test:-1"}, "ttl_seconds": 60},
		map[string]any{"tcp": []string{"a.test:22x"}, "ttl_seconds": 60},
		map[string]any{"tcp": []string{"[::1]:22"}, "ttl_seconds": 60},
		map[string]any{"tcp": []string{"*:22"}, "ttl_seconds": 60},
	} {
		if r := a.do("POST", base, body); r.status != http.StatusBadRequest {
			t.Errorf("grant %v: %d %s, want 400", body, r.status, r.raw)
		}
	}

	// A grant never turns a flag on nor beats denied_domains; a session grant never loosens the VM layer.
	ca := goClient(t, in, keyA.Key)
	if _, err := ca.SetVMPolicy(ctx, "v", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"ok.test"}, DeniedDomains: []string{"bad.test"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.SetSessionPolicy(ctx, sa.SessionID, policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"ok.test"}}); err != nil {
		t.Fatal(err)
	}
	a.do("POST", base, map[string]any{"domains": []string{"bad.test", "vmonly.test"}, "tcp": []string{"bad.test:22", "vmonly.test:22"}, "ttl_seconds": 600}).must(t, http.StatusOK)
	a.do("POST", "/v1/egress/vm/v/grants", map[string]any{"domains": []string{"bad.test", "http.test"}, "ttl_seconds": 600}).must(t, http.StatusOK)
	a.do("POST", base, map[string]any{"domains": []string{"http.test"}, "ttl_seconds": 600}).must(t, http.StatusOK)
	// CIDR grants are accepted as allowed_cidrs are (private ranges are the point of them), but
	// hard denials still apply: a grant of everything on both layers never reaches the metadata
	// address or loopback.
	for _, p := range []string{base, "/v1/egress/vm/v/grants"} {
		a.do("POST", p, map[string]any{"cidrs": []string{"0.0.0.0/0", "::/0", "169.254.169.254/32"}, "ttl_seconds": 600}).must(t, http.StatusOK)
	}
	check := func(host string, port int) string {
		d := a.do("POST", "/v1/egress/session/"+sa.SessionID+"/check", map[string]any{"host": host, "port": port}).must(t, http.StatusOK)
		return d["decision"].(string)
	}
	for _, tc := range []struct {
		host string
		port int
		want string
	}{
		{"bad.test", 443, "deny"},    // denied_domains on the VM wins over grants on both layers
		{"bad.test", 22, "deny"},     // and over a tcp grant
		{"vmonly.test", 443, "deny"}, // a session grant does not loosen the VM layer
		{"vmonly.test", 22, "deny"},
		{"http.test", 443, "allow"}, // granted on both layers
		{"http.test", 80, "deny"},   // allow_http is off: a grant never turns it on
		{"ok.test", 443, "allow"},
		{"169.254.169.254", 80, "deny"},
		{"127.0.0.1", 443, "deny"},
		{"::1", 443, "deny"},
		{"198.51.100.7", 443, "allow"}, // the CIDR grant does apply where no hard denial is
	} {
		if got := check(tc.host, tc.port); got != tc.want {
			t.Errorf("check %s:%d = %s, want %s", tc.host, tc.port, got, tc.want)
		}
	}
	// The per-object limit: the 101st active grant is refused, another object is not
	// affected, and a revoke frees a slot.
	vmBase := "/v1/egress/vm/v/grants"
	have := len(a.do("GET", vmBase, nil).must(t, http.StatusOK)["grants"].([]any))
	var last string
	for i := have; i < store.MaxGrantsPerObject; i++ {
		last = a.do("POST", vmBase, map[string]any{"tcp": []string{"many.test:" + strconv.Itoa(1000+i)}, "ttl_seconds": 600}).must(t, http.StatusOK)["id"].(string)
	}
	a.do("POST", vmBase, map[string]any{"tcp": []string{"over.test:22"}, "ttl_seconds": 600}).mustError(t, http.StatusConflict, client.CodeConflict, "")
	b.do("POST", vmBase, map[string]any{"tcp": []string{"b.test:22"}, "ttl_seconds": 600}).must(t, http.StatusOK)
	if r := a.do("DELETE", vmBase+"/"+last, nil); r.status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", r.status, r.raw)
	}
	a.do("POST", vmBase, map[string]any{"tcp": []string{"over.test:22"}, "ttl_seconds": 600}).must(t, http.StatusOK)

	// A grant on a deleted session is refused.
	gca := goClient(t, in, keyA.Key)
	if err := gca.DeleteSession(ctx, sa.SessionID); err != nil {
		t.Fatal(err)
	}
	a.do("POST", base, map[string]any{"tcp": []string{"a.test:22"}, "ttl_seconds": 60}).mustError(t, http.StatusNotFound, client.CodeNotFound, "")
}
