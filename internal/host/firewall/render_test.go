package firewall

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from Render")

func pfx(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// sbx makes the n-th sandbox of the test range: 100.96.0.(4n+2)/30, gateway 4n+1.
func sbx(n int, name string, allowed ...string) Sandbox {
	base := u32(ip("100.96.0.0")) + uint32(4*n)
	return Sandbox{
		Name: name, HostIface: "eg" + name, Addr: addr4(base + 2), Gateway: addr4(base + 1),
		Allowed: pfx(allowed...),
	}
}

func withSandboxes(s ...Sandbox) Desired {
	return Desired{
		Sandboxes: s, ProxyPort: 15001, DNSPort: 15053, SandboxCIDR: netip.MustParsePrefix("100.96.0.0/16"),
		HardDeny: pfx("198.18.0.2/32", "fe80::/10", "fd00:ec2::254/128"),
	}
}

// goldenStates are the states of the golden files, also applied to the kernel in tests.
func goldenStates() map[string]Desired {
	three := withSandboxes(
		sbx(2, "vm-c", "198.51.100.0/25", "203.0.113.0/24"),
		sbx(0, "vm-a", "198.51.100.0/24", "198.51.100.128/25", "203.0.113.7/32", "2001:db8::/32"),
		sbx(1, "vm-b", "198.51.100.64/26", "198.51.100.0/26", "0.0.0.0/0"),
	)
	three.IfacePrefix = "eg"
	three.Sandboxes[1].TCP = []Endpoint{ // vm-a: unsorted, a duplicate, an IPv6 and an expired one
		{Addr: ip("203.0.113.10"), Port: 5432, Timeout: 2 * time.Minute},
		{Addr: ip("203.0.113.9"), Port: 22, Timeout: 150 * time.Second},
		{Addr: ip("::ffff:203.0.113.10"), Port: 22, Timeout: 25 * time.Hour},
		{Addr: ip("203.0.113.10"), Port: 5432, Timeout: time.Minute},
		{Addr: ip("2001:db8::1"), Port: 22, Timeout: time.Hour},
		{Addr: ip("203.0.113.11"), Port: 22, Timeout: -time.Second},
	}
	three.Sandboxes[2].Monitor = true // vm-b
	three.LogGroup = 7
	three.HardDeny = append(three.HardDeny, pfx("169.254.169.254/32", "198.18.0.0/31", "::ffff:198.18.0.4/127")...)
	one := sbx(0, "egressd-1a2b3c4d5e", "198.51.100.0/24")
	one.HostIface = "eg1a2b3c4d5e"
	one.TCP = []Endpoint{{Addr: ip("203.0.113.10"), Port: 22, Timeout: 120 * time.Second}}
	fast := withSandboxes(sbx(0, "vm-f", "198.51.100.0/24"), sbx(1, "vm-m"))
	fast.FastPath, fast.IfacePrefix = true, "eg"
	fast.Sandboxes[0].Fast = []Endpoint{ // unsorted, an expired one, one also in Allowed
		{Addr: ip("203.0.113.10"), Port: 443, Timeout: 2 * time.Minute},
		{Addr: ip("198.51.100.10"), Port: 443, Timeout: 30 * time.Second},
		{Addr: ip("203.0.113.11"), Port: 443, Timeout: 0},
	}
	fast.Sandboxes[0].TCP = []Endpoint{{Addr: ip("203.0.113.10"), Port: 22, Timeout: time.Minute}}
	fast.Sandboxes[1].Monitor = true
	return map[string]Desired{
		"fast":     fast,
		"empty":    {},
		"one":      withSandboxes(one),
		"three":    three,
		"no-allow": withSandboxes(sbx(5, "vm-e")),
	}
}

func TestRenderGolden(t *testing.T) {
	for name, d := range goldenStates() {
		t.Run(name, func(t *testing.T) {
			got := Render(d)
			if strings.HasPrefix(got, "#") {
				t.Fatalf("state is invalid: %s", got)
			}
			path := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Render differs from %s (go test -update regenerates it):\n%s", path, got)
			}
			if again := Render(d); again != got {
				t.Error("Render is not deterministic")
			}
		})
	}
}

// The order of sandboxes and of prefixes in the input does not matter.
func TestRenderIgnoresOrder(t *testing.T) {
	a := withSandboxes(sbx(0, "a", "198.51.100.0/25", "198.51.100.128/25"), sbx(1, "b"))
	b := withSandboxes(sbx(1, "b"), sbx(0, "a", "198.51.100.128/25", "198.51.100.0/24"))
	b.HardDeny = []netip.Prefix{b.HardDeny[2], b.HardDeny[0], b.HardDeny[1]}
	if Render(a) != Render(b) {
		t.Errorf("same state, different renders:\n%s\n%s", Render(a), Render(b))
	}
}

