package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// bigPolicy is a policy at the limits: 10,000 allowed domains (half exact names, half
// wildcards), 10,000 CIDRs (half IPv4, half IPv6) and a few denied domains.
func bigPolicy(domains int) Policy {
	p := Policy{AllowHTTPS: true, AllowHTTP: true, AllowPackageManagers: true, DeniedDomains: []string{"bad.svc17.example.test"}}
	for i := range domains / 2 {
		p.AllowedDomains = append(p.AllowedDomains, fmt.Sprintf("host%d.corp%d.test", i, i%97))
		p.AllowedDomains = append(p.AllowedDomains, fmt.Sprintf("*.svc%d.example.test", i))
	}
	for i := range MaxCIDRs / 2 {
		p.AllowedCIDRs = append(p.AllowedCIDRs, fmt.Sprintf("10.%d.%d.0/24", i/256, i%256))
		p.AllowedCIDRs = append(p.AllowedCIDRs, fmt.Sprintf("2001:db8:%x::/48", i))
	}
	return p
}

func BenchmarkDecide(b *testing.B) {
	m, err := Compile(bigPolicy(MaxDomains), testPreset(b))
	if err != nil {
		b.Fatal(err)
	}
	vm, err := Compile(Policy{AllowHTTPS: true, AllowedDomains: []string{"pypi.org"}}, testPreset(b))
	if err != nil {
		b.Fatal(err)
	}
	one := NewEffective(testClassifier, Layered{LayerSession, m})
	two := NewEffective(testClassifier, Layered{LayerSession, m}, Layered{LayerVM, vm})
	pub := netip.MustParseAddr("8.8.8.8")
	cases := []struct {
		name  string
		set   *Effective
		c     Conn
		allow bool
	}{
		{"wildcard-hit", one, Conn{IP: pub, Port: 443, Transport: TCP, Host: "a.b.svc4242.example.test"}, true},
		{"exact-hit", one, Conn{IP: pub, Port: 443, Transport: TCP, Host: "host4242.corp71.test"}, true},
		{"miss", one, Conn{IP: pub, Port: 443, Transport: TCP, Host: "www.nowhere.example.org"}, false},
		{"denied", one, Conn{IP: pub, Port: 443, Transport: TCP, Host: "bad.svc17.example.test"}, false},
		{"preset-hit", one, Conn{IP: pub, Port: 443, Transport: TCP, Host: "pypi.org"}, true},
		{"cidr-hit-v4", one, Conn{IP: netip.MustParseAddr("10.12.34.5"), Port: 5432, Transport: TCP}, true},
		{"cidr-hit-v6", one, Conn{IP: netip.MustParseAddr("2001:db8:1234::5"), Port: 5432, Transport: TCP}, true},
		{"cidr-miss", one, Conn{IP: netip.MustParseAddr("10.250.0.1"), Port: 5432, Transport: TCP}, false},
		{"hard-deny", one, Conn{IP: netip.MustParseAddr("169.254.169.254"), Port: 80, Transport: TCP, Host: "a.svc1.example.test"}, false},
		{"two-layers", two, Conn{IP: pub, Port: 443, Transport: TCP, Host: "pypi.org"}, true},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			if d := tc.set.Decide(tc.c); d.Allow != tc.allow {
				b.Fatalf("Decide(%+v) = %+v, want allow %v", tc.c, d, tc.allow)
			}
			b.ReportAllocs()
			for b.Loop() {
				tc.set.Decide(tc.c)
			}
		})
	}
}

func BenchmarkDecideQuery(b *testing.B) {
	m, err := Compile(bigPolicy(MaxDomains), testPreset(b))
	if err != nil {
		b.Fatal(err)
	}
	s := NewEffective(nil, Layered{LayerSession, m})
	cases := []struct {
		name string
		q    Query
	}{
		{"wildcard-hit", Query{Name: "a.b.svc4242.example.test", Type: QTypeA}},
		{"exact-hit", Query{Name: "host4242.corp71.test", Type: QTypeAAAA}},
		{"miss", Query{Name: "www.nowhere.example.org", Type: QTypeA}},
		{"refused-type", Query{Name: "host4242.corp71.test", Type: QTypeHTTPS}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.DecideQuery(tc.q)
			}
		})
	}
	b.Run("keep-answer", func(b *testing.B) {
		a := netip.MustParseAddr("10.12.34.5")
		b.ReportAllocs()
		for b.Loop() {
			s.KeepAnswer(a)
		}
	})
}

