package client

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
)

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		name, in string
		want     policy.Policy
		err      string // part of the error; "" for none
	}{
		{name: "the policy's fields", in: `{"allow_https": true, "allowed_domains": ["a.test"], "mode": "monitor"}`,
			want: policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"a.test"}, Mode: policy.Monitor}},
		{name: "a stored policy: the read-only fields are dropped",
			in: `{"allow_http": true, "scope": "session", "id": "ses_1", "revision": 7, "updated_at": "2030-01-02T03:04:05Z",
			      "warnings": ["allowed_domains is set but no web flag is on"]}`,
			want: policy.Policy{AllowHTTP: true}},
		{name: "empty object", in: `{}`, want: policy.Policy{}},
		{name: "a typo", in: `{"allowed_domain": ["a.test"]}`, err: `unknown field "allowed_domain"`},
		{name: "another case", in: `{"ALLOWED_DOMAINS": []}`, err: `unknown field "ALLOWED_DOMAINS"`},
		{name: "a long s", in: `{"allow_httpſ": true}`, err: `unknown field "allow_httpſ"`},
		{name: "a field twice", in: `{"allowed_domains": ["a.test"], "allowed_domains": []}`, err: `"allowed_domains" is given twice`},
		{name: "a read-only field twice", in: `{"revision": 1, "revision": 2}`, err: `"revision" is given twice`},
		{name: "null", in: `null`, err: "the body is null"},
		{name: "a list", in: `[{}]`, err: "the body is a list"},
		{name: "data after", in: `{"allow_https": true} {}`, err: "send exactly one object and nothing after it"},
		{name: "a stray bracket after", in: `{"allow_https": true}]`, err: "send exactly one object and nothing after it"},
		{name: "a wrong type", in: `{"allow_https": "yes"}`, err: "allow_https: must be a JSON boolean"},
		{name: "truncated", in: `{"allow_https": true`, err: "cut short"},
		{name: "http_rules", in: `{"allow_https": true, "http_rules": [{"domain": "api.example.com", "methods": ["GET"], "paths": ["/v1/"]}, {"domain": "*.example.org"}]}`,
			want: policy.Policy{AllowHTTPS: true, HTTPRules: []policy.HTTPRule{
				{Domain: "api.example.com", Methods: []string{"GET"}, Paths: []string{"/v1/"}}, {Domain: "*.example.org"}}}},
		{name: "an unknown key in a rule", in: `{"http_rules": [{"domain": "a.test"}, {"domain": "b.test", "path": ["/"]}]}`, err: `http_rules[1].path: unknown field "path"`},
		{name: "a rule twice the same key", in: `{"http_rules": [{"domain": "a.test", "domain": "b.test"}]}`, err: `http_rules[0].domain: "domain" is given twice`},
		{name: "a null rule", in: `{"http_rules": [null]}`, err: "http_rules[0]: is null"},
		{name: "a wrong type in a rule", in: `{"http_rules": [{"domain": "a.test", "methods": ["GET", 1]}]}`, err: "http_rules[0].methods[1]: must be a JSON string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePolicy([]byte(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParsePolicy(%s) = %v, want an error saying %q", tt.in, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePolicy(%s): %v", tt.in, err)
			}
			if g, w := mustJSON(t, got), mustJSON(t, tt.want); g != w {
				t.Errorf("ParsePolicy(%s) = %s, want %s", tt.in, g, w)
			}
		})
	}
}

// TestParsePolicyReadsWhatTheAPIAnswers: a Policy as the API answers it, encoded, parses back
// to its rules. Its fields are all set (and a field without omitempty is encoded anyway), so a
// read-only field added to Policy but not to readOnlyPolicyFields fails here.
func TestParsePolicyReadsWhatTheAPIAnswers(t *testing.T) {
	stored := Policy{
		Policy: policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"a.test"}, DeniedDomains: []string{"b.a.test"},
			AllowedTCP: []string{"git.a.test:22"},
			HTTPRules:  []policy.HTTPRule{{Domain: "a.test", Methods: []string{"GET"}, Paths: []string{"/v1/"}}}}.WithDefaults(),
		Scope: ScopeVM, ID: "vm-1", Revision: 42, UpdatedAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		Warnings: []string{"a warning"},
	}
	data, _ := json.MarshalIndent(stored, "", "  ")
	got, err := ParsePolicy(data)
	if err != nil {
		t.Fatalf("ParsePolicy of %s: %v", data, err)
	}
	if g, w := mustJSON(t, got), mustJSON(t, stored.Policy); g != w {
		t.Errorf("round trip: %s, want %s", g, w)
	}
}
