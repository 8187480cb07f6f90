package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func TestIsPublic(t *testing.T) {
	tests := []struct {
		ip     string
		public bool
	}{
		// IPv4: public
		{"1.1.1.1", true},
		{"8.8.8.8", true},
		{"100.63.255.255", true}, // just below CGNAT
		{"100.128.0.0", true},    // just above CGNAT
		{"172.15.255.255", true},
		{"172.32.0.0", true},
		{"198.17.255.255", true},
		{"198.20.0.0", true},
		{"223.255.255.255", true},
		// IPv4: special purpose
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"10.0.0.1", false},
		{"100.64.0.1", false},
		{"100.127.255.255", false},
		{"127.0.0.1", false},
		{"169.254.169.254", false},
		{"172.16.0.1", false},
		{"172.31.255.255", false},
		{"192.0.0.8", false},
		{"192.0.2.1", false},
		{"192.88.99.1", false},
		{"192.168.1.1", false},
		{"198.18.0.1", false},
		{"198.19.255.255", false},
		{"198.51.100.7", false},
		{"203.0.113.5", false},
		{"224.0.0.1", false},
		{"239.255.255.250", false},
		{"240.0.0.1", false},
		{"255.255.255.255", false},
		// IPv4-mapped: classified as the IPv4 address
		{"::ffff:8.8.8.8", true},
		{"::ffff:10.0.0.1", false},
		{"::ffff:127.0.0.1", false},
		// IPv6: public
		{"2606:4700::1111", true},
		{"2a00:1450:4001::1", true},
		{"2001:200::1", true}, // just above 2001::/23
		{"2620:4f:8000::1", true},
		// IPv6: special purpose
		{"::", false},
		{"::1", false},
		{"64:ff9b::808:808", false},                     // NAT64 of a public address: still not public
		{"64:ff9b::a00:1", false},                       // NAT64 of 10.0.0.1
		{"64:ff9b:1::1", false},                         // local-use NAT64
		{"100::1", false},                               // discard
		{"2001::1", false},                              // Teredo
		{"2001:0:4136:e378:8000:63bf:f5ff:fffe", false}, // Teredo to 10.0.0.1
		{"2001:1ff::1", false},                          // end of 2001::/23
		{"2001:db8::1", false},                          // documentation
		{"2002:c000:0201::1", false},                    // 6to4 of 192.0.2.1
		{"2002:0808:0808::1", false},                    // 6to4 of a public address: still not public
		{"3fff::1", false},                              // documentation (RFC 9637)
		{"fc00::1", false},                              // ULA
		{"fd00:ec2::254", false},                        // ULA, metadata
		{"fe80::1", false},                              // link-local
		{"fec0::1", false},                              // deprecated site-local
		{"ff02::1", false},                              // multicast
		{"::a00:1", false},                              // IPv4-compatible
		{"4000::1", false},                              // outside global unicast 2000::/3
	}
	var zero *Classifier
	for _, tt := range tests {
		ip := netip.MustParseAddr(tt.ip)
		if got := zero.IsPublic(ip); got != tt.public {
			t.Errorf("IsPublic(%s) = %v, want %v", tt.ip, got, tt.public)
		}
		if got := compileClassifier(nil).isPublic(ip.Unmap()); got != tt.public {
			t.Errorf("compiled isPublic(%s) = %v, want %v", tt.ip, got, tt.public)
		}
	}
}

func TestIsPublicWithPublicList(t *testing.T) {
	c := &Classifier{Public: mustPrefixes("203.0.113.0/24", "127.0.0.0/26", "::ffff:198.51.100.0/120", "fd00:1::/64")}
	cl := compileClassifier(c)
	tests := []struct {
		ip     string
		public bool
	}{
		{"203.0.113.5", true},
		{"::ffff:203.0.113.5", true},
		{"127.0.0.10", true},
		{"127.0.0.64", false},  // outside the /26
		{"198.51.100.7", true}, // listed in mapped form
		{"fd00:1::5", true},
		{"fd00:2::5", false},
		{"10.0.0.1", false},
	}
	for _, tt := range tests {
		ip := netip.MustParseAddr(tt.ip)
		if got := c.IsPublic(ip); got != tt.public {
			t.Errorf("IsPublic(%s) = %v, want %v", tt.ip, got, tt.public)
		}
		if got := cl.isPublic(ip.Unmap()); got != tt.public {
			t.Errorf("compiled isPublic(%s) = %v, want %v", tt.ip, got, tt.public)
		}
	}
}

