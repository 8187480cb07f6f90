package policy

import (
	"strings"
	"testing"
)

func req(host, method, path string) Request {
	return Request{Host: host, Port: 443, Method: method, Path: path}
}

// TestDecideRequestOneLayer: matching of one layer's entries.
func TestDecideRequestOneLayer(t *testing.T) {
	p := Policy{
		AllowHTTPS:     true,
		AllowHTTP:      true,
		AllowedDomains: []string{"*.example.test", "files.other.test", "plain.test"},
		DeniedDomains:  []string{"bad.example.test"},
		HTTPRules: []HTTPRule{
			{Domain: "api.example.test", Methods: []string{"GET", "POST"}, Paths: []string{"/v1", "/static/"}},
			{Domain: "api.example.test", Methods: []string{"DELETE"}, Paths: []string{"/v1/tmp/"}},
			{Domain: "*.svc.example.test", Methods: []string{"GET"}},
			{Domain: "bad.example.test"},
			{Domain: "files.other.test", Paths: []string{"/pub/"}},
			{Domain: "not-allowed.test", Methods: []string{"GET"}},
		},
	}
	e := NewEffective(testClassifier, Layered{LayerSession, mustCompile(t, p)})
	r0 := "http_rules[0] api.example.test methods GET,POST paths /static/,/v1"
	r1 := "http_rules[1] api.example.test methods DELETE paths /v1/tmp/"
	r2 := "http_rules[2] *.svc.example.test methods GET any path"
	r4 := "http_rules[4] files.other.test any method paths /pub/"
	tests := []struct {
		name string
		r    Request
		w    want
	}{
		{"allowed", req("api.example.test", "GET", "/v1/models"), want{allow: true, reason: ReasonHTTPRules, rule: r0}},
		{"prefix itself", req("api.example.test", "GET", "/v1"), want{allow: true, reason: ReasonHTTPRules, rule: r0}},
		{"prefix with slash", req("api.example.test", "GET", "/v1/"), want{allow: true, reason: ReasonHTTPRules, rule: r0}},
		{"not on a segment boundary", req("api.example.test", "GET", "/v1x"), want{reason: ReasonPathNotAllowed, rule: r0}},
		{"directory prefix needs the slash", req("api.example.test", "GET", "/static"), want{reason: ReasonPathNotAllowed}},
		{"directory prefix", req("api.example.test", "GET", "/static/a.css"), want{allow: true, reason: ReasonHTTPRules, rule: r0}},
		{"query ignored", req("api.example.test", "GET", "/v1/models?next=/admin/../x"), want{allow: true, reason: ReasonHTTPRules}},
		{"query cannot widen", req("api.example.test", "GET", "/admin?/v1/"), want{reason: ReasonPathNotAllowed}},
		{"other path", req("api.example.test", "GET", "/admin"), want{reason: ReasonPathNotAllowed, rule: r0}},
		{"dot segments", req("api.example.test", "GET", "/v1/../admin"), want{reason: ReasonPathNotAllowed}},
		{"encoded dot segments", req("api.example.test", "GET", "/v1/%2e%2e/admin"), want{reason: ReasonPathNotAllowed}},
		{"upper-case encoded dots", req("api.example.test", "GET", "/v1/%2E%2E/admin"), want{reason: ReasonPathNotAllowed}},
		{"mixed dots", req("api.example.test", "GET", "/v1/.%2e/admin"), want{reason: ReasonPathNotAllowed}},
		{"dots that stay inside", req("api.example.test", "GET", "/v1/a/../b"), want{allow: true, reason: ReasonHTTPRules}},
		{"dots into the prefix", req("api.example.test", "GET", "/x/../v1/b"), want{allow: true, reason: ReasonHTTPRules}},
		{"encoded slash out", req("api.example.test", "GET", "/v1/..%2Fadmin"), want{reason: ReasonPathNotAllowed}},
		{"encoded backslash out", req("api.example.test", "GET", "/v1/..%5cadmin"), want{reason: ReasonPathNotAllowed}},
		{"backslash out", req("api.example.test", "GET", `/v1/..\admin`), want{reason: ReasonPathNotAllowed}},
		{"tomcat dot-dot-semicolon", req("api.example.test", "GET", "/v1/..;/admin"), want{reason: ReasonPathNotAllowed}},
		{"merged slashes", req("api.example.test", "GET", "/v1//../admin"), want{reason: ReasonPathNotAllowed}},
		{"encoded slash in", req("api.example.test", "GET", "/v1%2Fmodels"), want{reason: ReasonPathNotAllowed}},
		{"encoded slash inside a segment", req("api.example.test", "GET", "/v1/a%2Fb"), want{allow: true, reason: ReasonHTTPRules}},
		{"double encoding is data", req("api.example.test", "GET", "/v1/%252e%252e/admin"), want{allow: true, reason: ReasonHTTPRules}},
		{"encoded letters", req("api.example.test", "GET", "/%76%31/models"), want{allow: true, reason: ReasonHTTPRules}},
		{"path case matters", req("api.example.test", "GET", "/V1/models"), want{reason: ReasonPathNotAllowed}},
		{"method", req("api.example.test", "PUT", "/v1/models"), want{reason: ReasonMethodNotAllowed, rule: r0}},
		{"lower-case method", req("api.example.test", "get", "/v1/models"), want{reason: ReasonMethodNotAllowed}},
		{"second entry", req("api.example.test", "DELETE", "/v1/tmp/x"), want{allow: true, reason: ReasonHTTPRules, rule: r1}},
		{"method of another entry", req("api.example.test", "DELETE", "/v1/models"), want{reason: ReasonMethodNotAllowed, rule: r0}},
		{"host case", req("API.Example.TEST", "GET", "/v1/models"), want{allow: true, reason: ReasonHTTPRules, rule: r0}},
		{"trailing dot", req("api.example.test.", "GET", "/v1/models"), want{allow: true, reason: ReasonHTTPRules, rule: r0}},
		{"wildcard", req("a.b.svc.example.test", "GET", "/anything"), want{allow: true, reason: ReasonHTTPRules, rule: r2}},
		{"wildcard method", req("a.svc.example.test", "POST", "/anything"), want{reason: ReasonMethodNotAllowed, rule: r2}},
		{"wildcard does not hold its parent", req("svc.example.test", "POST", "/x"), want{allow: true, reason: ReasonAllowedDomains}},
		{"host without entries", req("www.example.test", "PATCH", "/x"), want{allow: true, reason: ReasonAllowedDomains}},
		{"host without entries, bad path", req("www.example.test", "GET", "/%zz"), want{allow: true, reason: ReasonAllowedDomains}},
		{"denied_domains win", req("bad.example.test", "GET", "/"), want{reason: ReasonDeniedDomain}},
		{"host rules first", req("not-allowed.test", "GET", "/"), want{reason: ReasonHostNotListed}},
		{"any method", req("files.other.test", "PROPFIND", "/pub/x"), want{allow: true, reason: ReasonHTTPRules, rule: r4}},
		{"any method, path", req("files.other.test", "GET", "/priv/x"), want{reason: ReasonPathNotAllowed, rule: r4}},
		{"bad path", req("api.example.test", "GET", "/v1/%zz"), want{reason: ReasonBadPath, rule: badPathPercent.String()}},
		{"bad path: no slash", req("api.example.test", "GET", "v1/models"), want{reason: ReasonBadPath, rule: badPathNoSlash.String()}},
		{"bad path: absolute form", req("api.example.test", "GET", "https://api.example.test/v1/"), want{reason: ReasonBadPath}},
		{"bad path: NUL", req("api.example.test", "GET", "/v1/a%00"), want{reason: ReasonBadPath, rule: badPathControl.String()}},
		{"bad path: overlong dot", req("api.example.test", "GET", "/v1/%C0%AE%C0%AE/admin"), want{reason: ReasonBadPath, rule: badPathUTF8.String()}},
		{"asterisk-form", req("api.example.test", "GET", "*"), want{reason: ReasonPathNotAllowed, rule: ruleStar}},
		{"bad host", req("bad host", "GET", "/"), want{reason: ReasonBadName, layer: LayerHard}},
		{"plain HTTP", Request{Host: "api.example.test", Port: 80, Method: "POST", Path: "/v1/x"}, want{allow: true, reason: ReasonHTTPRules}},
		{"other port", Request{Host: "api.example.test", Port: 8443, Method: "GET", Path: "/v1/x"}, want{reason: ReasonPort}},
		{"hard deny by address", Request{Host: "api.example.test", IP: ip("169.254.169.254"), Port: 443, Method: "GET", Path: "/v1/"}, want{reason: ReasonHardDeny, layer: LayerHard}},
		{"private address", Request{Host: "api.example.test", IP: ip("198.51.100.7"), Port: 443, Method: "GET", Path: "/v1/"}, want{reason: ReasonNotPublic}},
		{"public address", Request{Host: "api.example.test", IP: ip("203.0.113.7"), Port: 443, Method: "GET", Path: "/v1/"}, want{allow: true, reason: ReasonHTTPRules}},
	}
	for _, tt := range tests {
		check(t, tt.name, e.DecideRequest(tt.r), tt.w)
	}
}

