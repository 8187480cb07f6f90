package policy

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
)

// testPreset uses PyPI's names and made-up hosts under .test: tests never name the hosts of
// registries that the build machine reaches.
func testPreset(t testing.TB) *Preset {
	t.Helper()
	p, err := newPreset(map[string][]string{
		"pip": {"pypi.org", "files.pythonhosted.org"},
		"uv":  {"pypi.org"},
		"npm": {"registry.npm.test"},
		"apt": {"*.deb.test"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustCompile(t testing.TB, p Policy) *Matcher {
	t.Helper()
	m, err := Compile(p, testPreset(t))
	if err != nil {
		t.Fatalf("Compile(%+v): %v", p, err)
	}
	return m
}

// testClassifier is the lab setup of DESIGN §10: fake public servers on 203.0.113.0/24 and
// 127.0.0.0/26, egressd itself on 127.0.0.1.
var testClassifier = &Classifier{
	Public: mustPrefixes("203.0.113.0/24", "127.0.0.0/26"),
	Self:   []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:8470"), netip.MustParseAddrPort("127.0.0.1:8471")},
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// want is the expected Decision, written compactly.
type want struct {
	allow, wouldDeny bool
	reason           Reason
	rule             string
	layer            Layer
}

func check(t *testing.T, name string, got Decision, w want) {
	t.Helper()
	if w.layer == "" {
		w.layer = LayerSession
	}
	if got.Allow != w.allow || got.WouldDeny != w.wouldDeny || got.Reason != w.reason || got.Layer != w.layer ||
		(w.rule != "" && got.Rule != w.rule) {
		t.Errorf("%s:\n got %+v\nwant %+v", name, got, w)
	}
	if got.Rule == "" {
		t.Errorf("%s: empty Rule in %+v", name, got)
	}
}

func TestDecideOneLayer(t *testing.T) {
	web := Policy{
		AllowHTTPS:     true,
		AllowedDomains: []string{"*.example.test", "api.other.test"},
		AllowedCIDRs:   []string{"10.0.0.0/8", "198.51.100.0/24"},
		DeniedDomains:  []string{"bad.example.test"},
	}
	anyHost := Policy{AllowHTTP: true, AllowHTTPS: true}
	pm := Policy{AllowPackageManagers: true}
	pmAndWeb := Policy{AllowPackageManagers: true, AllowHTTPS: true, AllowedDomains: []string{"app.example.test"}, DeniedDomains: []string{"files.pythonhosted.org"}}
	internal := Policy{AllowedDomains: []string{"db.internal.test"}, AllowedCIDRs: []string{"10.1.0.0/16"}}
	everything := Policy{AllowedCIDRs: []string{"0.0.0.0/0", "::/0"}}
	v6only := Policy{AllowedCIDRs: []string{"::fffe:0:0/95"}}
	pub := "203.0.113.5"

	tests := []struct {
		name string
		p    Policy
		c    Conn
		w    want
	}{
		// step 3, allowed_domains
		{"wildcard", web, Conn{IP: ip(pub), Port: 443, Transport: TCP, Host: "a.example.test"}, want{true, false, ReasonAllowedDomains, "allowed_domains *.example.test", ""}},
		{"wildcard deep", web, Conn{IP: ip(pub), Port: 443, Host: "a.b.c.example.test"}, want{true, false, ReasonAllowedDomains, "allowed_domains *.example.test", ""}},
		{"wildcard not apex", web, Conn{IP: ip(pub), Port: 443, Host: "example.test"}, want{false, false, ReasonHostNotListed, ruleNotListed, ""}},
		{"exact", web, Conn{IP: ip(pub), Port: 443, Host: "api.other.test"}, want{true, false, ReasonAllowedDomains, "allowed_domains api.other.test", ""}},
		{"exact not below", web, Conn{IP: ip(pub), Port: 443, Host: "x.api.other.test"}, want{false, false, ReasonHostNotListed, ruleNotListed, ""}},
		{"http off", web, Conn{IP: ip(pub), Port: 80, Host: "a.example.test"}, want{false, false, ReasonHTTPOff, ruleHTTPOff, ""}},
		{"name only", web, Conn{Port: 443, Host: "a.example.test"}, want{true, false, ReasonAllowedDomains, "allowed_domains *.example.test", ""}},
		{"mapped public", web, Conn{IP: ip("::ffff:" + pub), Port: 443, Host: "a.example.test"}, want{true, false, ReasonAllowedDomains, "", ""}},
		{"empty transport is tcp", web, Conn{IP: ip(pub), Port: 443, Host: "a.example.test"}, want{true, false, ReasonAllowedDomains, "", ""}},
		// step 3, denied_domains
		{"denied", web, Conn{IP: ip(pub), Port: 443, Host: "bad.example.test"}, want{false, false, ReasonDeniedDomain, "denied_domains bad.example.test", ""}},
		{"denied beats cidr", web, Conn{IP: ip("10.1.1.1"), Port: 443, Host: "bad.example.test"}, want{false, false, ReasonDeniedDomain, "", ""}},
		{"denied any port", web, Conn{IP: ip("10.1.1.1"), Port: 5432, Host: "bad.example.test"}, want{false, false, ReasonDeniedDomain, "", ""}},
		{"denied beats preset", pmAndWeb, Conn{IP: ip(pub), Port: 443, Host: "files.pythonhosted.org"}, want{false, false, ReasonDeniedDomain, "denied_domains files.pythonhosted.org", ""}},
		// step 3, address must be public unless in allowed_cidrs
		{"private address", web, Conn{IP: ip("192.168.1.1"), Port: 443, Host: "a.example.test"}, want{false, false, ReasonNotPublic, ruleNotPublic, ""}},
		{"documentation address", web, Conn{IP: ip("192.0.2.1"), Port: 443, Host: "a.example.test"}, want{false, false, ReasonNotPublic, "", ""}},
		{"cgnat address", web, Conn{IP: ip("100.64.1.1"), Port: 443, Host: "a.example.test"}, want{false, false, ReasonNotPublic, "", ""}},
		{"ula address", web, Conn{IP: ip("fd12::1"), Port: 443, Host: "a.example.test"}, want{false, false, ReasonNotPublic, "", ""}},
		{"nat64 of public", web, Conn{IP: ip("64:ff9b::cb00:7105"), Port: 443, Host: "a.example.test"}, want{false, false, ReasonNotPublic, "", ""}},
		{"6to4 of private", web, Conn{IP: ip("2002:c0a8:101::1"), Port: 443, Host: "a.example.test"}, want{false, false, ReasonNotPublic, "", ""}},
		{"teredo of private", web, Conn{IP: ip("2001:0:4136:e378:8000:63bf:f5ff:fffe"), Port: 443, Host: "a.example.test"}, want{false, false, ReasonNotPublic, "", ""}},
		{"private in cidr", web, Conn{IP: ip("198.51.100.7"), Port: 443, Host: "a.example.test"}, want{true, false, ReasonAllowedCIDRs, "allowed_cidrs 198.51.100.0/24", ""}},
		{"public lab range", anyHost, Conn{IP: ip("127.0.0.5"), Port: 443, Host: "fake.test"}, want{true, false, ReasonAllowHTTPS, "", ""}},
		// step 2, allowed_cidrs
		{"cidr ssh", web, Conn{IP: ip("10.1.1.1"), Port: 22, Transport: TCP}, want{true, false, ReasonAllowedCIDRs, "allowed_cidrs 10.0.0.0/8", ""}},
		{"cidr udp", web, Conn{IP: ip("10.1.1.1"), Port: 5353, Transport: UDP}, want{true, false, ReasonAllowedCIDRs, "", ""}},
		{"cidr icmp", web, Conn{IP: ip("10.1.1.1"), Transport: ICMP}, want{true, false, ReasonAllowedCIDRs, "", ""}},
		{"cidr mapped", web, Conn{IP: ip("::ffff:10.1.1.1"), Port: 22}, want{true, false, ReasonAllowedCIDRs, "", ""}},
		{"cidr ip literal", web, Conn{IP: ip("10.1.1.1"), Port: 443, IPLiteral: true}, want{true, false, ReasonAllowedCIDRs, "", ""}},
		{"cidr all", everything, Conn{IP: ip("8.8.8.8"), Port: 53, Transport: UDP}, want{true, false, ReasonAllowedCIDRs, "allowed_cidrs 0.0.0.0/0", ""}},
		{"cidr all v6", everything, Conn{IP: ip("2606:4700::1111"), Port: 22}, want{true, false, ReasonAllowedCIDRs, "allowed_cidrs ::/0", ""}},
		{"v6 prefix holds no v4", v6only, Conn{IP: ip("10.0.0.1"), Port: 22}, want{false, false, ReasonPort, "", ""}},
		{"name only skips cidr", web, Conn{Port: 22, Host: "db.example.test"}, want{false, false, ReasonPort, "", ""}},
		// step 4, everything else
		{"port", web, Conn{IP: ip(pub), Port: 22, Transport: TCP}, want{false, false, ReasonPort, rulePort, ""}},
		{"port with host", web, Conn{IP: ip(pub), Port: 8443, Host: "a.example.test"}, want{false, false, ReasonPort, "", ""}},
		{"udp", web, Conn{IP: ip(pub), Port: 443, Transport: UDP, Host: "a.example.test"}, want{false, false, ReasonUDP, ruleUDP, ""}},
		{"icmp", web, Conn{IP: ip(pub), Transport: ICMP}, want{false, false, ReasonICMP, ruleICMP, ""}},
		{"unknown transport", web, Conn{IP: ip(pub), Port: 443, Transport: "sctp", Host: "a.example.test"}, want{false, false, ReasonTransport, "", ""}},
		{"ip literal", web, Conn{IP: ip(pub), Port: 443, IPLiteral: true}, want{false, false, ReasonIPLiteral, ruleIPLiteral, ""}},
		{"no sni", web, Conn{IP: ip(pub), Port: 443}, want{false, false, ReasonNoHost, ruleNoHost, ""}},
		{"nothing at all", web, Conn{Port: 443}, want{false, false, ReasonNoHost, "", ""}},
		// web flags with an empty allowed_domains
		{"any https", anyHost, Conn{IP: ip(pub), Port: 443, Host: "anything.test"}, want{true, false, ReasonAllowHTTPS, "allow_https (any host)", ""}},
		{"any http", anyHost, Conn{IP: ip(pub), Port: 80, Host: "anything.test"}, want{true, false, ReasonAllowHTTP, "allow_http (any host)", ""}},
		{"any private", anyHost, Conn{IP: ip("10.0.0.1"), Port: 443, Host: "anything.test"}, want{false, false, ReasonNotPublic, "", ""}},
		{"any other port", anyHost, Conn{IP: ip(pub), Port: 8080, Host: "anything.test"}, want{false, false, ReasonPort, "", ""}},
		// package managers
		{"preset https", pm, Conn{IP: ip(pub), Port: 443, Host: "pypi.org"}, want{true, false, ReasonAllowPackageManagers, "package manager preset pip, uv: pypi.org", ""}},
		{"preset http", pm, Conn{IP: ip(pub), Port: 80, Host: "ftp.deb.test"}, want{true, false, ReasonAllowPackageManagers, "package manager preset apt: *.deb.test", ""}},
		{"preset other port", pm, Conn{IP: ip(pub), Port: 8080, Host: "pypi.org"}, want{false, false, ReasonPort, "", ""}},
		{"preset private address", pm, Conn{IP: ip("10.0.0.1"), Port: 443, Host: "pypi.org"}, want{false, false, ReasonNotPublic, "", ""}},
		{"not preset https", pm, Conn{IP: ip(pub), Port: 443, Host: "example.test"}, want{false, false, ReasonHTTPSOff, ruleHTTPSOffPreset, ""}},
		{"not preset http", pm, Conn{IP: ip(pub), Port: 80, Host: "example.test"}, want{false, false, ReasonHTTPOff, ruleHTTPOffPreset, ""}},
		{"preset beyond allowed_domains", pmAndWeb, Conn{IP: ip(pub), Port: 443, Host: "registry.npm.test"}, want{true, false, ReasonAllowPackageManagers, "package manager preset npm: registry.npm.test", ""}},
		{"neither list", pmAndWeb, Conn{IP: ip(pub), Port: 443, Host: "other.test"}, want{false, false, ReasonHostNotListed, ruleNotListedPreset, ""}},
		{"allowed before preset", pmAndWeb, Conn{IP: ip(pub), Port: 443, Host: "app.example.test"}, want{true, false, ReasonAllowedDomains, "", ""}},
		// internal services by name: allowed_domains with every flag off
		{"internal in cidr", internal, Conn{IP: ip("10.1.2.3"), Port: 443, Host: "db.internal.test"}, want{true, false, ReasonAllowedCIDRs, "allowed_cidrs 10.1.0.0/16", ""}},
		{"internal outside cidr", internal, Conn{IP: ip("10.2.2.3"), Port: 443, Host: "db.internal.test"}, want{false, false, ReasonHTTPSOff, ruleHTTPSOff, ""}},
		// step 1 comes before everything
		{"hard loopback", everything, Conn{IP: ip("127.0.0.100"), Port: 5432}, want{false, false, ReasonHardDeny, "loopback 127.0.0.0/8", LayerHard}},
		{"hard metadata", everything, Conn{IP: ip("169.254.169.254"), Port: 80, Host: "metadata.test"}, want{false, false, ReasonHardDeny, "link-local 169.254.0.0/16", LayerHard}},
		{"hard metadata v6", everything, Conn{IP: ip("fd00:ec2::254"), Port: 80}, want{false, false, ReasonHardDeny, "cloud metadata fd00:ec2::254/128", LayerHard}},
		{"hard self", anyHost, Conn{IP: ip("127.0.0.1"), Port: 443, Host: "fake.test"}, want{false, false, ReasonHardDeny, "egressd's own address 127.0.0.1", LayerHard}},
		{"hard nat64 loopback", everything, Conn{IP: ip("64:ff9b::7f00:1"), Port: 22}, want{false, false, ReasonHardDeny, "", LayerHard}},
		{"hard broadcast", everything, Conn{IP: ip("255.255.255.255"), Port: 67, Transport: UDP}, want{false, false, ReasonHardDeny, "", LayerHard}},
	}
	for _, tt := range tests {
		s := NewEffective(testClassifier, Layered{LayerSession, mustCompile(t, tt.p)})
		check(t, tt.name, s.Decide(tt.c), tt.w)
	}
}

// TestDeniedDomainForms: a denied name is denied whatever form the traffic spells it in,
// because entries and traffic go through the same NormalizeName.
func TestDeniedDomainForms(t *testing.T) {
	s := NewEffective(nil, Layered{LayerSession, mustCompile(t, Policy{
		AllowHTTPS:    true,
		DeniedDomains: []string{"BÜCHER.example", "*.Evil.test."},
	})})
	for _, host := range []string{
		"bücher.example", "BÜCHER.EXAMPLE.", "xn--bcher-kva.example", "XN--BCHER-KVA.example",
		"a.evil.test", "A.EVIL.TEST.", "x.y.evil.test", "ａ．ｅｖｉｌ．ｔｅｓｔ",
	} {
		n, err := NormalizeName(host)
		if err != nil {
			t.Fatalf("NormalizeName(%q): %v", host, err)
		}
		d := s.Decide(Conn{IP: ip("8.8.8.8"), Port: 443, Host: n})
		if d.Allow || d.Reason != ReasonDeniedDomain {
			t.Errorf("%q (%q): %+v, want denied by denied_domains", host, n, d)
		}
	}
	// The apex of a denied wildcard is not denied.
	if d := s.Decide(Conn{IP: ip("8.8.8.8"), Port: 443, Host: "evil.test"}); !d.Allow {
		t.Errorf("evil.test: %+v, want allowed (only names under *.evil.test are denied)", d)
	}
}

func TestDecideLayers(t *testing.T) {
	anyHTTPS := Policy{AllowHTTPS: true}
	onlyA := Policy{AllowHTTPS: true, AllowedDomains: []string{"*.a.test"}}
	onlyB := Policy{AllowHTTPS: true, AllowedDomains: []string{"*.b.test"}}
	denyAll := Policy{}
	monitor := func(p Policy) Policy { p.Mode = Monitor; return p }
	cidr8 := Policy{AllowedCIDRs: []string{"10.0.0.0/8"}}
	cidr16 := Policy{AllowedCIDRs: []string{"10.1.0.0/16"}}
	pub := ip("8.8.8.8")
	hostA := Conn{IP: pub, Port: 443, Host: "x.a.test"}
	hostC := Conn{IP: pub, Port: 443, Host: "x.c.test"}

	type layer struct {
		l Layer
		p Policy
	}
	tests := []struct {
		name   string
		layers []layer
		c      Conn
		w      want
	}{
		{"both allow: session reported", []layer{{LayerSession, onlyA}, {LayerVM, anyHTTPS}}, hostA,
			want{true, false, ReasonAllowedDomains, "allowed_domains *.a.test", LayerSession}},
		{"vm restricts", []layer{{LayerSession, anyHTTPS}, {LayerVM, onlyA}}, hostC,
			want{false, false, ReasonHostNotListed, "", LayerVM}},
		{"session restricts", []layer{{LayerSession, onlyA}, {LayerVM, anyHTTPS}}, hostC,
			want{false, false, ReasonHostNotListed, "", LayerSession}},
		{"both deny: session first", []layer{{LayerVM, onlyB}, {LayerSession, onlyA}}, hostC,
			want{false, false, ReasonHostNotListed, "", LayerSession}},
		{"disjoint lists allow nothing", []layer{{LayerSession, onlyA}, {LayerVM, onlyB}}, hostA,
			want{false, false, ReasonHostNotListed, "", LayerVM}},
		{"monitor never loosens enforce", []layer{{LayerSession, denyAll}, {LayerVM, monitor(anyHTTPS)}}, hostA,
			want{false, false, ReasonHTTPSOff, "", LayerSession}},
		{"monitor vm would deny", []layer{{LayerSession, anyHTTPS}, {LayerVM, monitor(onlyB)}}, hostA,
			want{true, true, ReasonHostNotListed, "", LayerVM}},
		{"enforce denial wins over monitor denial", []layer{{LayerSession, monitor(onlyB)}, {LayerVM, denyAll}}, hostA,
			want{false, false, ReasonHTTPSOff, "", LayerVM}},
		{"two monitor denials: session reported", []layer{{LayerVM, monitor(denyAll)}, {LayerSession, monitor(onlyB)}}, hostA,
			want{true, true, ReasonHostNotListed, "", LayerSession}},
		{"monitor allows quietly", []layer{{LayerSession, monitor(anyHTTPS)}}, hostA,
			want{true, false, ReasonAllowHTTPS, "", LayerSession}},
		{"monitor does not lift hard", []layer{{LayerSession, monitor(Policy{AllowedCIDRs: []string{"0.0.0.0/0"}})}}, Conn{IP: ip("127.0.0.1"), Port: 22},
			want{false, false, ReasonHardDeny, "loopback 127.0.0.0/8", LayerHard}},
		{"cidr intersection inside", []layer{{LayerSession, cidr8}, {LayerVM, cidr16}}, Conn{IP: ip("10.1.2.3"), Port: 22},
			want{true, false, ReasonAllowedCIDRs, "allowed_cidrs 10.0.0.0/8", LayerSession}},
		{"cidr intersection outside", []layer{{LayerSession, cidr8}, {LayerVM, cidr16}}, Conn{IP: ip("10.2.2.3"), Port: 22},
			want{false, false, ReasonPort, "", LayerVM}},
		{"default layer", []layer{{LayerDefault, anyHTTPS}}, hostA,
			want{true, false, ReasonAllowHTTPS, "", LayerDefault}},
		{"default deny", []layer{{LayerDefault, denyAll}}, hostA,
			want{false, false, ReasonHTTPSOff, "", LayerDefault}},
		{"transparent: one session of three denies", []layer{{LayerVM, anyHTTPS}, {LayerSession, anyHTTPS}, {LayerSession, onlyB}, {LayerSession, anyHTTPS}}, hostA,
			want{false, false, ReasonHostNotListed, "", LayerSession}},
	}
	for _, tt := range tests {
		var ls []Layered
		for _, l := range tt.layers {
			ls = append(ls, Layered{l.l, mustCompile(t, l.p)})
		}
		check(t, tt.name, NewEffective(nil, ls...).Decide(tt.c), tt.w)
	}
}

func TestSetFailsClosed(t *testing.T) {
	conn := Conn{IP: ip("8.8.8.8"), Port: 443, Host: "a.test"}
	q := Query{Name: "a.test", Type: QTypeA}
	for name, s := range map[string]*Effective{
		"no layer":    NewEffective(nil),
		"nil matcher": NewEffective(nil, Layered{LayerSession, nil}),
		"nil and allow": NewEffective(nil, Layered{LayerSession, mustCompile(t, Policy{AllowHTTPS: true})},
			Layered{LayerVM, nil}),
	} {
		if d := s.Decide(conn); d.Allow || d.Reason != ReasonNoPolicy {
			t.Errorf("%s: Decide = %+v, want a denial", name, d)
		}
		if d := s.DecideQuery(q); d.Allow {
			t.Errorf("%s: DecideQuery = %+v, want a denial", name, d)
		}
		if s.KeepAnswer(ip("8.8.8.8")) {
			t.Errorf("%s: KeepAnswer = true, want false", name)
		}
	}
	if d := NewEffective(nil).Decide(conn); d.Layer != LayerDefault {
		t.Errorf("no layer: layer %q, want %q", d.Layer, LayerDefault)
	}
}

func TestKeepAnswer(t *testing.T) {
	web := mustCompile(t, Policy{AllowHTTPS: true, AllowedCIDRs: []string{"10.1.0.0/16", "127.0.0.64/26"}})
	narrow := mustCompile(t, Policy{AllowHTTPS: true, AllowedCIDRs: []string{"10.1.2.0/24"}})
	mon := mustCompile(t, Policy{AllowHTTPS: true, Mode: Monitor})
	tests := []struct {
		name string
		set  *Effective
		addr string
		keep bool
	}{
		{"public", NewEffective(nil, Layered{LayerSession, web}), "8.8.8.8", true},
		{"public v6", NewEffective(nil, Layered{LayerSession, web}), "2606:4700::1111", true},
		{"private", NewEffective(nil, Layered{LayerSession, web}), "192.168.1.1", false},
		{"private in cidr", NewEffective(nil, Layered{LayerSession, web}), "10.1.9.9", true},
		{"mapped private in cidr", NewEffective(nil, Layered{LayerSession, web}), "::ffff:10.1.9.9", true},
		{"ula", NewEffective(nil, Layered{LayerSession, web}), "fd12::1", false},
		{"nat64", NewEffective(nil, Layered{LayerSession, web}), "64:ff9b::808:808", false},
		{"loopback in cidr stays hard", NewEffective(nil, Layered{LayerSession, web}), "127.0.0.100", false},
		{"lab public", NewEffective(testClassifier, Layered{LayerSession, web}), "127.0.0.5", true},
		{"self", NewEffective(testClassifier, Layered{LayerSession, web}), "127.0.0.1", false},
		{"metadata", NewEffective(nil, Layered{LayerSession, web}), "169.254.169.254", false},
		{"both layers' cidrs", NewEffective(nil, Layered{LayerSession, web}, Layered{LayerVM, narrow}), "10.1.2.3", true},
		{"one layer's cidr", NewEffective(nil, Layered{LayerSession, web}, Layered{LayerVM, narrow}), "10.1.3.3", false},
		{"monitor strips nothing", NewEffective(nil, Layered{LayerSession, web}, Layered{LayerVM, mon}), "10.1.3.3", true},
		{"zero addr", NewEffective(nil, Layered{LayerSession, web}), "", false},
	}
	for _, tt := range tests {
		var a netip.Addr
		if tt.addr != "" {
			a = ip(tt.addr)
		}
		if got := tt.set.KeepAnswer(a); got != tt.keep {
			t.Errorf("%s: KeepAnswer(%s) = %v, want %v", tt.name, tt.addr, got, tt.keep)
		}
	}
}

func TestAllowedPrefixes(t *testing.T) {
	a := mustCompile(t, Policy{AllowedCIDRs: []string{"10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"}})
	b := mustCompile(t, Policy{AllowedCIDRs: []string{"10.1.0.0/16", "2001:db8:1::/48", "198.51.100.0/24"}})
	got := fmt.Sprint(NewEffective(nil, Layered{LayerSession, a}, Layered{LayerVM, b}).AllowedPrefixes())
	if want := "[10.1.0.0/16 2001:db8:1::/48]"; got != want {
		t.Errorf("AllowedPrefixes = %s, want %s", got, want)
	}
	if got := NewEffective(nil).AllowedPrefixes(); got == nil || len(got) != 0 {
		t.Errorf("AllowedPrefixes of no layer = %v, want empty", got)
	}
	if got := fmt.Sprint(NewEffective(nil, Layered{LayerVM, a}).AllowedPrefixes()); got != "[10.0.0.0/8 192.0.2.0/24 2001:db8::/32]" {
		t.Errorf("AllowedPrefixes of one layer = %s", got)
	}
}

func TestMatcherAccessors(t *testing.T) {
	p := Policy{AllowHTTPS: true, AllowedDomains: []string{"*.a.test"}, AllowedCIDRs: []string{"10.0.0.0/8"}, DeniedDomains: []string{"x.a.test"}, Mode: Monitor}
	m := mustCompile(t, p)
	got := m.Policy()
	got.AllowedDomains[0] = "changed.test"
	if m.Policy().AllowedDomains[0] != "*.a.test" {
		t.Error("Policy() shares its slices with the Matcher")
	}
	if m.Mode() != Monitor {
		t.Errorf("Mode = %q", m.Mode())
	}
	if r, ok := m.MatchCIDR(ip("::ffff:10.2.3.4")); !ok || r != "allowed_cidrs 10.0.0.0/8" {
		t.Errorf("MatchCIDR = %q, %v", r, ok)
	}
	if r, ok := m.MatchAllowed("y.a.test"); !ok || r != "allowed_domains *.a.test" {
		t.Errorf("MatchAllowed = %q, %v", r, ok)
	}
	if r, ok := m.MatchDenied("x.a.test"); !ok || r != "denied_domains x.a.test" {
		t.Errorf("MatchDenied = %q, %v", r, ok)
	}
	if ps := m.Prefixes(); len(ps) != 1 || ps[0].String() != "10.0.0.0/8" {
		t.Errorf("Prefixes = %v", ps)
	}
}

// TestDecideAllocs pins the data-path property: no decision allocates.
func TestDecideAllocs(t *testing.T) {
	s := NewEffective(testClassifier,
		Layered{LayerSession, mustCompile(t, Policy{AllowHTTPS: true, AllowPackageManagers: true, AllowedDomains: []string{"*.a.test", "b.test"}, AllowedCIDRs: []string{"10.0.0.0/8"}, DeniedDomains: []string{"bad.a.test"}})},
		Layered{LayerVM, mustCompile(t, Policy{AllowHTTPS: true, Mode: Monitor, AllowedDomains: []string{"b.test"}})},
	)
	conns := []Conn{
		{IP: ip("8.8.8.8"), Port: 443, Host: "x.y.a.test"},
		{IP: ip("8.8.8.8"), Port: 443, Host: "b.test"},
		{IP: ip("8.8.8.8"), Port: 443, Host: "pypi.org"},
		{IP: ip("8.8.8.8"), Port: 443, Host: "bad.a.test"},
		{IP: ip("8.8.8.8"), Port: 443, Host: "miss.test"},
		{IP: ip("10.1.1.1"), Port: 22},
		{IP: ip("127.0.0.1"), Port: 22},
		{IP: ip("2606:4700::1111"), Port: 80, Host: "b.test"},
		{IP: ip("8.8.8.8"), Port: 443, Transport: UDP},
	}
	queries := []Query{{"x.a.test", QTypeA}, {"miss.test", QTypeAAAA}, {"x.a.test", QTypeHTTPS}, {"x.a.test", 16}}
	n := testing.AllocsPerRun(100, func() {
		for _, c := range conns {
			s.Decide(c)
		}
		for _, q := range queries {
			s.DecideQuery(q)
		}
		s.KeepAnswer(ip("10.1.1.1"))
	})
	if n != 0 {
		t.Errorf("decisions allocate %v times per run, want 0", n)
	}
}

// TestSetConcurrent reads one Set from many goroutines; run with -race.
func TestSetConcurrent(t *testing.T) {
	s := NewEffective(nil, Layered{LayerSession, mustCompile(t, Policy{AllowHTTPS: true, AllowPackageManagers: true, AllowedDomains: []string{"*.a.test"}})})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				host := fmt.Sprintf("h%d.a.test", i+g)
				if d := s.Decide(Conn{IP: ip("8.8.8.8"), Port: 443, Host: host}); !d.Allow {
					t.Errorf("%s denied: %+v", host, d)
					return
				}
				s.DecideQuery(Query{Name: "pypi.org", Type: QTypeA})
			}
		})
	}
	wg.Wait()
}

// TestUnnormalisedNames: a caller that forgets NormalizeName must not open a hole.
func TestUnnormalisedNames(t *testing.T) {
	s := NewEffective(nil, Layered{LayerSession, mustCompile(t, Policy{AllowHTTPS: true, AllowPackageManagers: true, DeniedDomains: []string{"evil.test"}})})
	pub := ip("8.8.8.8")
	tests := []struct {
		name string
		c    Conn
		w    want
	}{
		{"case and dot", Conn{IP: pub, Port: 443, Host: "EVIL.test."}, want{false, false, ReasonDeniedDomain, "denied_domains evil.test", ""}},
		{"full width", Conn{IP: pub, Port: 443, Host: "ｅｖｉｌ．ｔｅｓｔ"}, want{false, false, ReasonDeniedDomain, "", ""}},
		{"ip as host", Conn{IP: pub, Port: 443, Host: "8.8.8.8"}, want{false, false, ReasonIPLiteral, "", ""}},
		{"bracketed ip as host", Conn{IP: ip("2606:4700::1111"), Port: 443, Host: "[2606:4700::1111]"}, want{false, false, ReasonIPLiteral, "", ""}},
		{"invalid", Conn{IP: pub, Port: 443, Host: "bad_name.test"}, want{false, false, ReasonBadName, "", LayerHard}},
		{"numeric", Conn{IP: pub, Port: 443, Host: "127.1"}, want{false, false, ReasonBadName, "", LayerHard}},
	}
	for _, tt := range tests {
		check(t, tt.name, s.Decide(tt.c), tt.w)
	}
	check(t, "query case", s.DecideQuery(Query{Name: "PyPI.org.", Type: QTypeA}), want{true, false, ReasonAllowPackageManagers, "", ""})
	check(t, "query denied", s.DecideQuery(Query{Name: "Evil.Test", Type: QTypeAAAA}), want{false, false, ReasonDeniedDomain, "", ""})
	check(t, "query invalid", s.DecideQuery(Query{Name: "a..b", Type: QTypeA}), want{false, false, ReasonBadName, "", LayerHard})
}