func BenchmarkCompile100kDomains(b *testing.B) {
	p := bigPolicy(100_000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(p, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNormalizeName(b *testing.B) {
	for _, name := range []string{
		"www.example.com",       // already normal: the data path's case
		"www.example.com.",      // trailing dot
		"WWW.Example.COM",       // case folding
		"bücher.example",        // IDNA
		"xn--bcher-kva.example", // punycode, validated
		"a.very.long.name.with.many.labels.under.example.com",
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := NormalizeName(name); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// rulesPolicy is a policy at the http_rules limits: 1,000 entries (half exact names, half
// wildcards), the first with 100 methods and 100 paths.
func rulesPolicy() Policy {
	p := Policy{AllowHTTPS: true}
	for i := range MaxHTTPRules / 2 {
		p.HTTPRules = append(p.HTTPRules,
			HTTPRule{Domain: fmt.Sprintf("api%d.example.test", i), Methods: []string{"GET", "POST"}, Paths: []string{"/v1/", "/v2/models"}},
			HTTPRule{Domain: fmt.Sprintf("*.svc%d.example.test", i), Methods: []string{"GET"}})
	}
	for i := range MaxRuleMethods - 2 {
		p.HTTPRules[0].Methods = append(p.HTTPRules[0].Methods, fmt.Sprintf("M%d", i))
	}
	for i := range MaxRulePaths - 2 {
		p.HTTPRules[0].Paths = append(p.HTTPRules[0].Paths, fmt.Sprintf("/p%d/", i))
	}
	return p
}

func BenchmarkDecideRequest(b *testing.B) {
	m, err := Compile(rulesPolicy(), testPreset(b))
	if err != nil {
		b.Fatal(err)
	}
	vm, err := Compile(Policy{AllowHTTPS: true, HTTPRules: []HTTPRule{{Domain: "*.example.test", Methods: []string{"GET", "POST"}}}}, testPreset(b))
	if err != nil {
		b.Fatal(err)
	}
	one := NewEffective(testClassifier, Layered{LayerSession, m})
	two := NewEffective(testClassifier, Layered{LayerSession, m}, Layered{LayerVM, vm})
	pub := netip.MustParseAddr("203.0.113.10")
	cases := []struct {
		name  string
		set   *Effective
		r     Request
		allow bool
	}{
		{"allowed", one, Request{Host: "api4242.example.test", Port: 443, Method: "POST", Path: "/v1/chat/completions"}, false},
		{"allowed-first-entry", one, Request{Host: "api0.example.test", Port: 443, Method: "GET", Path: "/p97/x?limit=10"}, true},
		{"allowed-wildcard", one, Request{Host: "a.b.svc417.example.test", Port: 443, Method: "GET", Path: "/anything/at/all"}, true},
		{"with-address", one, Request{Host: "api17.example.test", IP: pub, Port: 443, Method: "GET", Path: "/v2/models/gpt"}, true},
		{"dot-segments", one, Request{Host: "api17.example.test", Port: 443, Method: "GET", Path: "/v1/%2e%2e/admin"}, false},
		{"encoded-slash", one, Request{Host: "api17.example.test", Port: 443, Method: "GET", Path: "/v1/a%2Fb/c"}, true},
		{"method-denied", one, Request{Host: "api17.example.test", Port: 443, Method: "DELETE", Path: "/v1/x"}, false},
		{"no-entry", one, Request{Host: "www.other.test", Port: 443, Method: "GET", Path: "/x"}, true},
		{"two-layers", two, Request{Host: "api17.example.test", Port: 443, Method: "POST", Path: "/v1/x"}, true},
		{"long-path", one, Request{Host: "api17.example.test", Port: 443, Method: "GET", Path: "/v1/" + strings.Repeat("segment/", 50)}, true},
	}
	cases[0].allow = true // "/v1/" holds /v1/chat/completions
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			if d := tc.set.DecideRequest(tc.r); d.Allow != tc.allow {
				b.Fatalf("DecideRequest(%+v) = %+v, want allow %v", tc.r, d, tc.allow)
			}
			b.ReportAllocs()
			for b.Loop() {
				tc.set.DecideRequest(tc.r)
			}
		})
	}
	b.Run("intercepts", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			one.Intercepts("a.b.svc417.example.test")
		}
	})
	b.Run("decide-intercepted-conn", func(b *testing.B) {
		c := Conn{Host: "api17.example.test", IP: pub, Port: 443, Transport: TCP}
		b.ReportAllocs()
		for b.Loop() {
			one.Decide(c)
		}
	})
}
