package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestNormalizeMethod(t *testing.T) {
	for _, m := range []string{"GET", "POST", "PROPFIND", "M-SEARCH", "X_CUSTOM.1", "BIND!"} {
		if got, err := NormalizeMethod(m); err != nil || got != m {
			t.Errorf("NormalizeMethod(%q) = %q, %v", m, got, err)
		}
	}
	for m, want := range map[string]string{
		"get":                   `did you mean "GET"?`,
		"Post":                  `did you mean "POST"?`,
		"":                      "empty",
		"*":                     "leave methods out",
		"GET POST":              "not an HTTP method",
		"GET,POST":              "not an HTTP method",
		"G\u00c9T":              "not an HTTP method",
		strings.Repeat("A", 33): "at most 32",
	} {
		if got, err := NormalizeMethod(m); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NormalizeMethod(%q) = %q, %v; want an error saying %q", m, got, err, want)
		}
	}
}

func TestNormalizeHTTPRules(t *testing.T) {
	p, ws, err := Policy{
		AllowHTTPS: true,
		HTTPRules: []HTTPRule{
			{Domain: "API.Example.test.", Methods: []string{"POST", "GET", "POST"}, Paths: []string{"/v1/", "/%7eme", "/v1/"}},
			{Domain: "*.Example.test"},
			{Domain: "bücher.test", Methods: []string{}, Paths: nil},
			{Domain: "api.example.test", Methods: []string{"DELETE"}}, // the same domain again: kept, in order
		},
	}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	want := []HTTPRule{
		{Domain: "api.example.test", Methods: []string{"GET", "POST"}, Paths: []string{"/v1/", "/~me"}},
		{Domain: "*.example.test", Methods: []string{}, Paths: []string{}},
		{Domain: "xn--bcher-kva.test", Methods: []string{}, Paths: []string{}},
		{Domain: "api.example.test", Methods: []string{"DELETE"}, Paths: []string{}},
	}
	if !reflect.DeepEqual(p.HTTPRules, want) {
		t.Errorf("HTTPRules =\n%#v\nwant\n%#v", p.HTTPRules, want)
	}
	if len(ws) != 0 {
		t.Errorf("warnings = %q", ws)
	}
	again, _, err := p.Normalize()
	if err != nil || !reflect.DeepEqual(again, p) {
		t.Errorf("Normalize is not idempotent: %#v, %v", again.HTTPRules, err)
	}
	m := mustCompile(t, p)
	if got := m.Policy(); !reflect.DeepEqual(got, p) {
		t.Errorf("Matcher.Policy() = %#v", got)
	}
	got := m.Policy()
	got.HTTPRules[0].Methods[0] = "CHANGED"
	if m.Policy().HTTPRules[0].Methods[0] != "GET" {
		t.Error("Matcher.Policy() shares the rules' lists with the matcher")
	}
}

