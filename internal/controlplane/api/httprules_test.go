package api_test

import (
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

// TestHTTPRulesPolicy: http_rules are stored normalised, read back, shown by effective with
// their layers, and a bad entry is a 400 that names it, in a session policy, a VM policy
// and a VM's egress_policy alike.
func TestHTTPRulesPolicy(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)
	sid := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)["session_id"].(string)

	got := c.do("POST", "/v1/egress/session/"+sid, map[string]any{
		"allow_https": true,
		"http_rules": []any{
			map[string]any{"domain": "API.Example.com.", "methods": []string{"POST", "GET"}, "paths": []string{"/v1/", "/%7eme"}},
			map[string]any{"domain": "*.corp.example"},
		},
	}).must(t, http.StatusOK)
	want := []any{
		map[string]any{"domain": "api.example.com", "methods": []any{"GET", "POST"}, "paths": []any{"/v1/", "/~me"}},
		map[string]any{"domain": "*.corp.example", "methods": []any{}, "paths": []any{}},
	}
	if !reflect.DeepEqual(got["http_rules"], want) {
		t.Errorf("stored http_rules = %v, want %v", got["http_rules"], want)
	}
	// egressd intercepts: the hosts are reachable, request by request, and no warning says otherwise.
	if ws := strings.Join(strs(got["warnings"]), "\n"); strings.Contains(ws, "interception_unavailable") {
		t.Errorf("warnings %q say that the hosts are unreachable, but the gateway intercepts", ws)
	}
	read := c.do("GET", "/v1/egress/session/"+sid, nil).must(t, http.StatusOK)
	if !reflect.DeepEqual(read["http_rules"], want) {
		t.Errorf("read back: %v", read["http_rules"])
	}
	// A policy without the field stores none, and says so.
	c.do("POST", "/v1/egress/vm/v", map[string]any{"allow_https": true, "http_rules": []any{map[string]any{"domain": "api.example.com", "methods": []string{"GET"}}}}).must(t, http.StatusOK)
	eff := c.do("GET", "/v1/egress/session/"+sid+"/effective", nil).must(t, http.StatusOK)
	rules, _ := eff["http_rules"].(map[string]any)
	if rules == nil || !reflect.DeepEqual(strs(rules["from"]), []string{"session", "vm"}) ||
		!reflect.DeepEqual(strs(rules["intercepted"]), []string{"*.corp.example", "api.example.com"}) || len(rules["rules"].([]any)) != 3 {
		t.Errorf("effective http_rules = %v", eff["http_rules"])
	}
	first := rules["rules"].([]any)[0].(map[string]any)
	if first["layer"] != "session" || first["index"] != 0.0 || first["domain"] != "api.example.com" {
		t.Errorf("effective rule 0 = %v", first)
	}
	if notes := strings.Join(strs(eff["notes"]), "\n"); !strings.Contains(notes, "in every layer whose http_rules name the host") || strings.Contains(notes, "does not intercept yet") {
		t.Errorf("notes %q", notes)
	}

	many := func(n int, f func(i int) any) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	rule := func(kv ...any) map[string]any {
		m := map[string]any{"domain": "api.example.com"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		rules any
		field string
		msg   string
	}{
		{[]any{rule("methods", []string{"GET", "post"})}, "http_rules[0].methods[1]", `did you mean "POST"?`},
		{[]any{rule(), rule("paths", []string{"v1/"})}, "http_rules[1].paths[0]", `does not start with "/"`},
		{[]any{rule("paths", []string{"/v1/models?limit=1"})}, "http_rules[0].paths[0]", "has a query"},
		{[]any{rule("paths", []string{"/v1/%2e%2e/admin"})}, "http_rules[0].paths[0]", "dot segments"},
		{[]any{rule("paths", []string{"/v1/%zz"})}, "http_rules[0].paths[0]", "percent-encoding"},
		{[]any{rule("domain", "")}, "http_rules[0].domain", "missing or empty"},
		{[]any{rule("domain", "*")}, "http_rules[0].domain", `"*" alone`},
		{[]any{rule("method", []string{"GET"})}, "http_rules[0].method", `unknown field "method"`},
		{[]any{rule("methods", "GET")}, "http_rules[0].methods", "list of strings"},
		{[]any{rule(), nil}, "http_rules[1]", "is null"},
		{many(1001, func(i int) any { return rule("domain", fmt.Sprintf("h%d.example.com", i)) }), "http_rules", "the limit is 1000"},
		{[]any{rule("methods", many(101, func(i int) any { return fmt.Sprintf("M%d", i) }))}, "http_rules[0].methods", "the limit is 100"},
		{[]any{rule("paths", many(101, func(i int) any { return fmt.Sprintf("/p%d", i) }))}, "http_rules[0].paths", "the limit is 100"},
	} {
		body := map[string]any{"allow_https": true, "http_rules": tc.rules}
		for _, path := range []string{"/v1/egress/session/" + sid, "/v1/egress/vm/v"} {
			msg := c.do("POST", path, body).mustError(t, http.StatusBadRequest, "invalid_policy", tc.field)
			if !strings.Contains(msg, tc.msg) {
				t.Errorf("%s %s: message %q, want it to say %q", path, tc.field, msg, tc.msg)
			}
		}
		c.do("POST", "/v1/vms", map[string]any{"vm_id": "w", "egress_policy": body}).mustError(t, http.StatusBadRequest, "invalid_policy", "egress_policy."+tc.field)
	}
	// The rules set above are untouched by the refused writes.
	if read := c.do("GET", "/v1/egress/session/"+sid, nil).must(t, http.StatusOK); !reflect.DeepEqual(read["http_rules"], want) {
		t.Errorf("after refused writes: %v", read["http_rules"])
	}
}

