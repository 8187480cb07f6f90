package firewalltest

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/host/firewall"
)

func fastState() firewall.Desired {
	d := state()
	d.FastPath = true
	d.Sandboxes[0].Fast = []firewall.Endpoint{
		{Addr: netip.MustParseAddr("203.0.113.9"), Port: 443, Timeout: time.Minute},
		{Addr: netip.MustParseAddr("203.0.113.8"), Port: 443, Timeout: 0}, // expired
	}
	d.Sandboxes[1].Monitor = true
	return d
}

func TestFakeFast(t *testing.T) {
	var f Fake
	d := state()
	d.Sandboxes[0].Fast = fastState().Sandboxes[0].Fast
	if err := f.Apply(d); err == nil {
		t.Fatal("Fast without FastPath applied")
	}
	if err := f.Apply(fastState()); err != nil {
		t.Fatal(err)
	}
	https := func(a string) firewall.Endpoint {
		return firewall.Endpoint{Addr: netip.MustParseAddr(a), Port: 443, Timeout: 2 * time.Minute}
	}
	if err := f.AdmitFast("vm-a", []firewall.Endpoint{https("::ffff:203.0.113.10"), https("2001:db8::1")}); err != nil {
		t.Fatal(err)
	}
	want := []string{"203.0.113.9 . 443 timeout 1m", "203.0.113.10 . 443 timeout 2m"}
	if got := f.Fast("vm-a"); !slices.Equal(got, want) {
		t.Errorf("fast set %q, want %q", got, want)
	}
	if !strings.Contains(f.Dump(), "set fast_vm-a {") || !strings.Contains(f.Dump(), "203.0.113.10 . 443 timeout 2m") {
		t.Errorf("Dump does not show the fast set:\n%s", f.Dump())
	}
	for _, bad := range []func() error{
		func() error { return f.AdmitFast("vm-b", []firewall.Endpoint{https("203.0.113.10")}) }, // monitor
		func() error { return f.AdmitFast("vm-z", []firewall.Endpoint{https("203.0.113.10")}) },
		func() error {
			return f.AdmitFast("vm-a", []firewall.Endpoint{{Addr: srv, Port: 80, Timeout: time.Minute}})
		},
	} {
		if err := bad(); err == nil {
			t.Error("a call the real firewall refuses succeeded")
		}
	}

	ap := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }
	to := func(s string) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr(s), 443) }
	if f.VerifyFast(ap(40000), to("203.0.113.8")) || f.VerifyFast(netip.AddrPortFrom(b, 40000), to("203.0.113.9")) {
		t.Error("a flow to an address not in the sandbox's fast set was verified")
	}
	if !f.VerifyFast(ap(40001), to("203.0.113.9")) || !f.VerifyFast(ap(40002), to("203.0.113.10")) {
		t.Fatal("a flow to the fast set was refused")
	}
	if err := f.RevokeFast("vm-a", []firewall.Endpoint{{Addr: netip.MustParseAddr("203.0.113.10"), Port: 443}}); err != nil {
		t.Fatal(err)
	}
	if f.VerifyFast(ap(40003), to("203.0.113.10")) {
		t.Error("verified after RevokeFast")
	}
	n, err := f.CutFast(a, func(src, dst netip.AddrPort) bool { return dst == to("203.0.113.9") })
	if err != nil || n != 1 {
		t.Fatalf("CutFast = %d, %v; want 1", n, err)
	}
	if got := f.FastCuts(); len(got) != 1 || got[0].String() != "100.96.0.2:40002 -> 203.0.113.10:443" {
		t.Errorf("cuts %v", got)
	}
	if n, _ := f.CutFast(a, nil); n != 1 || len(f.FastFlows()) != 0 {
		t.Errorf("CutFast(nil keep) cut %d, left %v", n, f.FastFlows())
	}
}