func TestHardDeny(t *testing.T) {
	c := &Classifier{
		Public:   mustPrefixes("127.0.0.0/26", "203.0.113.0/24", "169.254.0.0/16", "fe80::/10", "224.0.0.0/4", "10.9.0.0/16"),
		HardDeny: mustPrefixes("10.9.0.0/16", "2001:db8:bad::/48"),
		Self: []netip.AddrPort{
			netip.MustParseAddrPort("127.0.0.1:8470"),
			netip.MustParseAddrPort("[::]:8471"),
			netip.MustParseAddrPort("[::ffff:203.0.113.9]:8472"),
		},
	}
	tests := []struct {
		c        *Classifier
		ip       string
		port     uint16
		wantRule string // "" = not denied
	}{
		// out of the box
		{nil, "127.0.0.1", 80, "loopback 127.0.0.0/8"},
		{nil, "127.255.255.254", 443, "loopback 127.0.0.0/8"},
		{nil, "::1", 443, "loopback ::1/128"},
		{nil, "::ffff:127.0.0.1", 443, "loopback 127.0.0.0/8"},
		{nil, "169.254.169.254", 80, "link-local 169.254.0.0/16"},
		{nil, "fe80::1", 80, "link-local fe80::/10"},
		{nil, "fd00:ec2::254", 80, "cloud metadata fd00:ec2::254/128"},
		{nil, "fd00:ec2::253", 80, ""}, // ULA is not public, but not hard-denied
		{nil, "224.0.0.251", 5353, "multicast 224.0.0.0/4"},
		{nil, "ff02::fb", 5353, "multicast ff00::/8"},
		{nil, "255.255.255.255", 67, "broadcast 255.255.255.255/32"},
		{nil, "0.0.0.0", 80, "unspecified (this network) 0.0.0.0/8"},
		{nil, "0.1.2.3", 80, "unspecified (this network) 0.0.0.0/8"},
		{nil, "::", 80, "unspecified ::/128"},
		{nil, "10.0.0.1", 22, ""}, // private, but not hard-denied: allowed_cidrs may allow it
		{nil, "8.8.8.8", 53, ""},
		// IPv6 forms that embed a hard-denied IPv4 address
		{nil, "64:ff9b::7f00:1", 80, "NAT64 form of loopback 127.0.0.0/8"},
		{nil, "64:ff9b::a9fe:a9fe", 80, "NAT64 form of link-local 169.254.0.0/16"},
		{nil, "2002:7f00:1::1", 80, "6to4 form of loopback 127.0.0.0/8"},
		{nil, "2002:a9fe:a9fe::", 80, "6to4 form of link-local 169.254.0.0/16"},
		{nil, "2001:0:4136:e378:8000:63bf:80ff:fffe", 80, "Teredo form of loopback 127.0.0.0/8"}, // 7f.00.00.01 inverted
		{nil, "::7f00:1", 80, "IPv4-compatible form of loopback 127.0.0.0/8"},
		{nil, "::ffff:0:a9fe:a9fe", 80, "IPv4-translated form of link-local 169.254.0.0/16"},
		{nil, "64:ff9b::808:808", 80, ""}, // NAT64 of a public address: not hard (but not public)
		// Public lifts loopback and link-local, inside its ranges only
		{c, "127.0.0.10", 80, ""},
		{c, "127.0.0.64", 80, "loopback 127.0.0.0/8"},
		{c, "169.254.169.254", 80, ""},
		{c, "fe80::1", 80, ""},
		{c, "224.0.0.1", 80, "multicast 224.0.0.0/4"}, // multicast is never lifted
		// Self: a specified address is denied on every port, even inside Public
		{c, "127.0.0.1", 8470, "egressd's own address 127.0.0.1"},
		{c, "127.0.0.1", 80, "egressd's own address 127.0.0.1"},
		{c, "::ffff:127.0.0.1", 443, "egressd's own address 127.0.0.1"},
		{c, "64:ff9b::7f00:1", 80, "NAT64 form of egressd's own address 127.0.0.1"},
		{c, "203.0.113.9", 80, "egressd's own address 203.0.113.9"},
		{c, "203.0.113.10", 80, ""},
		// Self: an unspecified address denies its port on every address
		{c, "8.8.8.8", 8471, "egressd's own port 8471 (listening on every address)"},
		{c, "2606:4700::1111", 8471, "egressd's own port 8471 (listening on every address)"},
		{c, "8.8.8.8", 8470, ""},
		// HardDeny, not lifted by Public
		{c, "10.9.1.1", 443, "operator hard deny 10.9.0.0/16"},
		{c, "2001:db8:bad::1", 443, "operator hard deny 2001:db8:bad::/48"},
		{c, "64:ff9b::a09:101", 443, "NAT64 form of operator hard deny 10.9.0.0/16"},
	}
	for _, tt := range tests {
		cl := compileClassifier(tt.c)
		rule, denied := cl.hardDeny(netip.MustParseAddr(tt.ip), tt.port)
		if denied != (tt.wantRule != "") || rule != tt.wantRule {
			t.Errorf("hardDeny(%s, %d) with %v = %q, %v; want %q", tt.ip, tt.port, tt.c != nil, rule, denied, tt.wantRule)
		}
	}
}

