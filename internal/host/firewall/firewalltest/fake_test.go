package firewalltest

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/host/firewall"
)

func state() firewall.Desired {
	return firewall.Desired{
		Sandboxes: []firewall.Sandbox{
			{Name: "vm-a", HostIface: "ega", Addr: netip.MustParseAddr("100.96.0.2"), Gateway: netip.MustParseAddr("100.96.0.1"),
				TCP: []firewall.Endpoint{
					{Addr: netip.MustParseAddr("203.0.113.9"), Port: 22, Timeout: time.Minute},
					{Addr: netip.MustParseAddr("203.0.113.8"), Port: 22, Timeout: 0}, // expired
				}},
			{Name: "vm-b", HostIface: "egb", Addr: netip.MustParseAddr("100.96.0.6"), Gateway: netip.MustParseAddr("100.96.0.5")},
		},
		ProxyPort: 15001, DNSPort: 15053, SandboxCIDR: netip.MustParsePrefix("100.96.0.0/16"),
	}
}

var (
	a   = netip.MustParseAddr("100.96.0.2")
	b   = netip.MustParseAddr("100.96.0.6")
	srv = netip.MustParseAddr("203.0.113.10")
)

func TestFakeAdmitRevokeFlush(t *testing.T) {
	var f Fake
	if err := f.Admit("vm-a", []firewall.Endpoint{{Addr: srv, Port: 22, Timeout: time.Minute}}); err == nil {
		t.Fatal("Admit before any Apply succeeded")
	}
	if err := f.Apply(state()); err != nil {
		t.Fatal(err)
	}
	if f.Connect(a, netip.MustParseAddr("203.0.113.8"), 22) {
		t.Error("an expired endpoint given to Apply admits connections")
	}
	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"admit", func() error {
			return f.Admit("vm-a", []firewall.Endpoint{
				{Addr: srv, Port: 22, Timeout: time.Minute},
				{Addr: netip.MustParseAddr("::ffff:203.0.113.10"), Port: 5432, Timeout: 2 * time.Minute},
				{Addr: netip.MustParseAddr("2001:db8::1"), Port: 22, Timeout: time.Minute},   // IPv6: ignored
				{Addr: netip.MustParseAddr("203.0.113.11"), Port: 22, Timeout: -time.Second}, // expired: ignored
			})
		}, []string{"203.0.113.9 . 22 timeout 1m", "203.0.113.10 . 22 timeout 1m", "203.0.113.10 . 5432 timeout 2m"}},
		{"refresh shorter", func() error {
			return f.Admit("vm-a", []firewall.Endpoint{{Addr: srv, Port: 22, Timeout: 30 * time.Second}})
		}, []string{"203.0.113.9 . 22 timeout 1m", "203.0.113.10 . 22 timeout 30s", "203.0.113.10 . 5432 timeout 2m"}},
		{"revoke, absent too", func() error {
			return f.Revoke("vm-a", []firewall.Endpoint{{Addr: srv, Port: 5432}, {Addr: srv, Port: 9999}})
		}, []string{"203.0.113.9 . 22 timeout 1m", "203.0.113.10 . 22 timeout 30s"}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := f.TCP("vm-a"); !slices.Equal(got, s.want) {
			t.Errorf("%s: tcp set %q, want %q", s.name, got, s.want)
		}
	}
	if len(f.TCP("vm-b")) != 0 {
		t.Errorf("vm-b's set changed: %q", f.TCP("vm-b"))
	}
	if !strings.Contains(f.Dump(), "203.0.113.10 . 22 timeout 30s") {
		t.Errorf("Dump does not show the admitted element:\n%s", f.Dump())
	}
	for _, bad := range []func() error{
		func() error { return f.Admit("vm-z", []firewall.Endpoint{{Addr: srv, Port: 22, Timeout: time.Minute}}) },
		func() error { return f.Admit("vm-a", []firewall.Endpoint{{Addr: srv, Port: 0, Timeout: time.Minute}}) },
		func() error { return f.Revoke("vm-a", []firewall.Endpoint{{Port: 22}}) },
	} {
		if err := bad(); err == nil {
			t.Error("a call the real firewall refuses succeeded")
		}
	}

	// Connections: only admitted ones open; FlushTCP cuts what keep rejects, of one sandbox.
	if f.Connect(a, srv, 5432) || f.Connect(b, srv, 22) {
		t.Error("a connection the set does not admit was opened")
	}
	if !f.Connect(a, srv, 22) || !f.Connect(a, netip.MustParseAddr("203.0.113.9"), 22) {
		t.Fatal("an admitted connection was refused")
	}
	n, err := f.FlushTCP(a, func(dst netip.Addr, port uint16) bool { return dst != srv })
	if err != nil || n != 1 {
		t.Fatalf("FlushTCP = %d, %v; want 1", n, err)
	}
	if got := f.Cuts(); len(got) != 1 || got[0].String() != "100.96.0.2 -> 203.0.113.10:22" {
		t.Errorf("cuts %v", got)
	}
	if n, _ := f.FlushTCP(b, nil); n != 0 {
		t.Errorf("FlushTCP of another sandbox cut %d", n)
	}
	if n, _ := f.FlushTCP(a, nil); n != 1 || len(f.Conns()) != 0 {
		t.Errorf("FlushTCP(nil keep) cut %d, left %v", n, f.Conns())
	}
}

// The fake and the real firewall have the same methods, so a gateway's interface fits both.
type firewallCalls interface {
	Apply(firewall.Desired) error
	FlushConntrack(netip.Addr, []netip.Prefix) (int, error)
	Admit(string, []firewall.Endpoint) error
	Revoke(string, []firewall.Endpoint) error
	FlushTCP(netip.Addr, func(netip.Addr, uint16) bool) (int, error)
	AdmitFast(string, []firewall.Endpoint) error
	RevokeFast(string, []firewall.Endpoint) error
	CutFast(netip.Addr, func(src, dst netip.AddrPort) bool) (int, error)
}

var (
	_ firewallCalls = (*Fake)(nil)
	_ firewallCalls = (*firewall.Firewall)(nil)
)
