package policy

import (
	"strings"
	"testing"
)

func TestNormalizeName(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	name253 := strings.Repeat(label63+".", 3) + strings.Repeat("b", 61) // 3*64 + 61 = 253
	tests := []struct {
		in, want string
	}{
		{"example.com", "example.com"},
		{"EXAMPLE.com", "example.com"},
		{"Example.COM.", "example.com"},
		{"example.com.", "example.com"},
		{"a-b.example.com", "a-b.example.com"},
		{"r3---sn-abc.example.com", "r3---sn-abc.example.com"}, // hyphens inside a label are fine
		{"R3---SN-ABC.example.com", "r3---sn-abc.example.com"},
		{"localhost", "localhost"},
		{"123.example.com", "123.example.com"}, // numeric labels are fine, except the last
		{"bücher.example", "xn--bcher-kva.example"},
		{"BÜCHER.example", "xn--bcher-kva.example"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"XN--BCHER-KVA.example", "xn--bcher-kva.example"},
		{"ｅｘａｍｐｌｅ．ｃｏｍ", "example.com"}, // full-width letters and full stop
		{"example。com", "example.com"}, // ideographic full stop
		{"münchen.test.", "xn--mnchen-3ya.test"},
		{"faß.example", "xn--fa-hia.example"}, // non-transitional: ß stays
		{"ⓔxample.com", "example.com"},        // compatibility mapping
		{"ﬁ.example", "fi.example"},
		{"ex\u00adample.com", "example.com"}, // soft hyphen is ignored
		{"\U0001F4A9.example", "xn--ls8h.example"},
		{label63 + ".example", label63 + ".example"},
		{name253, name253},
		{name253 + ".", name253},
	}
	for _, tt := range tests {
		got, err := NormalizeName(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestNormalizeNameRejects(t *testing.T) {
	label64 := strings.Repeat("a", 64)
	name254 := strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("b", 62)
	tests := []struct {
		in      string
		wantErr string // a part of the message
	}{
		{"", "empty"},
		{".", "no labels"},
		{"..", "empty label"},
		{"a..b", "empty label"},
		{".example.com", "empty label"},
		{"example.com..", "empty label"},
		{label64 + ".example", "label of 64 bytes"},
		{name254, "254 bytes"},
		{"under_score.example", "'_'"},
		{"-lead.example", "starts or ends with '-'"},
		{"trail-.example", "starts or ends with '-'"},
		{"user@example.com", "'@'"},
		{"example.com/path", "'/'"},
		{"https://example.com", "':'"},
		{"example.com:443", "':'"},
		{"exa mple.com", "space"},
		{"exa\tmple.com", "control character"},
		{"exa\x00mple.com", "control character"},
		{"exa\x7fmple.com", "control character"},
		{"*.example.com", "'*'"},
		{"1.2.3.4", "IP address; put it in allowed_cidrs"},
		{"1.2.3.4.", "IP address"},
		{"::1", "IP address"},
		{"2001:db8::1", "IP address"},
		{"[::1]", "IP address"},
		{"[2001:db8::1]", "IP address"},
		{"fe80::1%eth0", "IP address"},
		{"::ffff:10.0.0.1", "IP address"},
		{"127.1", "numeric label"},
		{"2130706433", "numeric label"},
		{"0x7f000001", "numeric label"},
		{"0x7f.0.0.1", "numeric label"},
		{"example.0x", "numeric label"},
		{"xn--zz.example", "punycode"},
		{"xn--abc.example", "punycode"},
		{"xn--abc-.example", "'-'"},
		{"exa\u0085mple.com", "international"}, // NEL, a control character outside ASCII
		{"exa\u3000mple.com", "international"}, // ideographic space
		{"ex＠ample.com", "international"},      // full-width '@'
		{"ex＿ample.com", "international"},      // full-width '_'
		{"\u05d0a.example", "international"},   // breaks the Bidi rule
		{"\u0301a.example", "international"},   // starts with a combining mark
		{"a.．", "empty label"},                 // full-width dot after a dot
		{"．", "no labels"},
		{"exa!mple.com", "'!'"},
		{"ex%41mple.com", "'%'"},
		{"é" + strings.Repeat("a", 70) + ".example", "label of"},
	}
	for _, tt := range tests {
		got, err := NormalizeName(tt.in)
		if err == nil {
			t.Errorf("NormalizeName(%q) = %q, want an error about %q", tt.in, got, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("NormalizeName(%q) error %q does not mention %q", tt.in, err, tt.wantErr)
		}
	}
}

// TestNormalizeNameFastPathAllocs pins the property the data path relies on: a name that is
// already normal costs no allocation, trailing dot or not.
func TestNormalizeNameFastPathAllocs(t *testing.T) {
	for _, s := range []string{"www.example.com", "www.example.com.", "a.b.c.d.e.f.example.test"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = NormalizeName(s) }); n != 0 {
			t.Errorf("NormalizeName(%q) allocates %v times, want 0", s, n)
		}
	}
}

func TestNormalizePattern(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"example.com", "example.com"},
		{"*.example.com", "*.example.com"},
		{"*.EXAMPLE.com.", "*.example.com"},
		{"*.bücher.example", "*.xn--bcher-kva.example"},
		{"*.co.uk", "*.co.uk"}, // two labels: allowed, if broad
		{"*.a.b.c.example", "*.a.b.c.example"},
	}
	for _, tt := range tests {
		got, err := NormalizePattern(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("NormalizePattern(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	rejects := []struct {
		in, wantErr string
	}{
		{"*", "alone"},
		{"*.", "alone"},
		{"*.com", "too broad"},
		{"*.com.", "too broad"},
		{"*.*.example.com", "only wildcard"},
		{"a*.example.com", "only wildcard"},
		{"*b.example.com", "only wildcard"},
		{"b.*.example.com", "only wildcard"},
		{"example.*", "only wildcard"},
		{"**.example.com", "only wildcard"},
		{"*.1.2.3.4", "IP address"},
		{"*.127.1", "numeric label"},
		{"*..example.com", "empty label"},
		{"*.exa_mple.com", "'_'"},
		{"", "empty"},
	}
	for _, tt := range rejects {
		got, err := NormalizePattern(tt.in)
		if err == nil {
			t.Errorf("NormalizePattern(%q) = %q, want an error about %q", tt.in, got, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("NormalizePattern(%q) error %q does not mention %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestWildcardDepth(t *testing.T) {
	set := newDomainSet([]string{"*.example.com", "exact.test"}, []string{"w", "e"})
	tests := []struct {
		host string
		want string // "" = no match
	}{
		{"example.com", ""}, // the wildcard never matches its own apex
		{"a.example.com", "w"},
		{"a.b.example.com", "w"},
		{"a.b.c.d.e.example.com", "w"},
		{"aexample.com", ""}, // a suffix must start at a label boundary
		{"example.com.evil.test", ""},
		{"exact.test", "e"},
		{"a.exact.test", ""}, // an exact entry matches only itself
		{"com", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, ok := set.match(tt.host)
		if ok != (tt.want != "") || got != tt.want {
			t.Errorf("match(%q) = %q, %v; want %q", tt.host, got, ok, tt.want)
		}
	}
}

func TestIntersectDomains(t *testing.T) {
	tests := []struct {
		a, b, want []string
	}{
		{[]string{"*.a.com"}, []string{"x.a.com"}, []string{"x.a.com"}},
		{[]string{"*.a.com"}, []string{"*.b.a.com"}, []string{"*.b.a.com"}},
		{[]string{"*.a.com"}, []string{"a.com"}, []string{}}, // the apex is not under the wildcard
		{[]string{"a.com", "b.com"}, []string{"b.com", "c.com"}, []string{"b.com"}},
		{[]string{"*.a.com", "z.test"}, []string{"*.a.com", "x.a.com"}, []string{"*.a.com"}},
		{[]string{"x.a.com"}, []string{"y.a.com"}, []string{}},
		{[]string{}, []string{"x.a.com"}, []string{}},
	}
	for _, tt := range tests {
		got := IntersectDomains(tt.a, tt.b)
		if strings.Join(got, ",") != strings.Join(tt.want, ",") || got == nil {
			t.Errorf("IntersectDomains(%q, %q) = %q, want %q", tt.a, tt.b, got, tt.want)
		}
		if back := IntersectDomains(tt.b, tt.a); strings.Join(back, ",") != strings.Join(got, ",") {
			t.Errorf("IntersectDomains is not symmetric for %q, %q: %q vs %q", tt.a, tt.b, got, back)
		}
	}
}
