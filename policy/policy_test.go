package policy

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	p, warnings, err := Parse([]byte(`{"allow_https": true, "allowed_domains": ["PyPI.org", "*.pythonhosted.org"], "mode": "monitor"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Policy{
		AllowHTTPS:     true,
		AllowedDomains: []string{"*.pythonhosted.org", "pypi.org"},
		AllowedCIDRs:   []string{},
		DeniedDomains:  []string{},
		Mode:           Monitor,
		AllowedTCP:     []string{},
		HTTPRules:      []HTTPRule{},
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("Parse = %#v, want %#v", p, want)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "monitor") {
		t.Errorf("warnings = %q, want the monitor warning", warnings)
	}
}

func TestParseDefaults(t *testing.T) {
	for _, body := range []string{`{}`, ` {} `, "{}\n", `{"allowed_domains": null, "mode": null}`} {
		p, _, err := Parse([]byte(body))
		if err != nil {
			t.Errorf("Parse(%q): %v", body, err)
			continue
		}
		if !reflect.DeepEqual(p, DenyAll()) {
			t.Errorf("Parse(%q) = %#v, want DenyAll", body, p)
		}
	}
}

func TestParseStrict(t *testing.T) {
	tests := []struct {
		body      string
		wantField string
		wantMsg   string
	}{
		{`{"allowed_domain": ["a.example"]}`, "allowed_domain", `unknown field "allowed_domain"`},
		{`{"allow_https": "true"}`, "allow_https", "must be a JSON boolean (true or false), not string"},
		{`{"allow_https": 1}`, "allow_https", "must be a JSON boolean"},
		{`{"allowed_domains": "a.example"}`, "allowed_domains", "must be a JSON list of strings, not string"},
		{`{"allowed_domains": [1]}`, "allowed_domains[0]", "must be a JSON string, not number"},
		{`{"allowed_cidrs": {"a": 1}}`, "allowed_cidrs", "list of strings"},
		{`{"mode": 1}`, "mode", "must be a JSON string"},
		{`{"mode": "audit"}`, "mode", `"audit" is not a mode`},
		{`{} {}`, "", "another object after the JSON object"},
		{`{}]`, "", "after the JSON object"},
		{`{"ALLOWED_DOMAINS": []}`, "ALLOWED_DOMAINS", `did you mean "allowed_domains"`},
		{`{"allowed_domains": ["a.test"], "ALLOWED_DOMAINS": []}`, "ALLOWED_DOMAINS", "case-sensitive"},
		{`{"allow_httpſ": true}`, "allow_httpſ", "case-sensitive"},
		{`{"mode": "monitor", "mode": "enforce"}`, "mode", "given twice"},
		{`{}x`, "", "unexpected data"},
		{`{"allow_http": true`, "", "cut short"},
		{``, "", "empty"},
		{`[]`, "", "JSON"},
		{`null`, "", "null"},
		{`{"allow_http": tru}`, "", "malformed JSON"},
		{`{"allowed_domains": ["ok.example", "bad..example"]}`, "allowed_domains[1]", "empty label"},
	}
	for _, tt := range tests {
		_, _, err := Parse([]byte(tt.body))
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("Parse(%q) error %v is not a *FieldError", tt.body, err)
			continue
		}
		if fe.Field != tt.wantField || !strings.Contains(fe.Message, tt.wantMsg) {
			t.Errorf("Parse(%q) = {%q, %q}, want {%q, ...%q...}", tt.body, fe.Field, fe.Message, tt.wantField, tt.wantMsg)
		}
	}
}

// TestPolicyJSONNames pins the wire names of DESIGN §2.1.
func TestPolicyJSONNames(t *testing.T) {
	b, err := json.Marshal(DenyAll())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"allow_package_managers":false,"allow_http":false,"allow_https":false,"allowed_domains":[],"allowed_cidrs":[],"denied_domains":[],"mode":"enforce","allowed_tcp":[],"http_rules":[]}`
	if string(b) != want {
		t.Errorf("JSON = %s\nwant   %s", b, want)
	}
}

func TestFieldError(t *testing.T) {
	if got := (&FieldError{Field: "allowed_cidrs[1]", Message: "bad"}).Error(); got != "allowed_cidrs[1]: bad" {
		t.Errorf("Error() = %q", got)
	}
	if got := (&FieldError{Message: "bad"}).Error(); got != "bad" {
		t.Errorf("Error() = %q", got)
	}
}
