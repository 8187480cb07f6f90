package api_test

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

func TestVMAndSessionLifecycle(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)

	vm := c.do("POST", "/v1/vms", map[string]any{"vm_id": "build-1"}).must(t, http.StatusCreated)
	if vm["vm_id"] != "build-1" {
		t.Fatalf("vm_id = %v", vm["vm_id"])
	}
	if net := vm["network"].(map[string]any); net["mode"] != "none" {
		t.Errorf("network = %v, want mode none", net)
	}
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "build-1"}).mustError(t, http.StatusConflict, "conflict", "vm_id")
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "bad id!"}).mustError(t, http.StatusBadRequest, "bad_request", "vm_id")

	// No body at all: the server picks the ID.
	auto := c.do("POST", "/v1/vms", nil).must(t, http.StatusCreated)
	if id, _ := auto["vm_id"].(string); !strings.HasPrefix(id, "vm_") {
		t.Errorf("generated vm_id = %q", id)
	}

	se := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "build-1"}).must(t, http.StatusCreated)
	sid, _ := se["session_id"].(string)
	if se["vm_id"] != "build-1" || sid == "" {
		t.Fatalf("session = %v", se)
	}
	proxy, _ := se["proxy_url"].(string)
	if want := regexp.MustCompile(`^http://` + regexp.QuoteMeta(sid) + `:[A-Za-z0-9_-]{20,}@` + regexp.QuoteMeta(in.ProxyAddr) + `$`); !want.MatchString(proxy) {
		t.Errorf("proxy_url = %q, want http://%s:<token>@%s", proxy, sid, in.ProxyAddr)
	}
	if _, ok := se["socks_url"]; ok {
		t.Errorf("socks_url = %v without --socks-listen", se["socks_url"])
	}
	got := c.do("GET", "/v1/sessions/"+sid, nil).must(t, http.StatusOK)
	if got["session_id"] != sid || got["proxy_url"] != nil || got["socks_url"] != nil {
		t.Errorf("GET session = %v (the proxy token is shown only once)", got)
	}
	c.do("POST", "/v1/sessions", map[string]any{"vm_id": "nope"}).mustError(t, http.StatusNotFound, "not_found", "vm_id")
	c.do("POST", "/v1/sessions", map[string]any{}).mustError(t, http.StatusBadRequest, "bad_request", "vm_id")

	list := c.do("GET", "/v1/sessions?vm_id=build-1", nil).must(t, http.StatusOK)
	if n := len(list["sessions"].([]any)); n != 1 {
		t.Errorf("sessions on build-1: %d, want 1", n)
	}
	vms := c.do("GET", "/v1/vms", nil).must(t, http.StatusOK)["vms"].([]any)
	if len(vms) != 2 {
		t.Errorf("vms: %d, want 2", len(vms))
	}
	if got := c.do("GET", "/v1/vms/build-1", nil).must(t, http.StatusOK); got["sessions"] != float64(1) {
		t.Errorf("VM sessions = %v, want 1", got["sessions"])
	}

	// Ending a session deletes its policy; deleting a VM ends its sessions.
	c.do("POST", "/v1/egress/session/"+sid, map[string]any{"allow_https": true}).must(t, http.StatusOK)
	c.do("DELETE", "/v1/sessions/"+sid, nil).must(t, http.StatusNoContent)
	c.do("GET", "/v1/sessions/"+sid, nil).mustError(t, http.StatusNotFound, "not_found", "")
	c.do("GET", "/v1/egress/session/"+sid, nil).mustError(t, http.StatusNotFound, "not_found", "")

	se2 := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "build-1"}).must(t, http.StatusCreated)
	sid2 := se2["session_id"].(string)
	c.do("POST", "/v1/egress/vm/build-1", map[string]any{"allow_http": true}).must(t, http.StatusOK)
	c.do("DELETE", "/v1/vms/build-1", nil).must(t, http.StatusNoContent)
	c.do("GET", "/v1/sessions/"+sid2, nil).mustError(t, http.StatusNotFound, "not_found", "")
	c.do("GET", "/v1/egress/vm/build-1", nil).mustError(t, http.StatusNotFound, "not_found", "")
	c.do("DELETE", "/v1/vms/build-1", nil).mustError(t, http.StatusNotFound, "not_found", "")
}

