package policy

import (
	"encoding/json"
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func FuzzNormalizeName(f *testing.F) {
	for _, s := range []string{
		"example.com", "EXAMPLE.com.", "bücher.example", "ｅｘａｍｐｌｅ．ｃｏｍ", "xn--bcher-kva.example",
		"a..b", ".", "", "1.2.3.4", "[::1]", "127.1", "0x7f.1", "under_score.test", "-a.test", "a-.test",
		"r3---sn.test", "faß.example", "\u05d0.example", "xn--zz.test", "ex\u00adample.com", "*.a.test",
		strings.Repeat("a", 64) + ".test", strings.Repeat("ab.", 90),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizeName(s)
		if err != nil {
			if n != "" {
				t.Errorf("NormalizeName(%q) = %q with error %v", s, n, err)
			}
			return
		}
		if !isNormalName(n) {
			t.Fatalf("NormalizeName(%q) = %q, not a lower-case LDH name of valid lengths", s, n)
		}
		again, err := NormalizeName(n)
		if err != nil || again != n {
			t.Fatalf("not idempotent: NormalizeName(%q) = %q, then %q, %v", s, n, again, err)
		}
		if up, err := NormalizeName(strings.ToUpper(n)); err != nil || up != n {
			t.Fatalf("case matters: NormalizeName(%q) = %q, %v; want %q", strings.ToUpper(n), up, err, n)
		}
		if dot, err := NormalizeName(n + "."); err != nil || dot != n {
			t.Fatalf("trailing dot matters: NormalizeName(%q) = %q, %v; want %q", n+".", dot, err, n)
		}
		if p, err := NormalizePattern(n); err != nil || p != n {
			t.Fatalf("NormalizePattern(%q) = %q, %v; a name is a pattern", n, p, err)
		}
	})
}

// isNormalName is an independent statement of what NormalizeName may return.
func isNormalName(s string) bool {
	if s == "" || len(s) > maxNameLen {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > maxLabelLen || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return !ipLiteral(s)
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"allow_https": true, "allowed_domains": ["*.example.com", "PyPI.org."]}`,
		`{"allowed_cidrs": ["10.0.0.1/8"]}`, `{"allowed_cidrs": ["::ffff:10.0.0.0/104", "192.0.2.1"]}`,
		`{"mode": "monitor", "denied_domains": ["bücher.example"]}`, `{"allowed_domain": []}`,
		`{} {}`, `null`, `{"allow_http": "yes"}`, `[]`, `{"allowed_domains": ["a.test", "A.TEST"]}`,
		`{"allow_https": true, "http_rules": [{"domain": "API.example.test", "methods": ["POST", "GET"], "paths": ["/v1/", "/%7eme"]}]}`,
		`{"http_rules": [{"domain": "*.example.test"}, {"domain": "a.test", "methods": ["get"]}]}`,
		`{"http_rules": [{"domain": "a.test", "paths": ["/v1/../x", "/v1?x", "v1"]}]}`,
		`{"http_rules": [null]}`, `{"http_rules": [{"domain": "a.test", "domain": "b.test"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, _, err := Parse(data)
		if err != nil {
			if _, ok := err.(*FieldError); !ok {
				t.Fatalf("Parse error %v is %T, not *FieldError", err, err)
			}
			return
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		q, _, err := Parse(b)
		if err != nil {
			t.Fatalf("re-parsing %s: %v", b, err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip changed the policy:\n%#v\n%#v", p, q)
		}
		if _, err := Compile(p, nil); err != nil {
			t.Fatalf("Compile of a parsed policy: %v", err)
		}
	})
}

func FuzzParseCIDR(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "10.0.0.1/8", "10.0.0.1", "::ffff:10.0.0.0/104", "::ffff:0:0/96",
		"2001:db8::/32", "fe80::1%eth0", "::/0", "0.0.0.0/0", "example.com", "1.2.3.4/33"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseCIDR(s)
		if err != nil {
			return
		}
		if p.Masked() != p || p.Addr().Is4In6() && p.Bits() >= 96 || p.Addr().Zone() != "" {
			t.Fatalf("ParseCIDR(%q) = %v: not canonical", s, p)
		}
		again, err := ParseCIDR(p.String())
		if err != nil || again != p {
			t.Fatalf("ParseCIDR(%q) = %v, then ParseCIDR(%q) = %v, %v", s, p, p.String(), again, err)
		}
		set := newPrefixSet([]netip.Prefix{p})
		if set.lookup(p.Addr()) != 0 || set.lookup(lastAddr(p)) != 0 {
			t.Fatalf("the set of %v does not hold its own ends", p)
		}
	})
}

// FuzzDecideRequest: whatever the path and method, a request that the rule "GET /v1/" allows
// has method GET and a path inside /v1/ in both readings, decoded and resolved; no input
// panics.
func FuzzDecideRequest(f *testing.F) {
	for _, s := range []string{"/v1/x", "/v1/../admin", "/v1/%2e%2e/admin", "/v1/..%2Fadmin", "/v1/..;/admin", "/v1//../a",
		`/v1/..\a`, "/v1", "/v1x", "/%76%31/x", "*", "/v1/%C0%AE%C0%AE/", "/v1/a?b=/../c"} {
		f.Add("GET", s)
	}
	f.Add("get", "/v1/x")
	e := NewEffective(nil, Layered{LayerSession, mustCompile(f, Policy{AllowHTTPS: true,
		HTTPRules: []HTTPRule{{Domain: "api.example.test", Methods: []string{"GET"}, Paths: []string{"/v1/"}}}})})
	f.Fuzz(func(t *testing.T, method, path string) {
		d := e.DecideRequest(Request{Host: "api.example.test", Port: 443, Method: method, Path: path})
		if !d.Allow {
			return
		}
		if d.Reason != ReasonHTTPRules || method != "GET" {
			t.Fatalf("DecideRequest(%q, %q) = %+v", method, path, d)
		}
		rp := readRequestPath(path, nil, nil)
		for _, p := range [][]byte{rp.strict, rp.loose} {
			if !strings.HasPrefix(string(p), "/v1/") {
				t.Fatalf("DecideRequest(%q) allowed, but a reading is %q", path, p)
			}
		}
		raw, _, _ := strings.Cut(path, "?")
		if dec, err := url.PathUnescape(raw); err == nil && !strings.Contains(dec, `\`) {
			// However the decoded path is resolved, with or without merging "//", it stays in /v1/.
			for _, p := range []string{dec, strings.ReplaceAll(dec, "//", "/")} {
				if r := removeDotSegments(p); !strings.HasPrefix(r, "/v1/") && strings.Count(dec, "/") == strings.Count(raw, "/") {
					t.Fatalf("DecideRequest(%q) allowed, but RFC 3986 resolves %q to %q", path, p, r)
				}
			}
		}
	})
}