// TestDecideRequestAsterisk: "*" (OPTIONS *) passes only an entry without paths.
func TestDecideRequestAsterisk(t *testing.T) {
	e := NewEffective(testClassifier, Layered{LayerSession, mustCompile(t, Policy{AllowHTTPS: true,
		HTTPRules: []HTTPRule{{Domain: "a.test", Methods: []string{"OPTIONS"}}}})})
	check(t, "options *", e.DecideRequest(req("a.test", "OPTIONS", "*")), want{allow: true, reason: ReasonHTTPRules})
}

// TestDecideRequestLayers: every layer with entries for the host must allow; a layer
// without entries for it does not restrict it; monitor layers only record.
func TestDecideRequestLayers(t *testing.T) {
	web := func(rules ...HTTPRule) Policy { return Policy{AllowHTTPS: true, HTTPRules: rules} }
	monitor := func(p Policy) Policy { p.Mode = Monitor; return p }
	getV1 := HTTPRule{Domain: "api.example.test", Methods: []string{"GET", "POST"}, Paths: []string{"/v1/"}}
	postAny := HTTPRule{Domain: "*.example.test", Methods: []string{"POST"}}
	other := HTTPRule{Domain: "other.test", Methods: []string{"GET"}}
	tests := []struct {
		name        string
		session, vm Policy
		r           Request
		w           want
	}{
		{"both allow", web(getV1), web(postAny), req("api.example.test", "POST", "/v1/x"), want{allow: true, reason: ReasonHTTPRules, rule: "http_rules[0] api.example.test methods GET,POST paths /v1/"}},
		{"vm denies the method", web(getV1), web(postAny), req("api.example.test", "GET", "/v1/x"), want{reason: ReasonMethodNotAllowed, layer: LayerVM}},
		{"session denies the path", web(getV1), web(postAny), req("api.example.test", "POST", "/v2/x"), want{reason: ReasonPathNotAllowed}},
		{"vm has no entry for the host", web(getV1), web(other), req("api.example.test", "GET", "/v1/x"), want{allow: true, reason: ReasonHTTPRules}},
		{"session has no entry for the host", web(other), web(getV1), req("api.example.test", "GET", "/v1/x"), want{allow: true, reason: ReasonHTTPRules, layer: LayerVM}},
		{"session has no entry, vm denies", web(other), web(getV1), req("api.example.test", "GET", "/v2/x"), want{reason: ReasonPathNotAllowed, layer: LayerVM}},
		{"no entries at all", web(), web(), req("api.example.test", "DELETE", "/"), want{allow: true, reason: ReasonAllowHTTPS}},
		{"vm denies the host", web(getV1), Policy{AllowHTTPS: true, AllowedDomains: []string{"other.test"}}, req("api.example.test", "GET", "/v1/x"), want{reason: ReasonHostNotListed, layer: LayerVM}},
		{"monitor session denies", monitor(web(getV1)), web(), req("api.example.test", "GET", "/v2/"), want{allow: true, wouldDeny: true, reason: ReasonPathNotAllowed}},
		{"monitor vm denies, session allows", web(getV1), monitor(web(postAny)), req("api.example.test", "GET", "/v1/"), want{allow: true, wouldDeny: true, reason: ReasonMethodNotAllowed, layer: LayerVM}},
		{"monitor never loosens enforce", monitor(web(postAny)), web(getV1), req("api.example.test", "GET", "/v2/"), want{reason: ReasonPathNotAllowed, layer: LayerVM}},
		{"monitor bad path", monitor(web(getV1)), web(), req("api.example.test", "GET", "/%zz"), want{allow: true, wouldDeny: true, reason: ReasonBadPath}},
	}
	for _, tt := range tests {
		e := NewEffective(testClassifier, Layered{LayerVM, mustCompile(t, tt.vm)}, Layered{LayerSession, mustCompile(t, tt.session)})
		check(t, tt.name, e.DecideRequest(tt.r), tt.w)
	}
	// No layer: fails closed, as Decide.
	check(t, "no layer", NewEffective(nil).DecideRequest(req("a.test", "GET", "/")), want{reason: ReasonNoPolicy, layer: LayerDefault})
}

