package policy

import (
	"fmt"
	"net/netip"
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
