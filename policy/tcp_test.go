package policy

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestNormalizeEndpoint(t *testing.T) {
	tests := []struct{ in, want string }{
		{"github.com:22", "github.com:22"},
		{"GitHub.COM.:22", "github.com:22"},
		{"*.DB.example.test:5432", "*.db.example.test:5432"},
		{"bücher.example:6379", "xn--bcher-kva.example:6379"},
		{"x.test:1", "x.test:1"},
		{"x.test:65535", "x.test:65535"},
		{"x.test:443", "x.test:443"},
	}
	for _, tt := range tests {
		got, err := NormalizeEndpoint(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("NormalizeEndpoint(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestNormalizeEndpointRejects(t *testing.T) {
	tests := []struct{ in, says string }{
		{"github.com", "no port"},
		{"github.com:", "port is empty"},
		{"github.com:0", "1 to 65535"},
		{"github.com:65536", "1 to 65535"},
		{"github.com:-1", "no ranges"},
		{"github.com:22-23", "no ranges"},
		{"github.com:22,23", "no ranges"},
		{"github.com:022", "leading zero"},
		{"github.com:+22", "not a number"},
		{"github.com:ssh", "not a number"},
		{"github.com: 22", "not a number"},
		{"203.0.113.7:22", "allowed_cidrs"},
		{"203.0.113.7", "allowed_cidrs"},
		{"[2001:db8::1]:22", "allowed_cidrs"},
		{"2001:db8::1", "allowed_cidrs"},
		{"::ffff:203.0.113.7:22", "allowed_cidrs"},
		{"127.1:22", ""},
		{"*:22", ""},
		{"*.com:22", ""},
		{"a.*.test:22", ""},
		{"exa mple.test:22", ""},
		{":22", ""},
		{"user@x.test:22", ""},
		{"x.test/y:22", ""},
	}
	for _, tt := range tests {
		got, err := NormalizeEndpoint(tt.in)
		if err == nil {
			t.Errorf("NormalizeEndpoint(%q) = %q, want an error", tt.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tt.says) {
			t.Errorf("NormalizeEndpoint(%q) error %q, want it to say %q", tt.in, err, tt.says)
		}
	}
}

func TestNormalizeAllowedTCP(t *testing.T) {
	p, _, err := Policy{AllowedTCP: []string{"B.test:22", "a.test:5432", "b.test:22", "*.c.test:6379"}}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"*.c.test:6379", "a.test:5432", "b.test:22"}; !reflect.DeepEqual(p.AllowedTCP, want) {
		t.Errorf("AllowedTCP = %q, want %q", p.AllowedTCP, want)
	}

	_, _, err = Policy{AllowedTCP: []string{"a.test:22", "203.0.113.7:22"}}.Normalize()
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "allowed_tcp[1]" || !strings.Contains(fe.Message, "allowed_cidrs") {
		t.Errorf("IP literal: err = %v, want a FieldError on allowed_tcp[1] that points at allowed_cidrs", err)
	}

	big := make([]string, MaxTCP+1)
	for i := range big {
		big[i] = "h" + itoa(i) + ".test:22"
	}
	if _, _, err := (Policy{AllowedTCP: big}).Normalize(); !errors.As(err, &fe) || fe.Field != "allowed_tcp" {
		t.Errorf("over the limit: err = %v, want a FieldError on allowed_tcp", err)
	}
	if _, _, err := (Policy{AllowedTCP: big[:MaxTCP]}).Normalize(); err != nil {
		t.Errorf("at the limit: %v", err)
	}
	if _, err := Compile(Policy{AllowedTCP: big}, nil); err != nil {
		t.Errorf("Compile applies no limit: %v", err)
	}

	if _, _, err := Parse([]byte(`{"allowed_tcp": ["a.test:22"], "ALLOWED_TCP": ["b.test:22"]}`)); err == nil {
		t.Error("Parse accepted ALLOWED_TCP")
	}
	if _, _, err := Parse([]byte(`{"allowed_tcp": "a.test:22"}`)); err == nil {
		t.Error("Parse accepted a string for allowed_tcp")
	}
}

func itoa(i int) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + i%10)}, b...)
		if i /= 10; i == 0 {
			return string(b)
		}
	}
}

