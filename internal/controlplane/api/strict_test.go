package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

// TestStrictBodies: every JSON body the API accepts is read by the one strict decoder
// (DESIGN §2.1), on the real binary. A field name matches exactly or is unknown, a field
// given twice is an error, and the body is one object with nothing after it. Each refusal
// changes nothing: a policy body that folded ALLOWED_DOMAINS onto allowed_domains would
// store an empty list, which allows any host.
func TestStrictBodies(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "v1"}).must(t, http.StatusCreated)
	sid := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "v1"}).must(t, http.StatusCreated)["session_id"].(string)
	c.do("POST", "/v1/egress/vm/v1", map[string]any{"allow_https": true, "allowed_domains": []string{"kept.test"}}).must(t, http.StatusOK)

	bad := client.CodeBadRequest
	invalid := client.CodeInvalidPolicy
	tests := []struct {
		path, body  string
		code, field string
		msg         string // a part of the message
	}{
		// The example: the case-folded duplicate is an unknown field.
		{"/v1/egress/vm/v1", `{"allowed_domains":["a.test"],"ALLOWED_DOMAINS":[]}`, invalid, "ALLOWED_DOMAINS", "case-sensitive"},
		{"/v1/egress/vm/v1", `{"Allow_HTTPS": true}`, invalid, "Allow_HTTPS", `did you mean "allow_https"`},
		{"/v1/egress/vm/v1", `{"allow_httpſ": true}`, invalid, "allow_httpſ", `did you mean "allow_https"`},
		{"/v1/egress/session/" + sid, `{"allowed_domains":["a.test"],"allowed_domains":[]}`, invalid, "allowed_domains", "given twice"},
		{"/v1/egress/session/" + sid, `null`, invalid, "", "null"},
		{"/v1/egress/session/" + sid, `{}]`, invalid, "", "after the JSON object"},
		{"/v1/egress/session/" + sid, `{}}`, invalid, "", "after the JSON object"},
		{"/v1/egress/session/" + sid, `{} {}`, invalid, "", "after the JSON object"},
		{"/v1/egress/session/" + sid, `{} garbage`, invalid, "", "after the JSON object"},
		{"/v1/egress/session/" + sid, `[]`, invalid, "", "a list"},

		{"/v1/vms", `{"VM_ID": "x"}`, bad, "VM_ID", "case-sensitive"},
		{"/v1/vms", `{"vm_id": "x", "vm_id": "y"}`, bad, "vm_id", "given twice"},
		{"/v1/vms", `{"vm_id": "x", "network": {"mode": "none", "mode": "netns"}}`, bad, "network.mode", "given twice"},
		{"/v1/vms", `{"vm_id": "x", "network": {"Mode": "none"}}`, bad, "network.Mode", "case-sensitive"},
		{"/v1/vms", `{"vm_id": "x", "egress_policy": {"allowed_domains": ["a.test"], "ALLOWED_DOMAINS": []}}`, invalid, "egress_policy.ALLOWED_DOMAINS", "case-sensitive"},
		{"/v1/vms", `{"vm_id": "x", "egress_policy": {"mode": "enforce", "mode": "monitor"}}`, invalid, "egress_policy.mode", "given twice"},
		{"/v1/vms", `null`, bad, "", "null"},
		{"/v1/vms", `{"vm_id": "x"}]`, bad, "", "after the JSON object"},

		{"/v1/sessions", `{"VM_ID": "v1"}`, bad, "VM_ID", "case-sensitive"},
		{"/v1/sessions", `{"vm_id": "v1", "vm_id": "v1"}`, bad, "vm_id", "given twice"},
		{"/v1/sessions", `null`, bad, "", "null"},
		{"/v1/sessions", `{"vm_id": "v1"} {}`, bad, "", "after the JSON object"},

		{"/v1/api-keys", `{"Tenant": "acme"}`, bad, "Tenant", "case-sensitive"},
		{"/v1/api-keys", `{"tenant": "acme", "admin": false, "admin": true}`, bad, "admin", "given twice"},
		{"/v1/api-keys", `null`, bad, "", "null"},

		{"/v1/egress/session/" + sid + "/check", `{"URL": "https://a.test/"}`, bad, "URL", "case-sensitive"},
		{"/v1/egress/session/" + sid + "/check", `{"host": "a.test", "port": 443, "host": "b.test"}`, bad, "host", "given twice"},
		{"/v1/egress/session/" + sid + "/check", `{"url": "https://a.test/"}]`, bad, "", "after the JSON object"},
	}
	for _, tt := range tests {
		msg := c.do("POST", tt.path, tt.body).mustError(t, http.StatusBadRequest, tt.code, tt.field)
		if !strings.Contains(msg, tt.msg) {
			t.Errorf("POST %s %s: message %q does not contain %q", tt.path, tt.body, msg, tt.msg)
		}
	}

	// Nothing was changed or created by the refused bodies.
	if got := c.do("GET", "/v1/egress/vm/v1", nil).must(t, http.StatusOK); !equal(strs(got["allowed_domains"]), []string{"kept.test"}) {
		t.Errorf("VM policy after refused writes: %v", got)
	}
	c.do("GET", "/v1/egress/session/"+sid, nil).mustError(t, http.StatusNotFound, client.CodeNotSet, "")
	c.do("GET", "/v1/vms/x", nil).mustError(t, http.StatusNotFound, client.CodeNotFound, "")
	if n := len(c.do("GET", "/v1/sessions?vm_id=v1", nil).must(t, http.StatusOK)["sessions"].([]any)); n != 1 {
		t.Errorf("%d sessions on v1 after refused creations, want 1", n)
	}
	if n := len(c.do("GET", "/v1/api-keys", nil).must(t, http.StatusOK)["keys"].([]any)); n != 1 {
		t.Errorf("%d API keys after refused creations, want 1", n)
	}
	// The exact names still work, and an empty body still creates a VM.
	c.do("POST", "/v1/egress/session/"+sid, `{"allowed_domains":["a.test"],"allow_https":true}`).must(t, http.StatusOK)
	c.do("POST", "/v1/vms", nil).must(t, http.StatusCreated)
}
