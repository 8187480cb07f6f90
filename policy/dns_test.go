package policy

import (
	"strings"
	"testing"
)

func TestDecideQueryTypes(t *testing.T) {
	s := NewEffective(nil, Layered{LayerSession, mustCompile(t, Policy{AllowHTTPS: true})})
	tests := []struct {
		qtype     uint16
		allow     bool
		ruleStart string
	}{
		{QTypeA, true, ""},
		{QTypeAAAA, true, ""},
		{QTypeHTTPS, false, "HTTPS: refused so that clients keep a readable SNI"},
		{QTypeSVCB, false, "SVCB: refused"},
		{16, false, "TXT: only A and AAAA are answered"},
		{15, false, "MX:"},
		{5, false, "CNAME:"}, // the resolver follows CNAMEs itself; a client never needs to ask
		{12, false, "PTR:"},
		{255, false, "ANY:"},
		{10, false, "NULL:"},
		{4242, false, "TYPE4242: only A and AAAA are answered"},
		{0, false, "TYPE0:"},
	}
	for _, tt := range tests {
		d := s.DecideQuery(Query{Name: "example.test", Type: tt.qtype})
		if d.Allow != tt.allow {
			t.Errorf("type %d: %+v, want allow %v", tt.qtype, d, tt.allow)
			continue
		}
		if !tt.allow && (d.Reason != ReasonQueryType || d.Layer != LayerHard || !strings.HasPrefix(d.Rule, tt.ruleStart)) {
			t.Errorf("type %d: %+v, want reason %q, layer hard, rule %q...", tt.qtype, d, ReasonQueryType, tt.ruleStart)
		}
	}
	// Monitor mode does not open other query types: they could carry data out.
	mon := NewEffective(nil, Layered{LayerSession, mustCompile(t, Policy{AllowHTTPS: true, Mode: Monitor})})
	if d := mon.DecideQuery(Query{Name: "example.test", Type: 16}); d.Allow {
		t.Errorf("TXT in monitor mode: %+v, want refused", d)
	}
}

func TestDecideQueryNames(t *testing.T) {
	internal := Policy{AllowedDomains: []string{"db.internal.test", "*.svc.test"}}
	anyHTTPS := Policy{AllowHTTPS: true}
	anyHTTP := Policy{AllowHTTP: true}
	listed := Policy{AllowHTTPS: true, AllowedDomains: []string{"*.a.test"}, DeniedDomains: []string{"bad.a.test"}}
	pm := Policy{AllowPackageManagers: true}
	pmListed := Policy{AllowPackageManagers: true, AllowHTTPS: true, AllowedDomains: []string{"app.test"}}
	none := Policy{}
	tests := []struct {
		name  string
		p     Policy
		qname string
		w     want
	}{
		{"internal by name, flags off", internal, "db.internal.test", want{true, false, ReasonAllowedDomains, "allowed_domains db.internal.test", ""}},
		{"internal wildcard", internal, "x.svc.test", want{true, false, ReasonAllowedDomains, "allowed_domains *.svc.test", ""}},
		{"internal miss", internal, "other.test", want{false, false, ReasonNameNotListed, ruleNotListed, ""}},
		{"any https", anyHTTPS, "anything.test", want{true, false, ReasonAllowHTTPS, ruleAnyHTTPS, ""}},
		{"any http", anyHTTP, "anything.test", want{true, false, ReasonAllowHTTP, ruleAnyHTTP, ""}},
		{"listed", listed, "x.a.test", want{true, false, ReasonAllowedDomains, "allowed_domains *.a.test", ""}},
		{"listed apex", listed, "a.test", want{false, false, ReasonNameNotListed, "", ""}},
		{"denied", listed, "bad.a.test", want{false, false, ReasonDeniedDomain, "denied_domains bad.a.test", ""}},
		{"preset", pm, "pypi.org", want{true, false, ReasonAllowPackageManagers, "package manager preset pip, uv: pypi.org", ""}},
		{"preset wildcard", pm, "mirror.deb.test", want{true, false, ReasonAllowPackageManagers, "", ""}},
		{"not preset", pm, "other.test", want{false, false, ReasonNameNotListed, "not in the package manager preset, and " + ruleNameNoWeb, ""}},
		{"preset with list", pmListed, "registry.npm.test", want{true, false, ReasonAllowPackageManagers, "", ""}},
		{"neither", pmListed, "other.test", want{false, false, ReasonNameNotListed, ruleNotListedPreset, ""}},
		{"nothing", none, "anything.test", want{false, false, ReasonNameNotListed, ruleNameNoWeb, ""}},
	}
	for _, tt := range tests {
		for _, qt := range []uint16{QTypeA, QTypeAAAA} {
			s := NewEffective(nil, Layered{LayerSession, mustCompile(t, tt.p)})
			check(t, tt.name, s.DecideQuery(Query{Name: tt.qname, Type: qt}), tt.w)
		}
	}
	if d := NewEffective(nil, Layered{LayerSession, mustCompile(t, anyHTTPS)}).DecideQuery(Query{Type: QTypeA}); d.Allow {
		t.Errorf("empty name: %+v, want denied", d)
	}
}

func TestDecideQueryLayers(t *testing.T) {
	a := mustCompile(t, Policy{AllowHTTPS: true, AllowedDomains: []string{"*.a.test"}})
	b := mustCompile(t, Policy{AllowHTTPS: true, AllowedDomains: []string{"*.b.test"}})
	anyHTTPS := mustCompile(t, Policy{AllowHTTPS: true})
	monB := mustCompile(t, Policy{AllowHTTPS: true, AllowedDomains: []string{"*.b.test"}, Mode: Monitor})
	q := Query{Name: "x.a.test", Type: QTypeA}
	tests := []struct {
		name string
		set  *Effective
		w    want
	}{
		{"both allow", NewEffective(nil, Layered{LayerSession, a}, Layered{LayerVM, anyHTTPS}), want{true, false, ReasonAllowedDomains, "", LayerSession}},
		{"vm refuses", NewEffective(nil, Layered{LayerSession, anyHTTPS}, Layered{LayerVM, b}), want{false, false, ReasonNameNotListed, "", LayerVM}},
		{"monitor vm would refuse", NewEffective(nil, Layered{LayerSession, a}, Layered{LayerVM, monB}), want{true, true, ReasonNameNotListed, "", LayerVM}},
	}
	for _, tt := range tests {
		check(t, tt.name, tt.set.DecideQuery(q), tt.w)
	}
}

func TestQTypeString(t *testing.T) {
	for qt, want := range map[uint16]string{1: "A", 28: "AAAA", 16: "TXT", 65: "HTTPS", 64: "SVCB", 65280: "TYPE65280"} {
		if got := QTypeString(qt); got != want {
			t.Errorf("QTypeString(%d) = %q, want %q", qt, got, want)
		}
	}
}
