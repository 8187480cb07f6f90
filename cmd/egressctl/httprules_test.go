package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/policy"
)

func TestParseHTTPRule(t *testing.T) {
	tests := []struct {
		in   string
		want policy.HTTPRule
		out  string // formatHTTPRule of the result
	}{
		{"api.example.com GET,POST /v1/ /v2/models", policy.HTTPRule{Domain: "api.example.com", Methods: []string{"GET", "POST"}, Paths: []string{"/v1/", "/v2/models"}}, "api.example.com GET,POST /v1/ /v2/models"},
		{"api.example.com", policy.HTTPRule{Domain: "api.example.com"}, "api.example.com"},
		{"  api.example.com   GET  ", policy.HTTPRule{Domain: "api.example.com", Methods: []string{"GET"}}, "api.example.com GET"},
		{"*.example.com /v1/", policy.HTTPRule{Domain: "*.example.com", Paths: []string{"/v1/"}}, "*.example.com * /v1/"},
		{"api.example.com * /a,b", policy.HTTPRule{Domain: "api.example.com", Paths: []string{"/a,b"}}, "api.example.com * /a,b"},
		{"api.example.com get /x", policy.HTTPRule{Domain: "api.example.com", Methods: []string{"get"}, Paths: []string{"/x"}}, "api.example.com get /x"}, // egressd refuses it, naming the field
	}
	for _, tt := range tests {
		got, err := parseHTTPRule(tt.in)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseHTTPRule(%q) = %#v, %v; want %#v", tt.in, got, err, tt.want)
			continue
		}
		if out := formatHTTPRule(got); out != tt.out {
			t.Errorf("formatHTTPRule(%#v) = %q, want %q", got, out, tt.out)
		}
		if back, err := parseHTTPRule(formatHTTPRule(got)); err != nil || !reflect.DeepEqual(back, got) {
			t.Errorf("round trip of %q: %#v, %v", tt.in, back, err)
		}
	}
	for in, want := range map[string]string{
		"":                           "empty rule",
		"   ":                        "empty rule",
		"api.example.com GET v1/":    `"v1/" is not a path`,
		"api.example.com GET,,POST":  "an empty method",
		"api.example.com GET POST /": `"POST" is not a path`,
	} {
		if _, err := parseHTTPRule(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseHTTPRule(%q) = %v, want an error saying %q", in, err, want)
		}
	}
}

// TestHTTPRulesCLI: --http-rule sets entries that get and effective show in the same form,
// check --method judges a request, and mistakes name the field.
func TestHTTPRulesCLI(t *testing.T) {
	c, _ := startCtl(t)
	s := c.newSession("vm-rules")
	out := c.ok("egress", "set", "--session", s, "--https", "--http-rule", "API.example.com POST,GET /v1/", "--http-rule", "*.example.org")
	mustHaveLine(t, out, "http_rules:", "api.example.com", "GET,POST", "/v1/")
	mustHaveLine(t, out, "*.example.org")
	if strings.Contains(out, "interception_unavailable") {
		t.Errorf("a warning that the hosts are unreachable, but egressd intercepts them:\n%s", out)
	}
	var p client.Policy
	c.json(&p, "egress", "get", "--session", s)
	want := []policy.HTTPRule{
		{Domain: "api.example.com", Methods: []string{"GET", "POST"}, Paths: []string{"/v1/"}},
		{Domain: "*.example.org", Methods: []string{}, Paths: []string{}},
	}
	if !reflect.DeepEqual(p.HTTPRules, want) {
		t.Errorf("stored %#v, want %#v", p.HTTPRules, want)
	}
	eff := c.ok("egress", "effective", "--session", s)
	mustHaveLine(t, eff, "http_rules:", "session[0]:", "api.example.com", "GET,POST", "/v1/")
	mustHaveLine(t, eff, "intercepted:", "*.example.org", "(from", "session)")

	r := c.run("egress", "check", "--session", s, "https://api.example.com/v1/models", "--method", "DELETE")
	if r.code != exitDenied || !strings.Contains(r.stdout, "reason method_not_allowed") || !strings.Contains(r.stdout, "http_rules[0] api.example.com") {
		t.Errorf("check --method DELETE: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = c.run("egress", "check", "--session", s, "https://api.example.com/v1/%2e%2e/admin")
	if r.code != exitDenied || !strings.Contains(r.stdout, "reason path_not_allowed") {
		t.Errorf("check dot segments: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = c.run("egress", "check", "--session", s, "https://api.example.com/v1/models", "--method", "POST")
	if r.code != 0 || !strings.Contains(r.stdout, "reason http_rules") {
		t.Errorf("check an allowed request: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	c.fails(1, "http_rules[0].methods[0]", "egress", "set", "--session", s, "--https", "--http-rule", "api.example.com get /v1/")
	c.fails(1, "http_rules[1].paths[0]", "egress", "set", "--session", s, "--https", "--http-rule", "a.example.com", "--http-rule", "b.example.com GET /v1/?x=1")
	c.fails(1, `is not a path`, "egress", "set", "--session", s, "--https", "--http-rule", "api.example.com GET v1/")
	c.fails(1, "--method goes with a URL", "egress", "check", "--session", s, "--host", "api.example.com", "--port", "443", "--method", "GET")
	c.fails(1, "(400 bad_request)", "egress", "check", "--session", s, "https://api.example.com/", "--method", "get")
}
