package netns

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestNewAllocator(t *testing.T) {
	for _, tc := range []struct {
		cidr string
		n    int
		err  string
	}{
		{"100.96.0.0/16", 16384, ""},
		{"100.96.0.0/30", 1, ""},
		{"100.96.0.0/24", 64, ""},
		{"100.96.0.1/16", 0, "did you mean 100.96.0.0/16"},
		{"100.96.0.0/31", 0, "smaller than one /30"},
		{"fd00::/64", 0, "not IPv4"},
		{"0.0.0.0/4", 0, "too large"},
	} {
		a, err := NewAllocator(netip.MustParsePrefix(tc.cidr))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want one with %q", tc.cidr, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.cidr, err)
		}
		if a.Len() != tc.n || a.Range().String() != tc.cidr {
			t.Errorf("%s: Len %d Range %s", tc.cidr, a.Len(), a.Range())
		}
	}
	if _, err := NewAllocator(netip.Prefix{}); err == nil {
		t.Error("the zero prefix was accepted")
	}
}

func TestAllocatorSubnet(t *testing.T) {
	a, _ := NewAllocator(netip.MustParsePrefix("100.96.0.0/16"))
	for _, tc := range []struct {
		i    int
		want string
	}{
		{0, "100.96.0.0/30"},
		{1, "100.96.0.4/30"},
		{63, "100.96.0.252/30"},
		{64, "100.96.1.0/30"},
		{16383, "100.96.255.252/30"},
	} {
		got, err := a.Subnet(tc.i)
		if err != nil || got.String() != tc.want {
			t.Errorf("Subnet(%d) = %s, %v; want %s", tc.i, got, err, tc.want)
		}
	}
	for _, i := range []int{-1, 16384} {
		if _, err := a.Subnet(i); err == nil {
			t.Errorf("Subnet(%d) did not fail", i)
		}
	}
}

func TestAllocatorTake(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		name  string
		cidr  string
		inUse []string
		want  string // "" = exhausted
	}{
		{"empty", "100.96.0.0/16", nil, "100.96.0.0/30"},
		{"skips the first", "100.96.0.0/16", []string{"100.96.0.0/30"}, "100.96.0.4/30"},
		{"fills a hole", "100.96.0.0/16", []string{"100.96.0.0/30", "100.96.0.8/30"}, "100.96.0.4/30"},
		{"a single address blocks its /30", "100.96.0.0/16", []string{"100.96.0.2/32"}, "100.96.0.4/30"},
		{"unmasked entries are masked", "100.96.0.0/16", []string{"100.96.0.6/30", "100.96.0.1/30"}, "100.96.0.8/30"},
		{"a larger prefix blocks all it covers", "100.96.0.0/16", []string{"100.96.0.0/24"}, "100.96.1.0/30"},
		{"a prefix over the whole range", "100.96.0.0/24", []string{"100.0.0.0/8"}, ""},
		{"outside the range is ignored", "100.96.0.0/16", []string{"100.97.0.0/30", "198.18.0.0/15", "100.95.255.252/30"}, "100.96.0.0/30"},
		{"overlapping the start", "100.96.1.0/24", []string{"100.96.0.0/23"}, ""},
		{"IPv6 and invalid are ignored", "100.96.0.0/16", []string{"::ffff:100.96.0.0/126", "fd00::/64"}, "100.96.0.0/30"},
		{"exhausted", "100.96.0.0/29", []string{"100.96.0.0/30", "100.96.0.4/30"}, ""},
		{"last one", "100.96.0.0/28", []string{"100.96.0.0/30", "100.96.0.4/30", "100.96.0.8/30"}, "100.96.0.12/30"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAllocator(p(tc.cidr))
			if err != nil {
				t.Fatal(err)
			}
			var used []netip.Prefix
			for _, s := range tc.inUse {
				used = append(used, p(s))
			}
			used = append(used, netip.Prefix{})
			got, err := a.Take(used)
			if tc.want == "" {
				if !errors.Is(err, ErrExhausted) {
					t.Fatalf("Take = %s, %v; want ErrExhausted", got, err)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("Take = %s, %v; want %s", got, err, tc.want)
			}
		})
	}
}