// TestDecideRequestReadingsFromTwoEntries: a path that servers read two ways is allowed when
// each reading is allowed, by whichever entries.
func TestDecideRequestReadingsFromTwoEntries(t *testing.T) {
	e := NewEffective(testClassifier, Layered{LayerSession, mustCompile(t, Policy{AllowHTTPS: true, HTTPRules: []HTTPRule{
		{Domain: "a.test", Paths: []string{"/x/"}},
		{Domain: "a.test", Paths: []string{"/y/"}},
	}})})
	// strict: /x/..%2Fy/z (inside /x/); loose: /y/z (inside /y/).
	check(t, "both readings allowed", e.DecideRequest(req("a.test", "GET", "/x/..%2Fy/z")),
		want{allow: true, reason: ReasonHTTPRules, rule: "http_rules[0] a.test any method paths /x/"})
	check(t, "loose reading outside", e.DecideRequest(req("a.test", "GET", "/x/..%2Fz")), want{reason: ReasonPathNotAllowed})
}

// TestDecideInterceptionUnavailable: until the gateway intercepts, a connection to an
// intercepted host on 80 or 443 is denied unless its caller intercepts it; nothing else
// changes.
func TestDecideInterceptionUnavailable(t *testing.T) {
	rules := Policy{AllowHTTPS: true, AllowHTTP: true, AllowedCIDRs: []string{"198.51.100.0/24"},
		HTTPRules: []HTTPRule{{Domain: "api.example.test", Methods: []string{"GET"}}, {Domain: "*.corp.test"}}}
	plain := Policy{AllowHTTPS: true, AllowHTTP: true}
	mon := rules
	mon.Mode = Monitor
	rule0 := "http_rules[0] api.example.test methods GET any path"
	session := NewEffective(testClassifier, Layered{LayerSession, mustCompile(t, rules)}, Layered{LayerVM, mustCompile(t, plain)})
	vm := NewEffective(testClassifier, Layered{LayerSession, mustCompile(t, plain)}, Layered{LayerVM, mustCompile(t, rules)})
	single := NewEffective(testClassifier, Layered{LayerSession, mustCompile(t, rules)})
	monitored := NewEffective(testClassifier, Layered{LayerSession, mustCompile(t, mon)}, Layered{LayerVM, mustCompile(t, plain)})
	both := NewEffective(testClassifier, Layered{LayerSession, mustCompile(t, mon)}, Layered{LayerVM, mustCompile(t, rules)})
	pub := ip("203.0.113.9")
	tests := []struct {
		name string
		e    *Effective
		c    Conn
		w    want
	}{
		{"443", session, Conn{Host: "api.example.test", Port: 443}, want{reason: ReasonInterceptionUnavailable, rule: rule0}},
		{"80", session, Conn{Host: "api.example.test", Port: 80, Transport: TCP}, want{reason: ReasonInterceptionUnavailable}},
		{"with an address", session, Conn{Host: "api.example.test", IP: pub, Port: 443}, want{reason: ReasonInterceptionUnavailable}},
		{"inside allowed_cidrs", single, Conn{Host: "api.example.test", IP: ip("198.51.100.1"), Port: 443}, want{reason: ReasonInterceptionUnavailable}},
		{"wildcard", session, Conn{Host: "db.eu.corp.test", Port: 443}, want{reason: ReasonInterceptionUnavailable, rule: "http_rules[1] *.corp.test any method any path"}},
		{"host case", session, Conn{Host: "API.example.test.", Port: 443}, want{reason: ReasonInterceptionUnavailable}},
		{"from the vm", vm, Conn{Host: "api.example.test", Port: 443}, want{reason: ReasonInterceptionUnavailable, layer: LayerVM}},
		{"intercepted by the caller", session, Conn{Host: "api.example.test", Port: 443, Intercepted: true}, want{allow: true, reason: ReasonAllowHTTPS}},
		{"another host", session, Conn{Host: "www.example.test", Port: 443}, want{allow: true, reason: ReasonAllowHTTPS}},
		{"another port", single, Conn{Host: "api.example.test", IP: ip("198.51.100.1"), Port: 5432}, want{allow: true, reason: ReasonAllowedCIDRs}},
		{"a denial stays a denial", session, Conn{Host: "api.example.test", Port: 22}, want{reason: ReasonPort}},
		{"monitor layer only", monitored, Conn{Host: "api.example.test", Port: 443}, want{allow: true, wouldDeny: true, reason: ReasonInterceptionUnavailable}},
		{"an enforce layer wins", both, Conn{Host: "api.example.test", Port: 443}, want{reason: ReasonInterceptionUnavailable, layer: LayerVM}},
	}
	for _, tt := range tests {
		check(t, tt.name, tt.e.Decide(tt.c), tt.w)
	}
	if d := monitored.Decide(Conn{Host: "api.example.test", Port: 443}); d.Mode != Monitor {
		t.Errorf("monitor layer only: Mode = %q", d.Mode)
	}
	// A layer's own denial in monitor mode is kept as the reason.
	monDeny := NewEffective(testClassifier, Layered{LayerSession, mustCompile(t, Policy{Mode: Monitor, HTTPRules: rules.HTTPRules})}, Layered{LayerVM, mustCompile(t, plain)})
	check(t, "monitor host denial kept", monDeny.Decide(Conn{Host: "api.example.test", Port: 443}), want{allow: true, wouldDeny: true, reason: ReasonHTTPSOff})
	// DNS is not changed: the name still resolves, the connection is what is refused.
	if d := session.DecideQuery(Query{Name: "api.example.test", Type: QTypeA}); !d.Allow {
		t.Errorf("DecideQuery of an intercepted host: %+v", d)
	}
}