func TestRanges(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"198.51.100.0/24", "198.51.100.0/25"}, "198.51.100.0/24"},
		{[]string{"198.51.100.0/25", "198.51.100.128/25"}, "198.51.100.0/24"},         // adjacent: merged
		{[]string{"198.51.100.1/32", "198.51.100.2/32"}, "198.51.100.1-198.51.100.2"}, // not a prefix
		{[]string{"203.0.113.9/24"}, "203.0.113.0/24"},                                // host bits masked
		{[]string{"::ffff:203.0.113.0/120"}, "203.0.113.0/24"},                        // IPv4-mapped
		{[]string{"2001:db8::/32"}, ""},                                               // IPv6 ignored
		{[]string{"0.0.0.0/0", "203.0.113.0/24"}, "0.0.0.0/0"},
		{[]string{"255.255.255.255/32", "255.255.255.254/32"}, "255.255.255.254/31"},
		{[]string{"198.51.100.7/32", "198.51.100.0/29", "203.0.113.0/25"}, "198.51.100.0/29 203.0.113.0/25"},
	}
	for _, tt := range tests {
		rs, err := ranges(pfx(tt.in...))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rs {
			got = append(got, r.String())
		}
		if s := strings.Join(got, " "); s != tt.want {
			t.Errorf("ranges(%v) = %q, want %q", tt.in, s, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := withSandboxes(sbx(0, "a"), sbx(1, "b"))
	if _, err := validate(ok); err != nil {
		t.Fatalf("valid state refused: %v", err)
	}
	if _, err := validate(Desired{}); err != nil {
		t.Fatalf("zero Desired refused: %v", err)
	}
	bad := map[string]func(d *Desired){
		"no ports":           func(d *Desired) { d.ProxyPort = 0 },
		"same ports":         func(d *Desired) { d.DNSPort = d.ProxyPort },
		"no sandbox cidr":    func(d *Desired) { d.SandboxCIDR = netip.Prefix{} },
		"ipv6 sandbox cidr":  func(d *Desired) { d.SandboxCIDR = netip.MustParsePrefix("fd00::/64") },
		"addr outside cidr":  func(d *Desired) { d.Sandboxes[0].Addr = ip("198.51.100.2") },
		"ipv6 addr":          func(d *Desired) { d.Sandboxes[0].Addr = ip("fd00::2") },
		"no gateway":         func(d *Desired) { d.Sandboxes[0].Gateway = netip.Addr{} },
		"addr is gateway":    func(d *Desired) { d.Sandboxes[0].Gateway = d.Sandboxes[0].Addr },
		"duplicate name":     func(d *Desired) { d.Sandboxes[1].Name = "a" },
		"duplicate iface":    func(d *Desired) { d.Sandboxes[1].HostIface = "ega" },
		"duplicate addr":     func(d *Desired) { d.Sandboxes[1].Addr = d.Sandboxes[0].Addr },
		"empty name":         func(d *Desired) { d.Sandboxes[0].Name = "" },
		"name with space":    func(d *Desired) { d.Sandboxes[0].Name = "a b" },
		"name with quote":    func(d *Desired) { d.Sandboxes[0].Name = `a"b` },
		"long name":          func(d *Desired) { d.Sandboxes[0].Name = strings.Repeat("a", 65) },
		"long iface":         func(d *Desired) { d.Sandboxes[0].HostIface = "eg0123456789abcd" },
		"iface with slash":   func(d *Desired) { d.Sandboxes[0].HostIface = "eg/0" },
		"empty iface":        func(d *Desired) { d.Sandboxes[0].HostIface = "" },
		"iface not prefixed": func(d *Desired) { d.IfacePrefix = "vm" },
		"bad prefix":         func(d *Desired) { d.IfacePrefix = "e g" },
		"invalid allowed":    func(d *Desired) { d.Sandboxes[0].Allowed = []netip.Prefix{{}} },
		"invalid hard deny":  func(d *Desired) { d.HardDeny = []netip.Prefix{{}} },
		"fast without FastPath": func(d *Desired) {
			d.Sandboxes[0].Fast = []Endpoint{{Addr: ip("203.0.113.10"), Port: 443, Timeout: time.Minute}}
		},
		"fast in monitor": func(d *Desired) {
			d.FastPath, d.Sandboxes[0].Monitor = true, true
			d.Sandboxes[0].Fast = []Endpoint{{Addr: ip("203.0.113.10"), Port: 443, Timeout: time.Minute}}
		},
		"fast port not 443": func(d *Desired) {
			d.FastPath = true
			d.Sandboxes[0].Fast = []Endpoint{{Addr: ip("203.0.113.10"), Port: 80, Timeout: time.Minute}}
		},
		"fast invalid address": func(d *Desired) {
			d.FastPath = true
			d.Sandboxes[0].Fast = []Endpoint{{Port: 443, Timeout: time.Minute}}
		},
	}
	for name, mutate := range bad {
		d := withSandboxes(sbx(0, "a"), sbx(1, "b"))
		mutate(&d)
		if _, err := validate(d); err == nil {
			t.Errorf("%s: accepted", name)
		} else if r := Render(d); !strings.HasPrefix(r, "# firewall: ") {
			t.Errorf("%s: Render of an invalid state = %q", name, r)
		}
	}
}

// The floor of the hard-deny set is there whatever the caller passes, and hard deny is
// consulted before allow in both the nat and the forward chains.
func TestHardDenyFloorAndOrder(t *testing.T) {
	d := withSandboxes(sbx(0, "a", "169.254.0.0/16", "127.0.0.0/8"))
	d.HardDeny = nil
	st, err := validate(d)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range st.hardDeny {
		got = append(got, r.String())
	}
	want := "0.0.0.0/8 100.96.0.0/16 127.0.0.0/8 169.254.0.0/16 224.0.0.0/4 255.255.255.255"
	if s := strings.Join(got, " "); s != want {
		t.Errorf("hard deny = %s, want %s", s, want)
	}
	out := Render(d)
	for _, c := range []string{"nat_a", "fwd_a"} {
		body := out[strings.Index(out, "chain "+c+" {"):]
		deny, allow := strings.Index(body, "@hard_deny"), strings.Index(body, "@allow_a")
		if deny < 0 || allow < 0 || deny > allow {
			t.Errorf("chain %s: hard deny must come before allow:\n%s", c, body)
		}
	}
}