func TestCreateVMWithPolicy(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)
	vm := c.do("POST", "/v1/vms", map[string]any{
		"vm_id":         "agent",
		"egress_policy": map[string]any{"allow_https": true, "allowed_domains": []string{"API.Example.COM."}},
	}).must(t, http.StatusCreated)
	pol, ok := vm["egress_policy"].(map[string]any)
	if !ok || !equal(strs(pol["allowed_domains"]), []string{"api.example.com"}) || pol["scope"] != "vm" {
		t.Fatalf("egress_policy = %v", vm["egress_policy"])
	}
	// A bad policy creates nothing, and the error names the nested field.
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "bad", "egress_policy": map[string]any{"allowed_cidrs": []string{"10.0.0.1/8"}}}).
		mustError(t, http.StatusBadRequest, "invalid_policy", "egress_policy.allowed_cidrs[0]")
	c.do("GET", "/v1/vms/bad", nil).mustError(t, http.StatusNotFound, "not_found", "")
	// netns needs the transparent gateway.
	msg := c.do("POST", "/v1/vms", map[string]any{"network": map[string]any{"mode": "netns"}}).
		mustError(t, http.StatusBadRequest, "bad_request", "network.mode")
	if !strings.Contains(msg, "--transparent") {
		t.Errorf("netns refusal does not say how to enable it: %q", msg)
	}
}

func TestPolicyEndpoints(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "v1"}).must(t, http.StatusCreated)
	sid := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "v1"}).must(t, http.StatusCreated)["session_id"].(string)

	for _, scope := range []struct{ path, scope, id string }{
		{"/v1/egress/session/" + sid, "session", sid},
		{"/v1/egress/vm/v1", "vm", "v1"},
	} {
		t.Run(scope.scope, func(t *testing.T) {
			c.do("GET", scope.path, nil).mustError(t, http.StatusNotFound, "policy_not_set", "")
			set := c.do("POST", scope.path, map[string]any{
				"allow_https":     true,
				"allowed_domains": []string{"Zeta.Example.com", "*.pythonhosted.org", "bücher.example", "zeta.example.com."},
				"allowed_cidrs":   []string{"10.1.0.0/16", "192.0.2.7"},
			}).must(t, http.StatusOK)
			if want := []string{"*.pythonhosted.org", "xn--bcher-kva.example", "zeta.example.com"}; !equal(strs(set["allowed_domains"]), want) {
				t.Errorf("allowed_domains = %v, want %v (normalised, sorted, deduplicated)", set["allowed_domains"], want)
			}
			if want := []string{"10.1.0.0/16", "192.0.2.7/32"}; !equal(strs(set["allowed_cidrs"]), want) {
				t.Errorf("allowed_cidrs = %v, want %v", set["allowed_cidrs"], want)
			}
			if set["mode"] != "enforce" || set["allow_http"] != false || set["scope"] != scope.scope || set["id"] != scope.id {
				t.Errorf("defaults and scope: %v", set)
			}
			rev1 := set["revision"].(float64)
			if _, err := time.Parse(time.RFC3339Nano, set["updated_at"].(string)); err != nil {
				t.Errorf("updated_at: %v", err)
			}
			// POST replaces the whole policy: fields left out take their defaults.
			set2 := c.do("POST", scope.path, map[string]any{"allow_http": true}).must(t, http.StatusOK)
			if set2["allow_https"] != false || len(strs(set2["allowed_domains"])) != 0 || set2["revision"].(float64) <= rev1 {
				t.Errorf("replacement: %v (revision was %v)", set2, rev1)
			}
			got := c.do("GET", scope.path, nil).must(t, http.StatusOK)
			if got["allow_http"] != true || got["revision"] != set2["revision"] {
				t.Errorf("GET after POST: %v", got)
			}
			c.do("DELETE", scope.path, nil).must(t, http.StatusNoContent)
			c.do("GET", scope.path, nil).mustError(t, http.StatusNotFound, "policy_not_set", "")
			c.do("DELETE", scope.path, nil).mustError(t, http.StatusNotFound, "policy_not_set", "")
		})
	}

	// Validation errors name the field and say how to fix it.
	for _, tc := range []struct {
		body, field, contains string
	}{
		{`{"allowed_domain": ["a.com"]}`, "allowed_domain", "unknown field"},
		{`{"allow_https": "yes"}`, "allow_https", ""},
		{`{"allowed_cidrs": ["10.0.0.0/8", "10.0.0.1/8"]}`, "allowed_cidrs[1]", "did you mean 10.0.0.0/8"},
		{`{"allowed_domains": ["ok.example", "1.2.3.4"]}`, "allowed_domains[1]", "allowed_cidrs"},
		{`{"allowed_domains": ["*.com"]}`, "allowed_domains[0]", ""},
		{`{"denied_domains": ["a..b"]}`, "denied_domains[0]", ""},
		{`{"mode": "audit"}`, "mode", ""},
	} {
		msg := c.do("POST", "/v1/egress/vm/v1", tc.body).mustError(t, http.StatusBadRequest, "invalid_policy", tc.field)
		if !strings.Contains(msg, tc.contains) {
			t.Errorf("%s: message %q does not contain %q", tc.body, msg, tc.contains)
		}
	}
	c.do("POST", "/v1/egress/vm/v1", `{"allow_https": true`).mustError(t, http.StatusBadRequest, "invalid_policy", "")
	c.do("POST", "/v1/egress/vm/v1", `{} {}`).mustError(t, http.StatusBadRequest, "invalid_policy", "")

	// An accepted policy that probably does not do what was meant comes back with warnings.
	w := c.do("POST", "/v1/egress/vm/v1", map[string]any{"allowed_domains": []string{"api.example.com"}}).must(t, http.StatusOK)
	if len(strs(w["warnings"])) == 0 {
		t.Errorf("no warning for allowed_domains with every web flag off: %v", w)
	}
	c.do("POST", "/v1/egress/vm/nope", map[string]any{}).mustError(t, http.StatusNotFound, "not_found", "")
	c.do("POST", "/v1/egress/session/nope", map[string]any{}).mustError(t, http.StatusNotFound, "not_found", "")
}