func TestIntercepts(t *testing.T) {
	e := NewEffective(testClassifier,
		Layered{LayerSession, mustCompile(t, Policy{AllowHTTPS: true, HTTPRules: []HTTPRule{{Domain: "api.example.test"}}})},
		Layered{LayerVM, mustCompile(t, Policy{Mode: Monitor, HTTPRules: []HTTPRule{{Domain: "*.corp.test"}}})},
		Layered{LayerVM, nil})
	for host, want := range map[string]bool{
		"api.example.test": true, "API.EXAMPLE.TEST.": true, "x.api.example.test": false, "example.test": false,
		"a.corp.test": true, "a.b.corp.test": true, "corp.test": false, "": false, "bad host": false, "192.0.2.1": false,
	} {
		if got := e.Intercepts(host); got != want {
			t.Errorf("Intercepts(%q) = %v, want %v", host, got, want)
		}
	}
	if NewEffective(nil).Intercepts("a.test") {
		t.Error("no layer intercepts a.test")
	}
}

// TestWithIntercepted: the extra domains (a tenant's secrets) are intercepted too, and a
// connection that would splice them is denied from the hard layer.
func TestWithIntercepted(t *testing.T) {
	base := NewEffective(testClassifier, Layered{LayerSession, mustCompile(t, Policy{AllowHTTPS: true})})
	secrets, err := CompileDomains([]string{"API.Vendor.test", "*.vendor.test", "api.vendor.test"}, []string{"secret A api.vendor.test", "secret B *.vendor.test", "secret C"})
	if err != nil {
		t.Fatal(err)
	}
	e := base.WithIntercepted(secrets)
	if base.Intercepts("api.vendor.test") || !e.Intercepts("api.vendor.test") || !e.Intercepts("x.vendor.test") || e.Intercepts("vendor.test") {
		t.Error("Intercepts does not follow the extra domains")
	}
	check(t, "secret domain spliced", e.Decide(Conn{Host: "api.vendor.test", Port: 443}),
		want{reason: ReasonInterceptionUnavailable, rule: "secret A api.vendor.test", layer: LayerHard})
	check(t, "secret domain intercepted", e.Decide(Conn{Host: "api.vendor.test", Port: 443, Intercepted: true}), want{allow: true, reason: ReasonAllowHTTPS})
	check(t, "base unchanged", base.Decide(Conn{Host: "api.vendor.test", Port: 443}), want{allow: true, reason: ReasonAllowHTTPS})
	check(t, "request to a secret domain", e.DecideRequest(req("api.vendor.test", "PUT", "/x")), want{allow: true, reason: ReasonAllowHTTPS})
	if e.WithIntercepted(nil) != e {
		t.Error("WithIntercepted(nil) is not a no-op")
	}
	if rule, ok := secrets.Match("a.b.vendor.test"); !ok || rule != "secret B *.vendor.test" {
		t.Errorf("Match = %q, %v", rule, ok)
	}
	if _, ok := (*Domains)(nil).Match("a.test"); ok {
		t.Error("a nil *Domains matches")
	}
	if d, err := CompileDomains([]string{"a.test"}, nil); err != nil {
		t.Fatal(err)
	} else if rule, _ := d.Match("a.test"); rule != "intercepted a.test" {
		t.Errorf("default rule = %q", rule)
	}
	if _, err := CompileDomains([]string{"ok.test", "*"}, nil); err == nil || !strings.Contains(err.Error(), "domains[1]") {
		t.Errorf("CompileDomains of a bad pattern: %v", err)
	}
	if _, err := CompileDomains([]string{"a.test"}, []string{}); err == nil {
		t.Error("CompileDomains with mismatched rules: no error")
	}
}