// Taking every subnet of a /16 one after the other yields each exactly once, in order,
// and then ErrExhausted.
func TestAllocatorTakeAll(t *testing.T) {
	a, _ := NewAllocator(netip.MustParsePrefix("100.96.0.0/20"))
	var used []netip.Prefix
	for i := 0; i < a.Len(); i++ {
		got, err := a.Take(used)
		if err != nil {
			t.Fatalf("Take %d: %v", i, err)
		}
		if want, _ := a.Subnet(i); got != want {
			t.Fatalf("Take %d = %s, want %s", i, got, want)
		}
		used = append(used, got)
	}
	if _, err := a.Take(used); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Take after %d: %v, want ErrExhausted", a.Len(), err)
	}
}

func TestName(t *testing.T) {
	n := Name("acme", "vm-1")
	if n != Name("acme", "vm-1") {
		t.Fatal("Name is not stable")
	}
	if !ValidName(n) || len(n) != len(NamePrefix)+10 {
		t.Fatalf("Name = %q", n)
	}
	// The tenant and the VM are kept apart: ("a", "bc") and ("ab", "c") differ.
	if Name("a", "bc") == Name("ab", "c") || Name("acme", "vm-1") == Name("other", "vm-1") {
		t.Fatal("names collide")
	}
	h := HostIface(n)
	if len(h) > 15 || h != "eg"+n[len(NamePrefix):] || nameOfHostIface(h) != n {
		t.Fatalf("HostIface(%q) = %q", n, h)
	}
	for _, bad := range []string{"", "egressd-", "egressd-0123456789a", "egressd-012345678g", "egressd-ABCDEF0123", "x-0123456789"} {
		if ValidName(bad) || HostIface(bad) != "" {
			t.Errorf("ValidName(%q) is true", bad)
		}
	}
	for _, bad := range []string{"eg", "eth0", "eg0123", "egABCDEF0123"} {
		if nameOfHostIface(bad) != "" {
			t.Errorf("nameOfHostIface(%q) = %q", bad, nameOfHostIface(bad))
		}
	}
}

func TestAttachment(t *testing.T) {
	m := NewManager(WithNetnsDir("/x/netns"))
	a, err := m.Attachment("acme", "vm-1", netip.MustParsePrefix("100.96.0.4/30"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Gateway.String() != "100.96.0.5" || a.Addr.String() != "100.96.0.6" || a.Path != "/x/netns/"+a.Name || a.HostIface != HostIface(a.Name) {
		t.Fatalf("%+v", a)
	}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Attachment("acme", "vm-1", netip.MustParsePrefix("100.96.0.0/29")); err == nil {
		t.Error("a /29 was accepted")
	}
	if _, err := NewAttachment("acme", "vm-1", netip.MustParsePrefix("100.96.0.1/30"), ""); err == nil {
		t.Error("host bits were accepted")
	}
	for _, tc := range []struct {
		name string
		edit func(*Attachment)
	}{
		{"name", func(a *Attachment) { a.Name = "vm-1" }},
		{"iface", func(a *Attachment) { a.HostIface = "eth9" }},
		{"path", func(a *Attachment) { a.Path = "/run/netns/other" }},
		{"prefix size", func(a *Attachment) { a.Prefix = netip.MustParsePrefix("100.96.0.0/29") }},
		{"network address", func(a *Attachment) { a.Addr = netip.MustParseAddr("100.96.0.4") }},
		{"broadcast", func(a *Attachment) { a.Gateway = netip.MustParseAddr("100.96.0.7") }},
		{"outside", func(a *Attachment) { a.Addr = netip.MustParseAddr("100.96.0.10") }},
		{"same", func(a *Attachment) { a.Addr = a.Gateway }},
		{"IPv6", func(a *Attachment) { a.Prefix = netip.MustParsePrefix("fd00::/126") }},
	} {
		b := a
		tc.edit(&b)
		if err := b.Validate(); err == nil {
			t.Errorf("%s: %+v was accepted", tc.name, b)
		}
	}
}
