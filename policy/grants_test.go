package policy

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func mustGrant(t *testing.T, g Grant) Grant {
	t.Helper()
	n, err := NormalizeGrant(g)
	if err != nil {
		t.Fatalf("NormalizeGrant(%+v): %v", g, err)
	}
	return n
}

func grantEnv(t *testing.T) *Env {
	t.Helper()
	e, err := NewEnv(testClassifier, testPreset(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestNormalizeGrant(t *testing.T) {
	g := mustGrant(t, Grant{ID: "gr_1", Domains: []string{"Example.COM.", "example.com", "*.a.test"},
		TCP: []string{"GitHub.com:22"}, CIDRs: []string{"203.0.113.7"}})
	if strings.Join(g.Domains, ",") != "*.a.test,example.com" || g.TCP[0] != "github.com:22" || g.CIDRs[0] != "203.0.113.7/32" {
		t.Fatalf("normalised grant: %+v", g)
	}
	for _, tc := range []struct {
		name  string
		g     Grant
		field string
	}{
		{"empty", Grant{}, ""},
		{"empty lists", Grant{Domains: []string{}, TCP: []string{}}, ""},
		{"bad domain", Grant{Domains: []string{"ok.test", "a b"}}, "domains[1]"},
		{"ip as domain", Grant{Domains: []string{"192.0.2.1"}}, "domains[0]"},
		{"bare wildcard", Grant{Domains: []string{"*"}}, "domains[0]"},
		{"tcp without port", Grant{TCP: []string{"github.com"}}, "tcp[0]"},
		{"tcp port 0", Grant{TCP: []string{"x.test:22", "github.com:0"}}, "tcp[1]"},
		{"tcp ip literal", Grant{TCP: []string{"203.0.113.1:22"}}, "tcp[0]"},
		{"cidr host bits", Grant{CIDRs: []string{"198.51.100.1/24"}}, "cidrs[0]"},
		{"cidr junk", Grant{CIDRs: []string{"nope"}}, "cidrs[0]"},
		{"too many", Grant{Domains: make([]string, MaxGrantDomains+1)}, "domains"},
	} {
		_, err := NormalizeGrant(tc.g)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: got %v, want a FieldError on %q", tc.name, err, tc.field)
		}
	}
}

func TestGrantDecisions(t *testing.T) {
	env := grantEnv(t)
	web := Policy{AllowHTTPS: true, AllowedDomains: []string{"a.test"}}.WithDefaults()
	anyHost := Policy{AllowHTTPS: true}.WithDefaults()
	off := DenyAll()
	g := mustGrant(t, Grant{ID: "gr_x", Domains: []string{"example.com", "a.test"}, TCP: []string{"github.com:22"}, CIDRs: []string{"198.51.100.0/24"}})
	g2 := mustGrant(t, Grant{ID: "gr_y", Domains: []string{"example.com"}})
	for _, tc := range []struct {
		name   string
		layers []NamedPolicy
		conn   Conn
		w      want
	}{
		{"domain by grant", []NamedPolicy{{Layer: LayerSession, Policy: web, Grants: []Grant{g}}},
			Conn{Host: "example.com", Port: 443}, want{allow: true, reason: ReasonAllowedDomains, rule: "grant gr_x: allowed_domains example.com"}},
		{"first grant wins the rule", []NamedPolicy{{Layer: LayerSession, Policy: web, Grants: []Grant{g2, g}}},
			Conn{Host: "example.com", Port: 443}, want{allow: true, reason: ReasonAllowedDomains, rule: "grant gr_y: allowed_domains example.com"}},
		{"policy entry keeps its rule", []NamedPolicy{{Layer: LayerSession, Policy: web, Grants: []Grant{g}}},
			Conn{Host: "a.test", Port: 443}, want{allow: true, reason: ReasonAllowedDomains, rule: "allowed_domains a.test"}},
		{"grant never turns a web flag on", []NamedPolicy{{Layer: LayerSession, Policy: web, Grants: []Grant{g}}},
			Conn{Host: "example.com", Port: 80}, want{allow: false, reason: ReasonHTTPOff}},
		{"grant never turns https on", []NamedPolicy{{Layer: LayerSession, Policy: off, Grants: []Grant{g}}},
			Conn{Host: "example.com", Port: 443}, want{allow: false, reason: ReasonHTTPSOff}},
		{"grant does not narrow any-host", []NamedPolicy{{Layer: LayerSession, Policy: anyHost, Grants: []Grant{g}}},
			Conn{Host: "other.test", Port: 443}, want{allow: true, reason: ReasonAllowHTTPS}},
		{"tcp by grant", []NamedPolicy{{Layer: LayerSession, Policy: off, Grants: []Grant{g}}},
			Conn{Host: "github.com", Port: 22}, want{allow: true, reason: ReasonAllowedTCP, rule: "grant gr_x: allowed_tcp github.com:22"}},
		{"tcp other port", []NamedPolicy{{Layer: LayerSession, Policy: off, Grants: []Grant{g}}},
			Conn{Host: "github.com", Port: 23}, want{allow: false, reason: ReasonPort}},
		{"cidr by grant", []NamedPolicy{{Layer: LayerSession, Policy: off, Grants: []Grant{g}}},
			Conn{IP: ip("198.51.100.9"), Port: 5432, IPLiteral: true}, want{allow: true, reason: ReasonAllowedCIDRs, rule: "grant gr_x: allowed_cidrs 198.51.100.0/24"}},
		{"denied_domains beats a grant", []NamedPolicy{{Layer: LayerSession, Policy: Policy{AllowHTTPS: true, AllowedDomains: []string{"a.test"}, DeniedDomains: []string{"example.com"}}.WithDefaults(), Grants: []Grant{g}}},
			Conn{Host: "example.com", Port: 443}, want{allow: false, reason: ReasonDeniedDomain}},
		{"session grant cannot loosen the vm", []NamedPolicy{
			{Layer: LayerSession, Policy: web, Grants: []Grant{g}},
			{Layer: LayerVM, Policy: web}},
			Conn{Host: "example.com", Port: 443}, want{allow: false, reason: ReasonHostNotListed, layer: LayerVM}},
		{"session tcp grant cannot loosen the vm", []NamedPolicy{
			{Layer: LayerSession, Policy: off, Grants: []Grant{g}},
			{Layer: LayerVM, Policy: web}},
			Conn{Host: "github.com", Port: 22}, want{allow: false, reason: ReasonPort, layer: LayerVM}},
		{"grants on both layers", []NamedPolicy{
			{Layer: LayerSession, Policy: web, Grants: []Grant{g}},
			{Layer: LayerVM, Policy: web, Grants: []Grant{g2}}},
			Conn{Host: "example.com", Port: 443}, want{allow: true, reason: ReasonAllowedDomains, rule: "grant gr_x: allowed_domains example.com"}},
		{"unset layer's grant adds nothing beside a set layer", []NamedPolicy{
			{Layer: LayerSession, NoPolicy: true, Grants: []Grant{g}},
			{Layer: LayerVM, Policy: off}},
			Conn{Host: "github.com", Port: 22}, want{allow: false, reason: ReasonPort, layer: LayerVM}},
		{"unset layer's grant does not tighten a set layer", []NamedPolicy{
			{Layer: LayerSession, NoPolicy: true, Grants: []Grant{g}},
			{Layer: LayerVM, Policy: anyHost}},
			Conn{Host: "other.test", Port: 443}, want{allow: true, reason: ReasonAllowHTTPS, layer: LayerVM}},
		{"no layer set: grant goes on the default", []NamedPolicy{
			{Layer: LayerVM, NoPolicy: true, Grants: []Grant{g}}},
			Conn{Host: "github.com", Port: 22}, want{allow: true, reason: ReasonAllowedTCP, rule: "grant gr_x: allowed_tcp github.com:22", layer: LayerDefault}},
		{"no layer set: default's flags stay off", []NamedPolicy{
			{Layer: LayerVM, NoPolicy: true, Grants: []Grant{g}}},
			Conn{Host: "example.com", Port: 443}, want{allow: false, reason: ReasonHTTPSOff, layer: LayerDefault}},
		{"no grant, no layer: default", nil,
			Conn{Host: "github.com", Port: 22}, want{allow: false, reason: ReasonPort, layer: LayerDefault}},
	} {
		set, err := env.Effective(tc.layers...)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		check(t, tc.name, set.Decide(tc.conn), tc.w)
	}
}

func TestGrantDNSAndKernel(t *testing.T) {
	env := grantEnv(t)
	g := mustGrant(t, Grant{ID: "gr_d", Domains: []string{"example.com"}, TCP: []string{"db.test:5432"}, CIDRs: []string{"198.51.100.0/24"}})
	web := Policy{AllowHTTPS: true, AllowedDomains: []string{"a.test"}}.WithDefaults()
	with, _ := env.Effective(NamedPolicy{Layer: LayerVM, Policy: web, Grants: []Grant{g}})
	without, _ := env.Effective(NamedPolicy{Layer: LayerVM, Policy: web})
	for _, name := range []string{"example.com", "db.test"} {
		q := Query{Name: name, Type: 1}
		if d := with.DecideQuery(q); !d.Allow || !strings.HasPrefix(d.Rule, "grant gr_d: ") {
			t.Errorf("query %s with the grant: %+v", name, d)
		}
		if d := without.DecideQuery(q); d.Allow {
			t.Errorf("query %s without the grant: %+v", name, d)
		}
	}
	if ps := with.TCPPorts("db.test"); len(ps) != 1 || ps[0] != 5432 {
		t.Errorf("TCPPorts with the grant: %v", ps)
	}
	if ps := without.TCPPorts("db.test"); len(ps) != 0 {
		t.Errorf("TCPPorts without the grant: %v", ps)
	}
	if ps := with.AllowedPrefixes(); len(ps) != 1 || ps[0].String() != "198.51.100.0/24" {
		t.Errorf("AllowedPrefixes with the grant: %v", ps)
	}
	if ps := without.AllowedPrefixes(); len(ps) != 0 {
		t.Errorf("AllowedPrefixes without the grant: %v", ps)
	}
}

func TestGrantExplainAndExpiry(t *testing.T) {
	env := grantEnv(t)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g1 := mustGrant(t, Grant{ID: "gr_1", TCP: []string{"github.com:22"}, ExpiresAt: at.Add(time.Hour)})
	g2 := mustGrant(t, Grant{ID: "gr_2", CIDRs: []string{"198.51.100.0/24"}, ExpiresAt: at})
	if got := NextExpiry([]Grant{g1, g2}); !got.Equal(at) {
		t.Errorf("NextExpiry = %v", got)
	}
	if got := NextExpiry(nil); !got.IsZero() {
		t.Errorf("NextExpiry(nil) = %v", got)
	}
	x := env.Explain(NamedPolicy{Layer: LayerSession, Policy: DenyAll(), Grants: []Grant{g1, g2}})
	if len(x.Layers) != 1 || len(x.Layers[0].Grants) != 2 || len(x.Layers[0].Policy.AllowedTCP) != 0 {
		t.Fatalf("explained layers: %+v", x.Layers)
	}
	if strings.Join(x.AllowedTCP.Value, ",") != "github.com:22" || strings.Join(x.AllowedCIDRs.Value, ",") != "198.51.100.0/24" {
		t.Errorf("explained values: tcp %v cidrs %v", x.AllowedTCP.Value, x.AllowedCIDRs.Value)
	}
}

func TestCompileGrantsRejectsBrokenEntries(t *testing.T) {
	for _, g := range []Grant{{ID: "a", Domains: []string{"a b"}}, {ID: "b", TCP: []string{"x"}}, {ID: "c", CIDRs: []string{"1.2.3.4/8"}}} {
		if _, err := CompileGrants(DenyAll(), nil, []Grant{g}); err == nil {
			t.Errorf("CompileGrants(%+v) accepted a broken entry", g)
		}
	}
}

func FuzzNormalizeGrant(f *testing.F) {
	f.Add("example.com", "github.com:22", "198.51.100.0/24")
	f.Add("*.a.test", "x:0", "::1")
	f.Fuzz(func(t *testing.T, d, tcp, cidr string) {
		g, err := NormalizeGrant(Grant{Domains: []string{d}, TCP: []string{tcp}, CIDRs: []string{cidr}})
		if err != nil {
			return
		}
		// Normal form is a fixed point, and compiles.
		again, err := NormalizeGrant(g)
		if err != nil || strings.Join(again.Domains, ",") != strings.Join(g.Domains, ",") || strings.Join(again.TCP, ",") != strings.Join(g.TCP, ",") {
			t.Fatalf("not a fixed point: %+v -> %+v, %v", g, again, err)
		}
		if _, err := CompileGrants(DenyAll(), nil, []Grant{g}); err != nil {
			t.Fatalf("compile %+v: %v", g, err)
		}
	})
}