func TestDecideAllowedTCP(t *testing.T) {
	p := Policy{
		AllowedTCP:    []string{"github.test:22", "*.db.test:5432", "*.b.db.test:6379", "web.test:443", "plain.test:80", "bad.db.test:5432"},
		AllowedCIDRs:  []string{"198.51.100.0/24"},
		DeniedDomains: []string{"bad.db.test"},
	}
	s := NewEffective(testClassifier, Layered{LayerSession, mustCompile(t, p)})
	pub, priv, inside := ip("203.0.113.7"), ip("10.1.2.3"), ip("198.51.100.9")
	tests := []struct {
		name string
		c    Conn
		w    want
	}{
		{"name only", Conn{Host: "github.test", Port: 22}, want{true, false, ReasonAllowedTCP, "allowed_tcp github.test:22", ""}},
		{"public address", Conn{Host: "github.test", IP: pub, Port: 22}, want{true, false, ReasonAllowedTCP, "allowed_tcp github.test:22", ""}},
		{"other port", Conn{Host: "github.test", IP: pub, Port: 2222}, want{false, false, ReasonPort, "", ""}},
		{"web port not listed", Conn{Host: "github.test", IP: pub, Port: 443}, want{false, false, ReasonHTTPSOff, "", ""}},
		{"other name", Conn{Host: "gitlab.test", IP: pub, Port: 22}, want{false, false, ReasonPort, "", ""}},
		{"sub-name of exact entry", Conn{Host: "x.github.test", IP: pub, Port: 22}, want{false, false, ReasonPort, "", ""}},
		{"wildcard", Conn{Host: "a.db.test", IP: pub, Port: 5432}, want{true, false, ReasonAllowedTCP, "allowed_tcp *.db.test:5432", ""}},
		{"wildcard depth", Conn{Host: "x.y.db.test", IP: pub, Port: 5432}, want{true, false, ReasonAllowedTCP, "allowed_tcp *.db.test:5432", ""}},
		{"wildcard apex", Conn{Host: "db.test", IP: pub, Port: 5432}, want{false, false, ReasonPort, "", ""}},
		{"nested wildcard, own port", Conn{Host: "x.b.db.test", IP: pub, Port: 6379}, want{true, false, ReasonAllowedTCP, "allowed_tcp *.b.db.test:6379", ""}},
		{"nested wildcard, outer port", Conn{Host: "x.b.db.test", IP: pub, Port: 5432}, want{true, false, ReasonAllowedTCP, "allowed_tcp *.db.test:5432", ""}},
		{"outer wildcard, inner port", Conn{Host: "x.c.db.test", IP: pub, Port: 6379}, want{false, false, ReasonPort, "", ""}},
		{"denied_domains wins", Conn{Host: "bad.db.test", IP: pub, Port: 5432}, want{false, false, ReasonDeniedDomain, "denied_domains bad.db.test", ""}},
		{"private address", Conn{Host: "github.test", IP: priv, Port: 22}, want{false, false, ReasonNotPublic, "", ""}},
		{"metadata address", Conn{Host: "github.test", IP: ip("169.254.169.254"), Port: 22}, want{false, false, ReasonHardDeny, "", LayerHard}},
		{"mapped private address", Conn{Host: "github.test", IP: ip("::ffff:10.1.2.3"), Port: 22}, want{false, false, ReasonNotPublic, "", ""}},
		{"address inside allowed_cidrs", Conn{Host: "github.test", IP: inside, Port: 22}, want{true, false, ReasonAllowedCIDRs, "", ""}},
		{"allowed_tcp on 443, web flag off", Conn{Host: "web.test", IP: pub, Port: 443}, want{true, false, ReasonAllowedTCP, "allowed_tcp web.test:443", ""}},
		{"allowed_tcp on 80, web flag off", Conn{Host: "plain.test", IP: pub, Port: 80}, want{true, false, ReasonAllowedTCP, "allowed_tcp plain.test:80", ""}},
		{"IP literal", Conn{IP: pub, Port: 22, IPLiteral: true}, want{false, false, ReasonIPLiteral, ruleIPLiteralTCP, ""}},
		{"IP literal as host", Conn{Host: "203.0.113.7", IP: pub, Port: 22}, want{false, false, ReasonIPLiteral, "", ""}},
		{"IP literal inside allowed_cidrs", Conn{IP: inside, Port: 22, IPLiteral: true}, want{true, false, ReasonAllowedCIDRs, "", ""}},
		{"UDP to the name", Conn{Host: "github.test", IP: pub, Port: 22, Transport: UDP}, want{false, false, ReasonUDP, "", ""}},
		{"upper case", Conn{Host: "GitHub.Test", IP: pub, Port: 22}, want{true, false, ReasonAllowedTCP, "", ""}},
		{"trailing dot", Conn{Host: "github.test.", IP: pub, Port: 22}, want{true, false, ReasonAllowedTCP, "", ""}},
	}
	for _, tt := range tests {
		check(t, tt.name, s.Decide(tt.c), tt.w)
	}
}

