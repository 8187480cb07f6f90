package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	in := Policy{
		AllowHTTPS:     true,
		AllowedDomains: []string{"B.example.com", "a.example.com.", "*.Example.com", "a.example.com", "bücher.example"},
		AllowedCIDRs:   []string{"10.0.0.0/8", "192.0.2.1", "::ffff:198.51.100.0/120", "10.0.0.0/8", "2001:DB8::/32"},
		DeniedDomains:  nil,
	}
	got, warnings, err := in.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	want := Policy{
		AllowHTTPS:     true,
		AllowedDomains: []string{"*.example.com", "a.example.com", "b.example.com", "xn--bcher-kva.example"},
		AllowedCIDRs:   []string{"10.0.0.0/8", "192.0.2.1/32", "198.51.100.0/24", "2001:db8::/32"},
		DeniedDomains:  []string{},
		Mode:           Enforce,
		AllowedTCP:     []string{},
		HTTPRules:      []HTTPRule{},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Normalize =\n%#v\nwant\n%#v", got, want)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %q, want none", warnings)
	}
	again, _, err := got.Normalize()
	if err != nil || !reflect.DeepEqual(again, got) {
		t.Errorf("Normalize is not idempotent: %#v, %v", again, err)
	}
}

func TestNormalizeDefaults(t *testing.T) {
	got, warnings, err := Policy{}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, DenyAll()) {
		t.Errorf("Normalize of the zero Policy = %#v, want DenyAll %#v", got, DenyAll())
	}
	if got.AllowedDomains == nil || got.AllowedCIDRs == nil || got.DeniedDomains == nil {
		t.Error("lists must never be nil")
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %q", warnings)
	}
}

func TestNormalizeErrors(t *testing.T) {
	many := make([]string, MaxDomains+1)
	for i := range many {
		many[i] = fmt.Sprintf("h%d.example", i)
	}
	manyCIDRs := make([]string, MaxCIDRs+1)
	for i := range manyCIDRs {
		manyCIDRs[i] = fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)
	}
	tests := []struct {
		name      string
		p         Policy
		wantField string
		wantMsg   string
	}{
		{"bad mode", Policy{Mode: "block"}, "mode", `"block" is not a mode`},
		{"mode case", Policy{Mode: "Enforce"}, "mode", "not a mode"},
		{"ip in domains", Policy{AllowedDomains: []string{"ok.example", "x.example", "y.example", "1.2.3.4"}}, "allowed_domains[3]", `"1.2.3.4" is an IP address; put it in allowed_cidrs`},
		{"tld wildcard", Policy{AllowedDomains: []string{"*.com"}}, "allowed_domains[0]", `"*.com" is too broad: a wildcard needs at least two labels after "*."`},
		{"cidr in domains", Policy{AllowedDomains: []string{"10.0.0.0/8"}}, "allowed_domains[0]", `"10.0.0.0/8" is a CIDR; put it in allowed_cidrs`},
		{"ip in denied", Policy{DeniedDomains: []string{"192.0.2.1"}}, "denied_domains[0]", "denied_domains holds host names"},
		{"bad denied", Policy{DeniedDomains: []string{"a.example", "bad_name.example"}}, "denied_domains[1]", "'_'"},
		{"host bits", Policy{AllowedCIDRs: []string{"192.0.2.0/24", "10.0.0.1/8"}}, "allowed_cidrs[1]", "10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"},
		{"name in cidrs", Policy{AllowedCIDRs: []string{"db.internal.example"}}, "allowed_cidrs[0]", "put it in allowed_domains"},
		{"too many domains", Policy{AllowedDomains: many}, "allowed_domains", "the limit is 10000"},
		{"too many denied", Policy{DeniedDomains: many}, "denied_domains", "the limit is 10000"},
		{"too many cidrs", Policy{AllowedCIDRs: manyCIDRs}, "allowed_cidrs", "the limit is 10000"},
	}
	for _, tt := range tests {
		_, _, err := tt.p.Normalize()
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%s: error %v is not a *FieldError", tt.name, err)
			continue
		}
		if fe.Field != tt.wantField || !strings.Contains(fe.Message, tt.wantMsg) {
			t.Errorf("%s: error = {%q, %q}, want {%q, ...%q...}", tt.name, fe.Field, fe.Message, tt.wantField, tt.wantMsg)
		}
	}
}

// TestCompileSkipsLimits: the limits bound what clients store, not what Compile can take.
func TestCompileSkipsLimits(t *testing.T) {
	many := make([]string, MaxDomains+1)
	for i := range many {
		many[i] = fmt.Sprintf("h%d.example", i)
	}
	if _, err := Compile(Policy{AllowedDomains: many}, nil); err != nil {
		t.Errorf("Compile with %d domains: %v", len(many), err)
	}
	if _, err := Compile(Policy{AllowedDomains: []string{"*.com"}}, nil); err == nil {
		t.Error("Compile accepted an invalid entry")
	}
}