func TestEmbeddedIPv4(t *testing.T) {
	tests := []struct {
		ip   string
		want string // "" = none
		form form
	}{
		{"64:ff9b::c000:201", "192.0.2.1", nat64},
		{"64:ff9b:0:0:1::c000:201", "", direct}, // not the well-known /96
		{"2002:c000:201::", "192.0.2.1", sixToFour},
		{"2002:c000:201:1:2:3:4:5", "192.0.2.1", sixToFour},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45", teredo},
		{"::c000:201", "192.0.2.1", compatible},
		{"::ffff:0:c000:201", "192.0.2.1", translated},
		{"2001:db8::1", "", direct},
		{"2606:4700::1111", "", direct},
	}
	for _, tt := range tests {
		got, f, ok := embeddedIPv4(netip.MustParseAddr(tt.ip))
		if ok != (tt.want != "") || (ok && (got.String() != tt.want || f != tt.form)) {
			t.Errorf("embeddedIPv4(%s) = %s, %d, %v; want %s, %d", tt.ip, got, f, ok, tt.want, tt.form)
		}
	}
}

func TestClassifyAllocs(t *testing.T) {
	cl := compileClassifier(&Classifier{Self: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:8470")}, HardDeny: mustPrefixes("10.9.0.0/16")})
	addrs := []netip.Addr{
		netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("127.0.0.1"),
		netip.MustParseAddr("64:ff9b::7f00:1"), netip.MustParseAddr("2606:4700::1111"),
	}
	n := testing.AllocsPerRun(100, func() {
		for _, a := range addrs {
			cl.hardDeny(a, 443)
			cl.isPublic(a)
		}
	})
	if n != 0 {
		t.Errorf("classification allocates %v times per run, want 0", n)
	}
}

func TestBuiltinHardRulesMentionRange(t *testing.T) {
	for _, r := range builtinHard {
		if !strings.HasSuffix(r.rules[direct], r.prefix.String()) {
			t.Errorf("rule %q does not name its range %s", r.rules[direct], r.prefix)
		}
	}
}

func TestHardDenyPrefixes(t *testing.T) {
	has := func(ps []netip.Prefix, s string) bool {
		for _, p := range ps {
			if p == netip.MustParsePrefix(s) {
				return true
			}
		}
		return false
	}
	def := (&Classifier{}).HardDenyPrefixes()
	for _, want := range []string{"127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32", "fe80::/10", "fd00:ec2::254/128"} {
		if !has(def, want) {
			t.Errorf("default list lacks %s: %v", want, def)
		}
	}
	c := &Classifier{
		Public:   []netip.Prefix{netip.MustParsePrefix("127.0.0.0/26")},
		HardDeny: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
		Self:     []netip.AddrPort{netip.MustParseAddrPort("100.96.0.1:15001"), netip.MustParseAddrPort("0.0.0.0:8470")},
	}
	got := c.HardDenyPrefixes()
	if has(got, "127.0.0.0/8") {
		t.Error("loopback is listed although Public lifts part of it")
	}
	for _, want := range []string{"169.254.0.0/16", "198.51.100.0/24", "100.96.0.1/32"} {
		if !has(got, want) {
			t.Errorf("list lacks %s: %v", want, got)
		}
	}
	if has(got, "0.0.0.0/32") {
		t.Error("an unspecified Self address became a prefix")
	}
}