func TestDecideAllowedTCPLayers(t *testing.T) {
	vm := mustCompile(t, Policy{AllowedTCP: []string{"*.db.test:5432", "git.test:22"}})
	session := mustCompile(t, Policy{AllowedTCP: []string{"a.db.test:5432"}})
	mon := mustCompile(t, Policy{Mode: Monitor})
	pub := ip("203.0.113.7")
	both := NewEffective(testClassifier, Layered{LayerSession, session}, Layered{LayerVM, vm})
	check(t, "both list it", both.Decide(Conn{Host: "a.db.test", IP: pub, Port: 5432}), want{true, false, ReasonAllowedTCP, "allowed_tcp a.db.test:5432", LayerSession})
	check(t, "session narrows", both.Decide(Conn{Host: "b.db.test", IP: pub, Port: 5432}), want{false, false, ReasonPort, "", LayerSession})
	check(t, "vm only", both.Decide(Conn{Host: "git.test", IP: pub, Port: 22}), want{false, false, ReasonPort, "", LayerSession})
	monitored := NewEffective(testClassifier, Layered{LayerSession, mon}, Layered{LayerVM, vm})
	check(t, "monitor never loosens", monitored.Decide(Conn{Host: "x.test", IP: pub, Port: 22}), want{false, false, ReasonPort, "", LayerVM})
	check(t, "monitor would deny", monitored.Decide(Conn{Host: "git.test", IP: pub, Port: 22}), want{true, true, ReasonPort, "", LayerSession})

	if got := both.TCPPorts("a.db.test"); !slices.Equal(got, []uint16{5432}) {
		t.Errorf("TCPPorts(a.db.test) = %v, want [5432]", got)
	}
	if got := both.TCPPorts("b.db.test"); len(got) != 0 {
		t.Errorf("TCPPorts(b.db.test) = %v, want none: the session does not list it", got)
	}
	if got := NewEffective(testClassifier).TCPPorts("a.db.test"); len(got) != 0 {
		t.Errorf("TCPPorts with no layer = %v, want none", got)
	}
	if got := NewEffective(testClassifier, Layered{LayerVM, nil}).TCPPorts("a.db.test"); len(got) != 0 {
		t.Errorf("TCPPorts with a nil layer = %v, want none", got)
	}
}