// TestHTTPRulesErrors: every bad entry is a *FieldError naming the field, through Parse
// (the API's decoding) as through Normalize.
func TestHTTPRulesErrors(t *testing.T) {
	many := func(n int, f func(i int) string) string {
		var s []string
		for i := range n {
			s = append(s, f(i))
		}
		return strings.Join(s, ",")
	}
	tests := []struct {
		body, field, msg string
	}{
		{`{"http_rules": [{"domain": "a.test", "methods": ["GET", "get"]}]}`, "http_rules[0].methods[1]", `did you mean "GET"?`},
		{`{"http_rules": [{"domain": "a.test"}, {"domain": "b.test", "paths": ["v1/"]}]}`, "http_rules[1].paths[0]", `does not start with "/"`},
		{`{"http_rules": [{"domain": "a.test", "paths": ["/v1/", "/v1/models?limit=1"]}]}`, "http_rules[0].paths[1]", "has a query"},
		{`{"http_rules": [{"domain": "a.test", "paths": ["/v1/#x"]}]}`, "http_rules[0].paths[0]", "fragment"},
		{`{"http_rules": [{"domain": "a.test", "paths": ["/v1/../admin"]}]}`, "http_rules[0].paths[0]", "dot segments"},
		{`{"http_rules": [{"domain": "a.test", "paths": ["/v1/%2e%2e/admin"]}]}`, "http_rules[0].paths[0]", "dot segments"},
		{`{"http_rules": [{"domain": "a.test", "paths": ["/v1/%zz"]}]}`, "http_rules[0].paths[0]", "percent-encoding"},
		{`{"http_rules": [{"domain": "a.test", "paths": [""]}]}`, "http_rules[0].paths[0]", "empty"},
		{`{"http_rules": [{"domain": ""}]}`, "http_rules[0].domain", "missing or empty"},
		{`{"http_rules": [{"methods": ["GET"]}]}`, "http_rules[0].domain", "missing or empty"},
		{`{"http_rules": [{"domain": "*"}]}`, "http_rules[0].domain", `"*" alone`},
		{`{"http_rules": [{"domain": "*.com"}]}`, "http_rules[0].domain", "too broad"},
		{`{"http_rules": [{"domain": "192.0.2.1"}]}`, "http_rules[0].domain", "IP address"},
		{`{"http_rules": [{"domain": "https://a.test/v1"}]}`, "http_rules[0].domain", "give only the host name"},
		{`{"http_rules": [{"domain": "a.test", "method": ["GET"]}]}`, "http_rules[0].method", `unknown field "method"`},
		{`{"http_rules": [{"domain": "a.test", "Methods": ["GET"]}]}`, "http_rules[0].Methods", `did you mean "methods"`},
		{`{"http_rules": [{"domain": "a.test", "domain": "b.test"}]}`, "http_rules[0].domain", "given twice"},
		{`{"http_rules": [{"domain": "a.test"}, null]}`, "http_rules[1]", "is null"},
		{`{"http_rules": [{"domain": "a.test", "methods": ["GET", null]}]}`, "http_rules[0].methods[1]", "is null"},
		{`{"http_rules": [{"domain": "a.test", "methods": "GET"}]}`, "http_rules[0].methods", "must be a JSON list of strings, not string"},
		{`{"http_rules": [{"domain": "a.test", "methods": [1]}]}`, "http_rules[0].methods[0]", "must be a JSON string, not number"},
		{`{"http_rules": {"domain": "a.test"}}`, "http_rules", "must be a JSON list"},
		{`{"http_rules": ["a.test"]}`, "http_rules[0]", "must be a JSON object, not string"},
		{`{"http_rules": [` + many(MaxHTTPRules+1, func(i int) string { return fmt.Sprintf(`{"domain": "h%d.test"}`, i) }) + `]}`,
			"http_rules", "has 1001 entries; the limit is 1000"},
		{`{"http_rules": [{"domain": "a.test", "methods": [` + many(MaxRuleMethods+1, func(i int) string { return fmt.Sprintf(`"M%d"`, i) }) + `]}]}`,
			"http_rules[0].methods", "has 101 methods; the limit is 100"},
		{`{"http_rules": [{"domain": "a.test", "paths": [` + many(MaxRulePaths+1, func(i int) string { return fmt.Sprintf(`"/p%d"`, i) }) + `]}]}`,
			"http_rules[0].paths", "has 101 paths; the limit is 100"},
	}
	for _, tt := range tests {
		name := tt.body
		if len(name) > 90 {
			name = name[:90] + "..."
		}
		t.Run(name, func(t *testing.T) {
			_, _, err := Parse([]byte(tt.body))
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Parse = %v (%T), want a *FieldError", err, err)
			}
			if fe.Field != tt.field || !strings.Contains(fe.Message, tt.msg) {
				t.Errorf("Parse = {%q, %q}, want {%q, ...%q...}", fe.Field, fe.Message, tt.field, tt.msg)
			}
		})
	}
}

// TestHTTPRulesLimitsAtTheLimit: the limits themselves are accepted, and Compile (an
// operator's policy) does not apply them.
func TestHTTPRulesLimitsAtTheLimit(t *testing.T) {
	p := Policy{AllowHTTPS: true}
	for i := range MaxHTTPRules {
		p.HTTPRules = append(p.HTTPRules, HTTPRule{Domain: fmt.Sprintf("h%d.test", i)})
	}
	for i := range MaxRuleMethods {
		p.HTTPRules[0].Methods = append(p.HTTPRules[0].Methods, fmt.Sprintf("M%d", i))
		p.HTTPRules[0].Paths = append(p.HTTPRules[0].Paths, fmt.Sprintf("/p%d", i))
	}
	if _, _, err := p.Normalize(); err != nil {
		t.Fatalf("at the limits: %v", err)
	}
	p.HTTPRules = append(p.HTTPRules, HTTPRule{Domain: "one-more.test"})
	if _, _, err := p.Normalize(); err == nil {
		t.Fatal("over the limit: accepted")
	}
	if _, err := Compile(p, nil); err != nil {
		t.Fatalf("Compile applies the client limits: %v", err)
	}
}

