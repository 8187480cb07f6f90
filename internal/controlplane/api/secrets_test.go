package api_test

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

var placeholderPattern = regexp.MustCompile(`^egressd-secret-([A-Za-z0-9_-]+)-[a-z2-7]{24}$`)

func TestSecretsLifecycle(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)

	if list := c.do("GET", "/v1/secrets", nil).must(t, http.StatusOK); len(list["secrets"].([]any)) != 0 {
		t.Fatalf("a new egressd lists secrets: %v", list)
	}
	r := c.do("POST", "/v1/secrets", map[string]any{
		"name": "openai", "value": "sk-test-lifecycle-1", "domains": []string{"API.OpenAI.test.", "*.openai.test", "api.openai.test"},
	})
	created := r.must(t, http.StatusCreated)
	if loc := r.header.Get("Location"); loc != "/v1/secrets/openai" {
		t.Errorf("Location %q", loc)
	}
	ph, _ := created["placeholder"].(string)
	if m := placeholderPattern.FindStringSubmatch(ph); m == nil || m[1] != "openai" {
		t.Errorf("placeholder %q, want egressd-secret-openai-<24 base32>", ph)
	}
	if got := strs(created["domains"]); !slices.Equal(got, []string{"*.openai.test", "api.openai.test"}) {
		t.Errorf("domains %v, want normalised, sorted, once each", got)
	}
	if _, ok := created["value"]; ok || created["name"] != "openai" || created["created_at"] == nil {
		t.Errorf("answer %s", r.raw)
	}

	// A second secret, then the list, by name.
	other := c.do("POST", "/v1/secrets?wait=fleet", map[string]any{"name": "gh_token", "value": "ghp-x", "domains": []string{"api.github.test"}}).must(t, http.StatusCreated)
	if by := strs(other["enforced_by"]); len(by) != 1 {
		t.Errorf("wait=fleet: enforced_by %v", other["enforced_by"])
	}
	if other["placeholder"] == ph {
		t.Error("two secrets share a placeholder")
	}
	list := c.do("GET", "/v1/secrets", nil).must(t, http.StatusOK)["secrets"].([]any)
	var names []string
	for _, s := range list {
		names = append(names, s.(map[string]any)["name"].(string))
	}
	if !slices.Equal(names, []string{"gh_token", "openai"}) {
		t.Errorf("list %v", names)
	}
	got := c.do("GET", "/v1/secrets/openai", nil).must(t, http.StatusOK)
	if got["placeholder"] != ph {
		t.Errorf("GET: %v", got)
	}

	// Rotation keeps the placeholder and the domains.
	time.Sleep(2 * time.Millisecond)
	rot := c.do("PUT", "/v1/secrets/openai", map[string]any{"value": "sk-test-lifecycle-2"}).must(t, http.StatusOK)
	if rot["placeholder"] != ph || !slices.Equal(strs(rot["domains"]), []string{"*.openai.test", "api.openai.test"}) ||
		rot["created_at"] != created["created_at"] || rot["updated_at"] == created["updated_at"] {
		t.Errorf("after rotation: %v (created %v)", rot, created)
	}
	// New domains alone keep the value (and the placeholder).
	dom := c.do("PUT", "/v1/secrets/openai", map[string]any{"domains": []string{"api.openai.test"}}).must(t, http.StatusOK)
	if dom["placeholder"] != ph || !slices.Equal(strs(dom["domains"]), []string{"api.openai.test"}) {
		t.Errorf("after new domains: %v", dom)
	}

	c.do("DELETE", "/v1/secrets/openai", nil).must(t, http.StatusNoContent)
	c.do("GET", "/v1/secrets/openai", nil).mustError(t, http.StatusNotFound, "not_found", "")
	c.do("DELETE", "/v1/secrets/openai", nil).mustError(t, http.StatusNotFound, "not_found", "")
	c.do("PUT", "/v1/secrets/openai", map[string]any{"value": "x"}).mustError(t, http.StatusNotFound, "not_found", "")
	c.do("PATCH", "/v1/secrets/gh_token", map[string]any{"value": "x"}).mustError(t, http.StatusMethodNotAllowed, "method_not_allowed", "")
	// The name is free again, with a new placeholder.
	again := c.do("POST", "/v1/secrets", map[string]any{"name": "openai", "value": "v", "domains": []string{"a.test"}}).must(t, http.StatusCreated)
	if again["placeholder"] == ph {
		t.Error("a re-created secret got its old placeholder")
	}
	c.do("POST", "/v1/secrets", map[string]any{"name": "openai", "value": "v", "domains": []string{"a.test"}}).mustError(t, http.StatusConflict, "conflict", "name")

	// Secrets survive a restart.
	in.Restart()
	if got := c.do("GET", "/v1/secrets/gh_token", nil).must(t, http.StatusOK); got["placeholder"] != other["placeholder"] {
		t.Errorf("after restart: %v", got)
	}
}