func TestLimits(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)

	var b strings.Builder
	b.WriteString(`{"allowed_domains": [`)
	for i := 0; b.Len() < 1<<20+10; i++ {
		fmt.Fprintf(&b, `"host%d.example.com",`, i)
	}
	b.WriteString(`"last.example.com"]}`)
	c.do("POST", "/v1/egress/vm/v", b.String()).mustError(t, http.StatusRequestEntityTooLarge, "too_large", "")

	// 10,001 domains fit in 1 MiB but are one too many.
	domains := make([]string, 10001)
	for i := range domains {
		domains[i] = fmt.Sprintf("h%d.example", i)
	}
	c.do("POST", "/v1/egress/vm/v", map[string]any{"allowed_domains": domains}).mustError(t, http.StatusBadRequest, "invalid_policy", "allowed_domains")
	// 10,000 are fine.
	got := c.do("POST", "/v1/egress/vm/v", map[string]any{"allow_https": true, "allowed_domains": domains[:10000]}).must(t, http.StatusOK)
	if n := len(strs(got["allowed_domains"])); n != 10000 {
		t.Errorf("stored %d domains, want 10000", n)
	}
}

func TestHTTPErrors(t *testing.T) {
	in := egressdtest.Start(t, "--api-rate-limit", "0")
	admin := newClient(t, in, in.AdminKey)

	newClient(t, in, "").do("GET", "/v1/vms", nil).mustError(t, http.StatusUnauthorized, "unauthorized", "")
	newClient(t, in, "egk_wrong").do("GET", "/v1/vms", nil).mustError(t, http.StatusUnauthorized, "unauthorized", "")

	// Authorization: Bearer works as well as X-API-Key.
	req, _ := http.NewRequest("GET", in.URL+"/v1/vms", nil)
	req.Header.Set("Authorization", "Bearer "+in.AdminKey)
	if r := admin.send(req); r.status != http.StatusOK {
		t.Errorf("Bearer auth: %d %s", r.status, r.raw)
	}

	admin.do("GET", "/v1/nothing", nil).mustError(t, http.StatusNotFound, "not_found", "")
	admin.do("PUT", "/v1/vms", nil).mustError(t, http.StatusMethodNotAllowed, "method_not_allowed", "")
	admin.do("PATCH", "/v1/egress/vm/x", nil).mustError(t, http.StatusMethodNotAllowed, "method_not_allowed", "")

	req, _ = http.NewRequest("POST", in.URL+"/v1/vms", strings.NewReader("vm_id=x"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-API-Key", in.AdminKey)
	admin.send(req).mustError(t, http.StatusUnsupportedMediaType, "unsupported_media", "")

	admin.do("POST", "/v1/vms", `{"vm_id": 7}`).mustError(t, http.StatusBadRequest, "bad_request", "vm_id")
	admin.do("POST", "/v1/vms", `{"vm": "x"}`).mustError(t, http.StatusBadRequest, "bad_request", "vm")
	admin.do("POST", "/v1/vms", `not json`).mustError(t, http.StatusBadRequest, "bad_request", "")

	// A tenant key may not manage keys.
	tk := admin.do("POST", "/v1/api-keys", map[string]any{"tenant": "acme"}).must(t, http.StatusCreated)["key"].(string)
	newClient(t, in, tk).do("GET", "/v1/api-keys", nil).mustError(t, http.StatusForbidden, "forbidden", "")
}

func TestRateLimit(t *testing.T) {
	in := egressdtest.Start(t, "--api-rate-limit", "2")
	c := newClient(t, in, in.AdminKey)
	limited := 0
	for i := 0; i < 20; i++ {
		r := c.do("GET", "/v1/vms", nil)
		if r.status == http.StatusTooManyRequests {
			r.mustError(t, http.StatusTooManyRequests, "rate_limited", "")
			if r.header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			limited++
		}
	}
	// A burst of 5 is allowed at 2/s; 20 quick requests must hit the limit.
	if limited == 0 {
		t.Fatal("20 requests at a limit of 2/s: none was limited")
	}
	// Another key has its own bucket.
	other := c.do("POST", "/v1/api-keys", map[string]any{"tenant": "other"})
	for other.status == http.StatusTooManyRequests {
		time.Sleep(600 * time.Millisecond)
		other = c.do("POST", "/v1/api-keys", map[string]any{"tenant": "other"})
	}
	ok := newClient(t, in, other.must(t, http.StatusCreated)["key"].(string)).do("GET", "/v1/vms", nil)
	ok.must(t, http.StatusOK)
}

func TestAPIKeys(t *testing.T) {
	in := egressdtest.Start(t)
	admin := newClient(t, in, in.AdminKey)

	created := admin.do("POST", "/v1/api-keys", map[string]any{"tenant": "acme"}).must(t, http.StatusCreated)
	key, _ := created["key"].(string)
	id, _ := created["id"].(string)
	if !strings.HasPrefix(key, "egk_") || id == "" || created["tenant"] != "acme" || created["admin"] != false {
		t.Fatalf("created key = %v", created)
	}
	admin.do("POST", "/v1/api-keys", map[string]any{"tenant": ""}).mustError(t, http.StatusBadRequest, "bad_request", "tenant")
	admin.do("POST", "/v1/api-keys", map[string]any{"tenant": "a b"}).mustError(t, http.StatusBadRequest, "bad_request", "tenant")

	list := admin.do("GET", "/v1/api-keys", nil).must(t, http.StatusOK)["keys"].([]any)
	if len(list) != 2 {
		t.Fatalf("keys: %d, want 2 (bootstrap admin and acme)", len(list))
	}
	for _, k := range list {
		if _, shown := k.(map[string]any)["key"]; shown {
			t.Errorf("a listed key shows its secret: %v", k)
		}
	}
	// The key works, then stops working once deleted.
	acme := newClient(t, in, key)
	acme.do("GET", "/v1/vms", nil).must(t, http.StatusOK)
	admin.do("DELETE", "/v1/api-keys/"+id, nil).must(t, http.StatusNoContent)
	acme.do("GET", "/v1/vms", nil).mustError(t, http.StatusUnauthorized, "unauthorized", "")
	admin.do("DELETE", "/v1/api-keys/"+id, nil).mustError(t, http.StatusNotFound, "not_found", "")

	// A second admin key can manage keys; an admin cannot delete the key it is using.
	second := admin.do("POST", "/v1/api-keys", map[string]any{"tenant": "ops", "admin": true}).must(t, http.StatusCreated)
	ops := newClient(t, in, second["key"].(string))
	ops.do("GET", "/v1/api-keys", nil).must(t, http.StatusOK)
	ops.do("DELETE", "/v1/api-keys/"+second["id"].(string), nil).mustError(t, http.StatusConflict, "conflict", "")
}

func TestTenantIsolation(t *testing.T) {
	in := egressdtest.Start(t)
	admin := newClient(t, in, in.AdminKey)
	a := newClient(t, in, admin.do("POST", "/v1/api-keys", map[string]any{"tenant": "alpha"}).must(t, http.StatusCreated)["key"].(string))
	b := newClient(t, in, admin.do("POST", "/v1/api-keys", map[string]any{"tenant": "beta"}).must(t, http.StatusCreated)["key"].(string))

	a.do("POST", "/v1/vms", map[string]any{"vm_id": "shared-name"}).must(t, http.StatusCreated)
	sid := a.do("POST", "/v1/sessions", map[string]any{"vm_id": "shared-name"}).must(t, http.StatusCreated)["session_id"].(string)
	a.do("POST", "/v1/egress/vm/shared-name", map[string]any{"allow_https": true}).must(t, http.StatusOK)
	a.do("POST", "/v1/egress/session/"+sid, map[string]any{"allow_https": true}).must(t, http.StatusOK)

	// Every way beta could touch alpha's objects answers 404, as for objects that do not exist.
	for _, op := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/vms/shared-name", nil},
		{"DELETE", "/v1/vms/shared-name", nil},
		{"GET", "/v1/sessions/" + sid, nil},
		{"DELETE", "/v1/sessions/" + sid, nil},
		{"GET", "/v1/sessions?vm_id=shared-name", nil},
		{"POST", "/v1/sessions", map[string]any{"vm_id": "shared-name"}},
		{"GET", "/v1/egress/vm/shared-name", nil},
		{"POST", "/v1/egress/vm/shared-name", map[string]any{"allow_http": true}},
		{"DELETE", "/v1/egress/vm/shared-name", nil},
		{"GET", "/v1/egress/session/" + sid, nil},
		{"POST", "/v1/egress/session/" + sid, map[string]any{"allow_http": true}},
		{"DELETE", "/v1/egress/session/" + sid, nil},
		{"GET", "/v1/egress/session/" + sid + "/effective", nil},
		{"POST", "/v1/egress/session/" + sid + "/check", map[string]any{"url": "https://example.com/"}},
	} {
		r := b.do(op.method, op.path, op.body)
		if r.status != http.StatusNotFound {
			t.Errorf("beta %s %s: %d, want 404: %s", op.method, op.path, r.status, r.raw)
		}
	}
	if vms := b.do("GET", "/v1/vms", nil).must(t, http.StatusOK)["vms"].([]any); len(vms) != 0 {
		t.Errorf("beta lists alpha's VMs: %v", vms)
	}
	// The same vm_id is free for another tenant, and alpha's objects are untouched.
	b.do("POST", "/v1/vms", map[string]any{"vm_id": "shared-name"}).must(t, http.StatusCreated)
	a.do("GET", "/v1/sessions/"+sid, nil).must(t, http.StatusOK)
	if got := a.do("GET", "/v1/egress/vm/shared-name", nil).must(t, http.StatusOK); got["allow_https"] != true || got["allow_http"] != false {
		t.Errorf("alpha's VM policy changed: %v", got)
	}
	// A tenant key may not manage API keys.
	b.do("POST", "/v1/api-keys", map[string]any{"tenant": "alpha"}).mustError(t, http.StatusForbidden, "forbidden", "")
}

func TestHealthReadyMetrics(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, "")
	if got := c.do("GET", "/healthz", nil).must(t, http.StatusOK); got["status"] != "ok" {
		t.Errorf("healthz = %v", got)
	}
	if got := c.do("GET", "/readyz", nil).must(t, http.StatusOK); got["status"] != "ok" {
		t.Errorf("readyz = %v", got)
	}
	newClient(t, in, in.AdminKey).do("GET", "/v1/vms", nil).must(t, http.StatusOK)
	resp, err := http.Get(in.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if !strings.Contains(sb.String(), `egressd_api_requests_total{code="200",route="GET /v1/vms"} 1`) {
		t.Errorf("/metrics does not count the request:\n%.2000s", sb.String())
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