func TestHTTPRulesWarnings(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
		want []string // parts of warnings, in order; nil for none
	}{
		{"allowed", Policy{AllowHTTPS: true, AllowedDomains: []string{"*.example.test"},
			HTTPRules: []HTTPRule{{Domain: "api.example.test"}, {Domain: "*.x.example.test"}}}, nil},
		{"any host", Policy{AllowHTTP: true, HTTPRules: []HTTPRule{{Domain: "api.example.test"}}}, nil},
		{"no web flag", Policy{AllowedDomains: []string{"api.example.test"}, HTTPRules: []HTTPRule{{Domain: "api.example.test"}}},
			[]string{"allowed_domains is set but", "http_rules is set but allow_http, allow_https and allow_package_managers are all off"}},
		{"not in allowed_domains", Policy{AllowHTTPS: true, AllowedDomains: []string{"a.example.test"},
			HTTPRules: []HTTPRule{{Domain: "b.example.test"}, {Domain: "*.example.test"}, {Domain: "a.example.test"}}},
			[]string{"http_rules[0] names b.example.test, which allowed_domains does not (wholly) allow",
				"http_rules[1] names *.example.test, which allowed_domains does not (wholly) allow"}},
		{"denied", Policy{AllowHTTPS: true, DeniedDomains: []string{"*.example.test"}, HTTPRules: []HTTPRule{{Domain: "api.example.test"}}},
			[]string{"http_rules[0] names api.example.test, which denied_domains denies"}},
		{"preset may allow it", Policy{AllowPackageManagers: true, AllowHTTPS: true, AllowedDomains: []string{"a.test"},
			HTTPRules: []HTTPRule{{Domain: "pypi.org"}}}, nil},
	}
	for _, tt := range tests {
		_, ws, err := tt.p.Normalize()
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if len(ws) != len(tt.want) {
			t.Errorf("%s: warnings = %q, want %d", tt.name, ws, len(tt.want))
			continue
		}
		for i, w := range tt.want {
			if !strings.Contains(ws[i], w) {
				t.Errorf("%s: warning %d = %q, want it to say %q", tt.name, i, ws[i], w)
			}
		}
	}
	// Bounded, as the other warnings are.
	p := Policy{AllowHTTPS: true, AllowedDomains: []string{"a.test"}}
	for i := range 50 {
		p.HTTPRules = append(p.HTTPRules, HTTPRule{Domain: fmt.Sprintf("h%d.test", i)})
	}
	if _, ws, _ := p.Normalize(); len(ws) != maxWarningsPerKind+1 || !strings.Contains(ws[len(ws)-1], "45 more") {
		t.Errorf("warnings for 50 entries = %d: %q", len(ws), ws)
	}
}

// TestHTTPRuleJSON pins the wire names and shows that a stored rule survives the store's
// decoding (encoding/json, unknown fields refused).
func TestHTTPRuleJSON(t *testing.T) {
	p, _, err := Parse([]byte(`{"allow_https": true, "http_rules": [{"domain": "a.test", "methods": ["GET"], "paths": ["/v1/"]}, {"domain": "b.test"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(p.HTTPRules)
	if err != nil {
		t.Fatal(err)
	}
	if want := `[{"domain":"a.test","methods":["GET"],"paths":["/v1/"]},{"domain":"b.test","methods":[],"paths":[]}]`; string(b) != want {
		t.Errorf("JSON = %s\nwant   %s", b, want)
	}
	all, _ := json.Marshal(p)
	dec := json.NewDecoder(strings.NewReader(string(all)))
	dec.DisallowUnknownFields()
	var back Policy
	if err := dec.Decode(&back); err != nil || !reflect.DeepEqual(back, p) {
		t.Errorf("round trip: %#v, %v", back, err)
	}
}