func TestSecretsBadInput(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)
	c.do("POST", "/v1/secrets", map[string]any{"name": "kept", "value": "v1", "domains": []string{"a.test"}}).must(t, http.StatusCreated)
	long := strings.Repeat("x", 16<<10+1)
	tooMany := make([]string, 101)
	for i := range tooMany {
		tooMany[i] = strings.Repeat("a", i+1) + ".test"
	}
	for _, tc := range []struct {
		method, path string
		body         any
		field        string
	}{
		{"POST", "/v1/secrets", map[string]any{"value": "v", "domains": []string{"a.test"}}, "name"},
		{"POST", "/v1/secrets", map[string]any{"name": "a b", "value": "v", "domains": []string{"a.test"}}, "name"},
		{"POST", "/v1/secrets", map[string]any{"name": "a.b", "value": "v", "domains": []string{"a.test"}}, "name"},
		{"POST", "/v1/secrets", map[string]any{"name": "-a", "value": "v", "domains": []string{"a.test"}}, "name"},
		{"POST", "/v1/secrets", map[string]any{"name": strings.Repeat("n", 64), "value": "v", "domains": []string{"a.test"}}, "name"},
		{"POST", "/v1/secrets", map[string]any{"name": "n", "domains": []string{"a.test"}}, "value"},
		{"POST", "/v1/secrets", map[string]any{"name": "n", "value": "", "domains": []string{"a.test"}}, "value"},
		{"POST", "/v1/secrets", map[string]any{"name": "n", "value": "v\n", "domains": []string{"a.test"}}, "value"},
		{"POST", "/v1/secrets", map[string]any{"name": "n", "value": "a\r\nX-Injected: 1", "domains": []string{"a.test"}}, "value"},
		{"POST", "/v1/secrets", map[string]any{"name": "n", "value": " v", "domains": []string{"a.test"}}, "value"},
		{"POST", "/v1/secrets", map[string]any{"name": "n", "value": "a\x00b", "domains": []string{"a.test"}}, "value"},
		{"POST", "/v1/secrets", map[string]any{"name": "n", "value": long, "domains": []string{"a.test"}}, "value"},
		{"POST", "/v1/secrets", map[string]any{"name": "n", "value": 12, "domains": []string{"a.test"}}, "value"},
		{"POST", "/v1/secrets", map[string]any{"name": "n", "value": "v"}, "domains"},
		{"POST", "/v1/secrets", map[string]any{"name": "n", "value": "v", "domains": []string{}}, "domains"},
		{"POST", "/v1/secrets", map[string]any{"name": "n", "value": "v", "domains": []string{"a.test", "bad domain"}}, "domains[1]"},
		{"POST", "/v1/secrets", map[string]any{"name": "n", "value": "v", "domains": []string{"192.0.2.1"}}, "domains[0]"},
		{"POST", "/v1/secrets", map[string]any{"name": "n", "value": "v", "domains": []string{"*"}}, "domains[0]"},
		{"POST", "/v1/secrets", map[string]any{"name": "n", "value": "v", "domains": []string{"*.com"}}, "domains[0]"},
		{"POST", "/v1/secrets", map[string]any{"name": "n", "value": "v", "domains": tooMany}, "domains"},
		{"POST", "/v1/secrets", `{"name": "n", "value": "v", "domains": ["a.test"], "Value": "w"}`, "Value"},
		{"POST", "/v1/secrets", `{"name": "n", "value": "v", "value": "w", "domains": ["a.test"]}`, "value"},
		{"POST", "/v1/secrets", `{"name": "n", "value": "v", "domains": ["a.test"], "placeholder": "mine"}`, "placeholder"},
		{"POST", "/v1/secrets?wait=everyone", map[string]any{"name": "n", "value": "v", "domains": []string{"a.test"}}, "wait"},
		{"PUT", "/v1/secrets/kept", map[string]any{}, ""},
		{"PUT", "/v1/secrets/kept", map[string]any{"value": "v\n"}, "value"},
		{"PUT", "/v1/secrets/kept", map[string]any{"domains": []string{}}, "domains"},
		{"PUT", "/v1/secrets/kept", map[string]any{"domains": []string{"ok.test", "no_underscore.test"}}, "domains[1]"},
		{"PUT", "/v1/secrets/kept", map[string]any{"name": "renamed"}, "name"},
	} {
		r := c.do(tc.method, tc.path, tc.body)
		if r.status != http.StatusBadRequest {
			t.Errorf("%s %s %v: status %d, want 400: %s", tc.method, tc.path, tc.body, r.status, r.raw)
			continue
		}
		r.mustError(t, http.StatusBadRequest, "bad_request", tc.field)
	}
	// Nothing was created or changed.
	list := c.do("GET", "/v1/secrets", nil).must(t, http.StatusOK)["secrets"].([]any)
	if len(list) != 1 {
		t.Errorf("after the refusals: %v", list)
	}
	// An unknown name is 404, whatever its spelling.
	for _, name := range []string{"nope", "not.a.valid.name", "x%2Fy"} {
		c.do("PUT", "/v1/secrets/"+name, map[string]any{"value": "v"}).mustError(t, http.StatusNotFound, "not_found", "")
		c.do("GET", "/v1/secrets/"+name, nil).mustError(t, http.StatusNotFound, "not_found", "")
		c.do("DELETE", "/v1/secrets/"+name, nil).mustError(t, http.StatusNotFound, "not_found", "")
	}
	// Without a key: 401.
	newClient(t, in, "").do("GET", "/v1/secrets", nil).mustError(t, http.StatusUnauthorized, "unauthorized", "")
}

