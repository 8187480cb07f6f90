package proxy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
)

var fuzzSeeds = []string{
	"api.example.com:443", "API.Example.COM.:443", "bücher.example:443", "xn--bcher-kva.example:443",
	"ｅｘａｍｐｌｅ．ｃｏｍ:443", "192.0.2.1:443", "[2001:db8::1]:443", "[::ffff:192.0.2.1]:443",
	"[fe80::1%eth0]:443", "user@api.example.com:443", "api.example.com", "api.example.com:",
	":443", "[::1]", "127.1:80", "0x7f.1:80", "a..b:443", "exa_mple.com:443", "example.com:+443",
	"example.com:0443", "example.com:65536", "[2001:db8::1]x:443", "a.b.c:443:1", "",
}

// fuzzSet has rules that a wrongly normalised name would slip past.
var fuzzSet = func() *policy.Effective {
	m, err := policy.Compile(policy.Policy{
		AllowHTTPS: true, AllowHTTP: true,
		AllowedDomains: []string{"*.example.com", "xn--bcher-kva.example"},
		DeniedDomains:  []string{"secret.example.com"},
		AllowedCIDRs:   []string{"192.0.2.0/24"},
	}, nil)
	if err != nil {
		panic(err)
	}
	return policy.NewEffective(nil, policy.Layered{Layer: policy.LayerSession, Matcher: m})
}()

// checkTarget holds for every target parseAuthority accepts from in.
func checkTarget(t *testing.T, in string, defaultPort uint16) {
	got, err := parseAuthority(in, defaultPort)
	if err != nil {
		if got != (target{}) {
			t.Fatalf("%q: error %v with a target %+v", in, err, got)
		}
		return
	}
	if got.port == 0 {
		t.Fatalf("%q: port 0", in)
	}
	if strings.ContainsAny(in, "@%/") {
		t.Fatalf("%q: accepted a host with userinfo, escapes or a path", in)
	}
	hostPart, _, _ := strings.Cut(in, ":")
	if strings.HasPrefix(in, "[") {
		hostPart = in[1:strings.IndexByte(in, ']')]
	}
	switch {
	case got.nameErr != nil:
		if _, err := policy.NormalizeName(hostPart); err == nil {
			t.Fatalf("%q: refused a name NormalizeName accepts", in)
		}
		if d := fuzzSet.Decide(policy.Conn{Host: got.host, Port: got.port}); d.Allow {
			t.Fatalf("%q: a name the proxy refuses is allowed by the policy: %+v", in, d)
		}
		return
	case got.host == "":
		if !got.ip.IsValid() || got.ip.Is4In6() || got.ip.Zone() != "" {
			t.Fatalf("%q: address %v is not unmapped and zone-free", in, got.ip)
		}
		if a, err := netip.ParseAddr(hostPart); err != nil || a.Unmap() != got.ip {
			t.Fatalf("%q: address %v is not the one given", in, got.ip)
		}
	default:
		want, err := policy.NormalizeName(hostPart)
		if err != nil || want != got.host {
			t.Fatalf("%q: host %q, NormalizeName gives %q, %v", in, got.host, want, err)
		}
		if again, _ := policy.NormalizeName(got.host); again != got.host {
			t.Fatalf("%q: host %q is not in normal form", in, got.host)
		}
		// The policy judges the raw spelling and the proxy's form alike.
		for _, port := range []uint16{80, 443} {
			raw := fuzzSet.Decide(policy.Conn{Host: hostPart, Port: port})
			norm := fuzzSet.Decide(got.conn())
			norm2 := fuzzSet.Decide(policy.Conn{Host: got.host, Port: port})
			if port == got.port && raw != norm || raw != norm2 {
				t.Fatalf("%q: raw host decides %+v, normalised %+v", in, raw, norm2)
			}
		}
	}
	// The normal form reads back as itself, as a CONNECT target and as a Host header.
	if back, err := parseAuthority(got.String(), 0); err != nil || back != got {
		t.Fatalf("%q: String %q parses as %+v, %v", in, got.String(), back, err)
	}
	if back, err := parseAuthority(got.hostHeader(80), 80); err != nil || back != got {
		t.Fatalf("%q: hostHeader %q parses as %+v, %v", in, got.hostHeader(80), back, err)
	}
}

func FuzzConnectTarget(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) { checkTarget(t, in, 0) })
}

func FuzzHostHeader(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		checkTarget(t, in, 80)
		// As the authority of an absolute URL: the same target, or a refusal.
		auth, err := absoluteAuthority("http://" + in + "/path")
		if err != nil {
			return
		}
		if strings.ContainsAny(auth, "/?#") {
			t.Fatalf("%q: authority %q runs into the path", in, auth)
		}
		checkTarget(t, auth, 80)
	})
}

func TestParseAuthority(t *testing.T) {
	for in, want := range map[string]string{
		"API.Example.COM.:443":   "api.example.com:443",
		"bücher.example:443":     "xn--bcher-kva.example:443",
		"[::ffff:192.0.2.1]:443": "192.0.2.1:443",
		"[2001:DB8::1]:443":      "[2001:db8::1]:443",
		"example.com:0443":       "example.com:443",
	} {
		got, err := parseAuthority(in, 0)
		if err != nil || got.String() != want {
			t.Errorf("%q: %v %v, want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"api.example.com", "user@api.example.com:443", "[fe80::1%eth0]:443", "::1:443",
		"example.com:+443", "example.com:65536", "example.com:0", ":443", "[2001:db8::1]x:443", "a.com:443/x"} {
		if got, err := parseAuthority(in, 0); err == nil {
			t.Errorf("%q: accepted as %+v", in, got)
		}
	}
	if got, err := parseAuthority("example.com", 80); err != nil || got.port != 80 || got.hostHeader(80) != "example.com" {
		t.Errorf("default port: %+v %v", got, err)
	}
}
