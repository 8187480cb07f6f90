package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestParseCIDR(t *testing.T) {
	tests := []struct{ in, want string }{
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"10.1.2.3", "10.1.2.3/32"},
		{"10.1.2.3/32", "10.1.2.3/32"},
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"::/0", "::/0"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"2001:DB8::/32", "2001:db8::/32"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"2001:0db8:0000::/48", "2001:db8::/48"},
		// IPv4-mapped forms are the IPv4 prefix they hold.
		{"::ffff:10.0.0.1", "10.0.0.1/32"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"::ffff:0:0/96", "0.0.0.0/0"},
		{"::ffff:a00:0/104", "10.0.0.0/8"},
		// Shorter than /96 it is an IPv6 prefix that merely contains the mapped range.
		{"::fffe:0:0/95", "::fffe:0:0/95"},
	}
	for _, tt := range tests {
		got, err := ParseCIDR(tt.in)
		if err != nil || got.String() != tt.want {
			t.Errorf("ParseCIDR(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestParseCIDRRejects(t *testing.T) {
	tests := []struct{ in, wantErr string }{
		{"10.0.0.1/8", "10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"},
		{"192.168.1.1/24", "did you mean 192.168.1.0/24?"},
		{"2001:db8::1/32", "did you mean 2001:db8::/32?"},
		{"::ffff:10.0.0.1/104", "did you mean 10.0.0.0/8?"},
		{"0.0.0.1/0", "did you mean 0.0.0.0/0?"},
		{"fe80::1%eth0", "zone"},
		{"fe80::%eth0/64", "zone"},
		{"example.com", "host name; put it in allowed_domains"},
		{"10.0.0.0/33", "not an IP address or CIDR"},
		{"10.0.0/8", "not an IP address or CIDR"},
		{"010.0.0.0/8", "not an IP address or CIDR"}, // leading zeros read as octal elsewhere
		{"10.0.0.0/", "not an IP address or CIDR"},
		{"", "not an IP address or CIDR"},
		{" 10.0.0.0/8", "not an IP address or CIDR"},
	}
	for _, tt := range tests {
		got, err := ParseCIDR(tt.in)
		if err == nil {
			t.Errorf("ParseCIDR(%q) = %v, want an error", tt.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseCIDR(%q) error %q does not contain %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestPrefixSetLookup(t *testing.T) {
	ps := mustPrefixes("10.0.0.0/8", "10.1.0.0/16", "192.0.2.0/25", "192.0.2.128/25",
		"0.0.0.0/32", "255.255.255.255/32", "2001:db8::/32", "2001:db8:1::/48", "fc00::/7")
	set := newPrefixSet(ps)
	tests := []struct {
		ip   string
		want int // index in ps, -1 for none
	}{
		{"10.0.0.0", 0},
		{"10.1.2.3", 0}, // the wider prefix absorbs the nested one
		{"10.255.255.255", 0},
		{"11.0.0.0", -1},
		{"9.255.255.255", -1},
		{"192.0.2.127", 2},
		{"192.0.2.128", 3},
		{"192.0.3.0", -1},
		{"0.0.0.0", 4},
		{"0.0.0.1", -1},
		{"255.255.255.255", 5},
		{"2001:db8:1::1", 6},
		{"2001:db9::", -1},
		{"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 8},
		{"fe00::", -1},
		{"::", -1},
	}
	for _, tt := range tests {
		if got := set.lookup(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("lookup(%s) = %d, want %d", tt.ip, got, tt.want)
		}
	}
	if got := new(prefixSet).lookup(netip.MustParseAddr("10.0.0.1")); got != -1 {
		t.Errorf("empty set lookup = %d, want -1", got)
	}
	if got := set.lookup(netip.Addr{}); got != -1 {
		t.Errorf("zero Addr lookup = %d, want -1", got)
	}
}

// TestPrefixSetAgainstLinearScan compares the binary search with the obvious loop on many
// generated prefixes and addresses around their edges.
func TestPrefixSetAgainstLinearScan(t *testing.T) {
	var ps []netip.Prefix
	for i := range 300 {
		bits := 8 + i%25
		a := netip.AddrFrom4([4]byte{byte(i * 7), byte(i * 13), byte(i * 31), 0})
		ps = append(ps, netip.PrefixFrom(a, bits).Masked())
		a6 := netip.AddrFrom16([16]byte{0x20, 0x01, byte(i), byte(i * 3)})
		ps = append(ps, netip.PrefixFrom(a6, 16+i%100).Masked())
	}
	ps = minimalPrefixes(ps) // keep indices comparable: no nesting left
	set := newPrefixSet(ps)
	for _, p := range ps {
		for _, a := range []netip.Addr{p.Addr(), p.Addr().Prev(), lastAddr(p), lastAddr(p).Next()} {
			if !a.IsValid() {
				continue
			}
			want := -1
			for i, q := range ps {
				if q.Contains(a) {
					want = i
				}
			}
			if got := set.lookup(a); got != want {
				t.Fatalf("lookup(%s) = %d, want %d", a, got, want)
			}
		}
	}
}

func TestIntersectPrefixes(t *testing.T) {
	tests := []struct{ a, b, want string }{
		{"10.0.0.0/8", "10.1.0.0/16", "10.1.0.0/16"},
		{"10.0.0.0/8", "11.0.0.0/8", ""},
		{"10.0.0.0/24", "10.0.0.0/25 10.0.0.128/25", "10.0.0.0/25 10.0.0.128/25"},
		{"0.0.0.0/0 ::/0", "192.0.2.1/32 2001:db8::/32", "192.0.2.1/32 2001:db8::/32"},
		{"10.0.0.0/8 192.168.0.0/16", "10.2.0.0/16 10.3.0.0/16 172.16.0.0/12", "10.2.0.0/16 10.3.0.0/16"},
		{"", "10.0.0.0/8", ""},
		{"::/0", "10.0.0.0/8", ""}, // IPv6 ranges hold no IPv4 address
	}
	parse := func(s string) []netip.Prefix {
		var ps []netip.Prefix
		for f := range strings.FieldsSeq(s) {
			ps = append(ps, netip.MustParsePrefix(f))
		}
		return ps
	}
	for _, tt := range tests {
		got := IntersectPrefixes(parse(tt.a), parse(tt.b))
		if s := strings.Trim(fmt.Sprint(got), "[]"); s != tt.want {
			t.Errorf("IntersectPrefixes(%s; %s) = %s, want %s", tt.a, tt.b, s, tt.want)
		}
		if got == nil {
			t.Errorf("IntersectPrefixes(%s; %s) = nil, want a non-nil list", tt.a, tt.b)
		}
	}
}