// TestEnvInterception: the Env says whether the gateway intercepts, and warns and explains
// while it does not.
func TestEnvInterception(t *testing.T) {
	env, err := NewEnv(testClassifier, testPreset(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	p := Policy{AllowHTTPS: true, HTTPRules: []HTTPRule{{Domain: "api.example.test"}}}
	_, ws, err := env.Normalize(p)
	if err != nil || len(ws) != 1 || !strings.Contains(ws[0], "interception_unavailable") {
		t.Errorf("Normalize without interception: %q, %v", ws, err)
	}
	x := env.Explain(NamedPolicy{Layer: LayerSession, Policy: p})
	if !strings.Contains(strings.Join(x.Notes, "\n"), "does not intercept yet") || !strings.HasPrefix(x.Notes[len(x.Notes)-1], "Hard denials") {
		t.Errorf("Explain without interception: notes %q", x.Notes)
	}
	on := env.WithInterception()
	if env.Interception() || !on.Interception() || (*Env)(nil).Interception() {
		t.Error("Interception() does not follow WithInterception")
	}
	if _, ws, _ := on.Normalize(p); len(ws) != 0 {
		t.Errorf("Normalize with interception: %q", ws)
	}
	if x := on.Explain(NamedPolicy{Layer: LayerSession, Policy: p}); strings.Contains(strings.Join(x.Notes, "\n"), "does not intercept yet") {
		t.Errorf("Explain with interception: %q", x.Notes)
	}
	if _, ws, _ := env.Normalize(Policy{AllowHTTPS: true}); len(ws) != 0 {
		t.Errorf("Normalize without rules: %q", ws)
	}
}

func TestDecideRequestAllocs(t *testing.T) {
	e := NewEffective(testClassifier,
		Layered{LayerSession, mustCompile(t, Policy{AllowHTTPS: true, HTTPRules: []HTTPRule{{Domain: "api.example.test", Methods: []string{"GET"}, Paths: []string{"/v1/"}}}})},
		Layered{LayerVM, mustCompile(t, Policy{AllowHTTPS: true, HTTPRules: []HTTPRule{{Domain: "*.example.test", Methods: []string{"GET", "POST"}}}})})
	for _, r := range []Request{
		req("api.example.test", "GET", "/v1/models?x=1"),
		req("api.example.test", "GET", "/v1/%2e%2e/admin"),
		req("api.example.test", "POST", "/v1/x"),
		req("api.example.test", "GET", "/v1/..%2Fx/"+strings.Repeat("a", 150)),
		req("api.example.test", "GET", "/%zz"),
		req("www.example.test", "GET", "/"),
	} {
		if n := testing.AllocsPerRun(100, func() { e.DecideRequest(r) }); n != 0 {
			t.Errorf("DecideRequest(%+v) allocates %v times", r, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { e.Intercepts("a.b.example.test") }); n != 0 {
		t.Errorf("Intercepts allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { e.Decide(Conn{Host: "api.example.test", IP: ip("203.0.113.1"), Port: 443}) }); n != 0 {
		t.Errorf("Decide of an intercepted host allocates %v times", n)
	}
}