func TestNormalizeWarnings(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
		want []string // a part of each warning, in order
	}{
		{"domains without web", Policy{AllowedDomains: []string{"db.example"}},
			[]string{"allow_http, allow_https and allow_package_managers are all off"}},
		{"domains with pm only", Policy{AllowPackageManagers: true, AllowedDomains: []string{"db.example"}}, nil},
		{"allowed and denied", Policy{AllowHTTPS: true, AllowedDomains: []string{"a.example", "x.b.example", "c.example"}, DeniedDomains: []string{"A.example.", "*.b.example"}},
			[]string{"a.example is in allowed_domains and denied", "x.b.example is in allowed_domains and denied"}},
		{"denied wildcard over allowed wildcard", Policy{AllowHTTPS: true, AllowedDomains: []string{"*.x.b.example"}, DeniedDomains: []string{"*.b.example"}},
			[]string{"*.x.b.example is in allowed_domains and denied"}},
		{"allowed wildcard over denied name is fine", Policy{AllowHTTPS: true, AllowedDomains: []string{"*.b.example"}, DeniedDomains: []string{"bad.b.example"}}, nil},
		{"cidr everything", Policy{AllowedCIDRs: []string{"0.0.0.0/0"}},
			[]string{"allowed_cidrs 0.0.0.0/0 includes loopback 127.0.0.0/8, link-local 169.254.0.0/16, unspecified (this network) 0.0.0.0/8, multicast 224.0.0.0/4, broadcast 255.255.255.255/32: hard denials still apply"}},
		{"cidr link-local", Policy{AllowedCIDRs: []string{"169.254.169.254"}}, []string{"link-local 169.254.0.0/16: hard denials still apply"}},
		{"cidr metadata v6", Policy{AllowedCIDRs: []string{"fd00::/8"}}, []string{"cloud metadata fd00:ec2::254/128"}},
		{"cidr private is fine", Policy{AllowedCIDRs: []string{"10.0.0.0/8"}}, nil},
		{"monitor", Policy{Mode: Monitor}, []string{"mode is monitor"}},
	}
	for _, tt := range tests {
		_, ws, err := tt.p.Normalize()
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if len(ws) != len(tt.want) {
			t.Errorf("%s: warnings = %q, want %d", tt.name, ws, len(tt.want))
			continue
		}
		for i := range ws {
			if !strings.Contains(ws[i], tt.want[i]) {
				t.Errorf("%s: warning %q does not contain %q", tt.name, ws[i], tt.want[i])
			}
		}
	}
}

// TestNormalizeForPublicRanges: a range passed in --public-cidrs is public, so allowed_cidrs
// reaching into it draws no hard-denial warning; what stays denied still does.
func TestNormalizeForPublicRanges(t *testing.T) {
	public := func(cidrs ...string) *Classifier {
		c := &Classifier{}
		for _, s := range cidrs {
			c.Public = append(c.Public, netip.MustParsePrefix(s))
		}
		return c
	}
	tests := []struct {
		name  string
		cidrs []string
		c     *Classifier
		want  string // a part of the one warning; "" for none
		not   string // what that warning must not name
	}{
		{"no classifier", []string{"127.0.0.3/32"}, nil, "loopback 127.0.0.0/8", ""},
		{"not public", []string{"127.0.0.3/32"}, public("198.51.100.0/24"), "loopback 127.0.0.0/8", ""},
		{"inside a public range", []string{"127.0.0.3/32"}, public("127.0.0.0/26"), "", ""},
		{"equal to a public range", []string{"127.0.0.0/26"}, public("127.0.0.0/26"), "", ""},
		{"public range inside it", []string{"127.0.0.0/25"}, public("127.0.0.0/26"), "loopback 127.0.0.0/8", ""},
		{"covered by two public ranges", []string{"127.0.0.0/25"}, public("127.0.0.64/26", "127.0.0.0/26"), "", ""},
		{"half covered", []string{"127.0.0.0/24"}, public("127.0.0.0/25"), "loopback 127.0.0.0/8", ""},
		{"public covers all loopback", []string{"0.0.0.0/0"}, public("127.0.0.0/8", "169.254.0.0/16"), "unspecified (this network) 0.0.0.0/8, multicast", "loopback"},
		{"link-local public", []string{"169.254.169.254"}, public("169.254.0.0/16"), "", ""},
		{"IPv4-mapped public range", []string{"127.0.0.3"}, public("::ffff:127.0.0.0/104"), "", ""},
		{"v6 loopback public", []string{"::1"}, public("::1/128"), "", ""},
		{"multicast is never lifted", []string{"224.0.0.1"}, public("224.0.0.0/4"), "multicast 224.0.0.0/4", ""},
	}
	for _, tt := range tests {
		_, ws, err := Policy{AllowedCIDRs: tt.cidrs}.NormalizeFor(tt.c)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		switch {
		case tt.want == "" && len(ws) != 0:
			t.Errorf("%s: warnings = %q, want none", tt.name, ws)
		case tt.want != "" && (len(ws) != 1 || !strings.Contains(ws[0], tt.want)):
			t.Errorf("%s: warnings = %q, want one with %q", tt.name, ws, tt.want)
		case tt.not != "" && strings.Contains(ws[0], tt.not):
			t.Errorf("%s: warning %q names %q, which --public-cidrs lifts", tt.name, ws[0], tt.not)
		}
	}
}

func TestNormalizeWarningsBounded(t *testing.T) {
	p := Policy{AllowHTTPS: true, DeniedDomains: []string{"*.b.example"}}
	for i := range 100 {
		p.AllowedDomains = append(p.AllowedDomains, fmt.Sprintf("h%d.b.example", i))
	}
	_, ws, err := p.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != maxWarningsPerKind+1 || !strings.Contains(ws[len(ws)-1], "95 more") {
		t.Errorf("warnings = %q, want %d and a count of the rest", ws, maxWarningsPerKind+1)
	}
}