// TestCheckHTTPRules: check with a URL and a method answers the request decision: the
// entry that denies it, or the entry that allows it: egressd intercepts the hosts that
// http_rules name, so a request the rules allow is allowed (reason http_rules).
func TestCheckHTTPRules(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)
	sid := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)["session_id"].(string)
	c.do("POST", "/v1/egress/vm/v", map[string]any{"allow_https": true, "allow_http": true,
		"http_rules": []any{map[string]any{"domain": "*.example.com", "methods": []string{"GET", "POST", "DELETE"}}}}).must(t, http.StatusOK)
	c.do("POST", "/v1/egress/session/"+sid, map[string]any{"allow_https": true, "allow_http": true,
		"http_rules": []any{map[string]any{"domain": "api.example.com", "methods": []string{"GET", "POST"}, "paths": []string{"/v1/"}}}}).must(t, http.StatusOK)
	check := func(body map[string]any, decision, reason, layer string, wouldDeny bool) map[string]any {
		t.Helper()
		got := c.do("POST", "/v1/egress/session/"+sid+"/check", body).must(t, http.StatusOK)
		if got["decision"] != decision || got["reason"] != reason || got["layer"] != layer || got["would_deny"] != wouldDeny {
			t.Errorf("check %v = %v, want %s %s by %s (would_deny %v)", body, got, decision, reason, layer, wouldDeny)
		}
		return got
	}
	const byRules = "http_rules"
	got := check(map[string]any{"url": "https://api.example.com/v1/models", "method": "POST"}, "allow", byRules, "session", false)
	if !strings.HasPrefix(got["rule"].(string), "http_rules[0] api.example.com") {
		t.Errorf("rule %q does not name the entry", got["rule"])
	}
	check(map[string]any{"url": "https://api.example.com/v1/models"}, "allow", byRules, "session", false) // GET by default
	got = check(map[string]any{"url": "https://api.example.com/v1/models", "method": "PUT"}, "deny", "method_not_allowed", "session", false)
	if got["message"] == "" || !strings.Contains(got["rule"].(string), "methods GET,POST") {
		t.Errorf("method_not_allowed: %v", got)
	}
	check(map[string]any{"url": "https://api.example.com/admin", "method": "GET"}, "deny", "path_not_allowed", "session", false)
	check(map[string]any{"url": "https://api.example.com/v1/../admin"}, "deny", "path_not_allowed", "session", false)
	check(map[string]any{"url": "https://api.example.com/v1/%2e%2e/admin"}, "deny", "path_not_allowed", "session", false)
	check(map[string]any{"url": "https://api.example.com/v1/..%2Fadmin"}, "deny", "path_not_allowed", "session", false)
	check(map[string]any{"url": "https://API.example.com./v1x"}, "deny", "path_not_allowed", "session", false)
	check(map[string]any{"url": "https://api.example.com/v1/x?q=/../../admin#frag"}, "allow", byRules, "session", false)
	check(map[string]any{"url": "https://api.example.com/v1/%zz"}, "deny", "bad_path", "session", false)
	check(map[string]any{"url": "https://api.example.com/v1/x", "method": "DELETE"}, "deny", "method_not_allowed", "session", false)
	check(map[string]any{"url": "https://www.example.com/x", "method": "PATCH"}, "deny", "method_not_allowed", "vm", false)
	check(map[string]any{"url": "http://www.example.com/x", "method": "DELETE"}, "allow", byRules, "vm", false)
	check(map[string]any{"host": "api.example.com", "port": 443}, "allow", "allow_https", "session", false) // the connection; its requests are decided one by one
	check(map[string]any{"host": "api.example.com", "port": 8443}, "deny", "port_not_allowed", "session", false)
	check(map[string]any{"url": "https://other.test/anything", "method": "PATCH"}, "allow", "allow_https", "session", false)
	check(map[string]any{"dns_query": "api.example.com"}, "allow", "allow_https", "session", false)

	// Monitor mode in the session: its rules only record; the VM still enforces its own.
	c.do("POST", "/v1/egress/session/"+sid, map[string]any{"allow_https": true, "mode": "monitor",
		"http_rules": []any{map[string]any{"domain": "api.example.com", "paths": []string{"/v1/"}}}}).must(t, http.StatusOK)
	check(map[string]any{"url": "https://api.example.com/admin", "method": "PUT"}, "deny", "method_not_allowed", "vm", false)
	check(map[string]any{"url": "https://api.example.com/admin"}, "allow", "path_not_allowed", "session", true) // the VM's rules allow it; the session's monitor would not
	c.do("POST", "/v1/egress/vm/v", map[string]any{"allow_https": true}).must(t, http.StatusOK)
	check(map[string]any{"url": "https://api.example.com/admin"}, "allow", "path_not_allowed", "session", true)
	check(map[string]any{"url": "https://api.example.com/v1/x"}, "allow", byRules, "session", false)

	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"url": "https://api.example.com/", "method": "get"}, "method"},
		{map[string]any{"url": "https://api.example.com/", "method": "GET POST"}, "method"},
		{map[string]any{"url": "ftp://api.example.com/", "method": "GET"}, "url"},
		{map[string]any{"url": "wss://api.example.com/", "method": "GET"}, "url"},
		{map[string]any{"host": "api.example.com", "port": 443, "method": "GET"}, "method"},
		{map[string]any{"ip": "192.0.2.1", "port": 443, "method": "GET"}, "method"},
		{map[string]any{"dns_query": "api.example.com", "method": "GET"}, "method"},
		{map[string]any{"url": "https:///v1/", "method": "GET"}, "url"},
	} {
		msg := c.do("POST", "/v1/egress/session/"+sid+"/check", tc.body).mustError(t, http.StatusBadRequest, "bad_request", tc.field)
		if tc.field == "method" && tc.body["method"] == "get" && !strings.Contains(msg, `"GET"`) {
			t.Errorf("lower-case method: %q does not suggest GET", msg)
		}
	}
}