// TestSecretsTenantIsolation: another tenant's secret is 404 for every call, and each tenant
// may use any name.
func TestSecretsTenantIsolation(t *testing.T) {
	in := egressdtest.Start(t)
	admin := newClient(t, in, in.AdminKey)
	keyA := admin.do("POST", "/v1/api-keys", map[string]any{"tenant": "acme"}).must(t, http.StatusCreated)["key"].(string)
	keyB := admin.do("POST", "/v1/api-keys", map[string]any{"tenant": "beta"}).must(t, http.StatusCreated)["key"].(string)
	a, b := newClient(t, in, keyA), newClient(t, in, keyB)
	a.do("POST", "/v1/secrets", map[string]any{"name": "tok", "value": "acme-value", "domains": []string{"a.test"}}).must(t, http.StatusCreated)
	b.do("GET", "/v1/secrets/tok", nil).mustError(t, http.StatusNotFound, "not_found", "")
	b.do("PUT", "/v1/secrets/tok", map[string]any{"value": "stolen"}).mustError(t, http.StatusNotFound, "not_found", "")
	b.do("DELETE", "/v1/secrets/tok", nil).mustError(t, http.StatusNotFound, "not_found", "")
	if list := b.do("GET", "/v1/secrets", nil).must(t, http.StatusOK)["secrets"].([]any); len(list) != 0 {
		t.Errorf("beta lists %v", list)
	}
	b.do("POST", "/v1/secrets", map[string]any{"name": "tok", "value": "beta-value", "domains": []string{"b.test"}}).must(t, http.StatusCreated)
	if got := a.do("GET", "/v1/secrets/tok", nil).must(t, http.StatusOK); !slices.Equal(strs(got["domains"]), []string{"a.test"}) {
		t.Errorf("acme's secret changed: %v", got)
	}
}

func TestCAPEM(t *testing.T) {
	in := egressdtest.Start(t)
	resp, err := http.Get(in.URL + "/v1/ca.pem") // no key: the certificate is public
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-pem-file" {
		t.Fatalf("GET /v1/ca.pem: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	first := readCA(t, in)
	if !strings.HasPrefix(first.Subject.CommonName, "egressd sandbox CA ") || !first.IsCA || first.MaxPathLen != 0 {
		t.Errorf("CA %q IsCA %v MaxPathLen %d", first.Subject.CommonName, first.IsCA, first.MaxPathLen)
	}
	if !strings.Contains(in.Log(), "interception CA") || !strings.Contains(in.Log(), "origin=created") {
		t.Errorf("the log does not say that a CA was made:\n%s", in.Log())
	}
	in.Restart()
	if again := readCA(t, in); !again.Equal(first) {
		t.Error("a restart made another CA")
	}
}

// readCA fetches and parses GET /v1/ca.pem.
func readCA(t *testing.T, in *egressdtest.Instance) *x509.Certificate {
	t.Helper()
	r := newClient(t, in, "").raw("GET", "/v1/ca.pem")
	if r.status != http.StatusOK {
		t.Fatalf("GET /v1/ca.pem: %d %s", r.status, r.raw)
	}
	block, _ := pem.Decode(r.raw)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %s", r.raw)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// raw sends a request without a body and returns the answer undecoded.
func (c *apiClient) raw(method, path string) response {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.key != "" {
		req.Header.Set("X-API-Key", c.key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, raw: raw}
}