func TestTCPPorts(t *testing.T) {
	m := mustCompile(t, Policy{
		AllowedTCP:    []string{"git.test:22", "git.test:2222", "git.test:443", "git.test:80", "*.git.test:9418", "bad.git.test:22"},
		DeniedDomains: []string{"bad.git.test"},
	})
	s := NewEffective(testClassifier, Layered{LayerVM, m})
	tests := []struct {
		name string
		want []uint16
	}{
		{"git.test", []uint16{22, 2222}},
		{"x.git.test", []uint16{9418}},
		{"bad.git.test", nil},
		{"other.test", nil},
	}
	for _, tt := range tests {
		if got := s.TCPPorts(tt.name); !slices.Equal(got, tt.want) {
			t.Errorf("TCPPorts(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestDecideQueryAllowedTCP(t *testing.T) {
	s := NewEffective(testClassifier, Layered{LayerSession, mustCompile(t, Policy{AllowedTCP: []string{"git.test:22", "*.db.test:5432"}, DeniedDomains: []string{"bad.db.test"}})})
	check(t, "listed name", s.DecideQuery(Query{"git.test", QTypeA}), want{true, false, ReasonAllowedTCP, "allowed_tcp git.test:22", ""})
	check(t, "wildcard", s.DecideQuery(Query{"x.db.test", QTypeAAAA}), want{true, false, ReasonAllowedTCP, "allowed_tcp *.db.test:5432", ""})
	check(t, "apex", s.DecideQuery(Query{"db.test", QTypeA}), want{false, false, ReasonNameNotListed, "", ""})
	check(t, "denied", s.DecideQuery(Query{"bad.db.test", QTypeA}), want{false, false, ReasonDeniedDomain, "", ""})
	check(t, "TXT", s.DecideQuery(Query{"git.test", 16}), want{false, false, ReasonQueryType, "", LayerHard})
}

func TestIntersectEndpoints(t *testing.T) {
	tests := []struct{ a, b, want []string }{
		{[]string{"a.test:22"}, []string{"a.test:22"}, []string{"a.test:22"}},
		{[]string{"a.test:22"}, []string{"a.test:23"}, []string{}},
		{[]string{"*.db.test:5432", "git.test:22"}, []string{"x.db.test:5432", "*.db.test:6379"}, []string{"x.db.test:5432"}},
		{[]string{"*.db.test:5432"}, []string{"*.b.db.test:5432"}, []string{"*.b.db.test:5432"}},
		{[]string{"a.test:22"}, []string{}, []string{}},
	}
	for _, tt := range tests {
		if got := IntersectEndpoints(tt.a, tt.b); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("IntersectEndpoints(%q, %q) = %q, want %q", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestExplainAllowedTCP(t *testing.T) {
	e := Explain(nil,
		NamedPolicy{Layer: LayerSession, Policy: Policy{AllowedTCP: []string{"*.db.test:5432", "git.test:22"}}},
		NamedPolicy{Layer: LayerVM, Policy: Policy{AllowedTCP: []string{"a.db.test:5432"}}},
	)
	if want := []string{"a.db.test:5432"}; !reflect.DeepEqual(e.AllowedTCP.Value, want) {
		t.Errorf("AllowedTCP = %q, want %q", e.AllowedTCP.Value, want)
	}
	if !slices.ContainsFunc(e.Notes, func(n string) bool { return strings.Contains(n, "allowed_tcp opens TCP") }) {
		t.Errorf("notes do not explain allowed_tcp: %q", e.Notes)
	}
	e = Explain(nil,
		NamedPolicy{Layer: LayerSession, Policy: Policy{AllowedTCP: []string{"git.test:22"}}},
		NamedPolicy{Layer: LayerVM, Policy: Policy{AllowedTCP: []string{"git.test:2222"}}},
	)
	if len(e.AllowedTCP.Value) != 0 || !slices.ContainsFunc(e.Notes, func(n string) bool { return strings.Contains(n, "no endpoint in common") }) {
		t.Errorf("disjoint layers: AllowedTCP = %q, notes %q", e.AllowedTCP.Value, e.Notes)
	}
}

func TestDecideAllowedTCPAllocs(t *testing.T) {
	s := NewEffective(testClassifier, Layered{LayerSession, mustCompile(t, Policy{AllowedTCP: []string{"git.test:22", "*.db.test:5432", "*.b.db.test:6379"}})})
	conns := []Conn{
		{IP: ip("203.0.113.7"), Port: 22, Host: "git.test"},
		{IP: ip("203.0.113.7"), Port: 5432, Host: "x.b.db.test"},
		{IP: ip("203.0.113.7"), Port: 23, Host: "git.test"},
		{IP: ip("203.0.113.7"), Port: 23, IPLiteral: true},
	}
	n := testing.AllocsPerRun(100, func() {
		for _, c := range conns {
			s.Decide(c)
		}
		s.DecideQuery(Query{"x.db.test", QTypeA})
	})
	if n != 0 {
		t.Errorf("allowed_tcp decisions allocate %v times per run, want 0", n)
	}
}

func FuzzNormalizeEndpoint(f *testing.F) {
	for _, s := range []string{"github.com:22", "*.db.test:5432", "[::1]:22", "1.2.3.4:22", "a:0", "a.test:65536", "x.test:022", "bücher.example:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizeEndpoint(s)
		if err != nil {
			return
		}
		// Normal form is a fixed point, and it parses back into a valid pattern and port.
		if again, err := NormalizeEndpoint(n); err != nil || again != n {
			t.Fatalf("NormalizeEndpoint(%q) = %q, which normalises to %q, %v", s, n, again, err)
		}
		name, port := splitEndpoint(n)
		if port == 0 {
			t.Fatalf("%q: port 0", n)
		}
		if _, err := NormalizePattern(name); err != nil {
			t.Fatalf("%q: name %q: %v", n, name, err)
		}
	})
}
