package firewall

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// FastMarker sets one of the fast-path bits on the flow named by its original tuple,
// clears the others (but a cut's, on Confirm), and leaves every other bit of the ct mark and every other flow alone;
// a flow conntrack does not have is ErrNoFlow.
func TestFastMarker(t *testing.T) {
	t.Parallel()
	ns := newNetNS(t, "mark")
	if err := ns.firewall().Apply(fastState()); err != nil { // conntrack is on in the namespace
		t.Fatal(err)
	}
	ct, err := conntrack.Dial(&netlink.Config{NetNS: int(ns.h)})
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	sbx, web := ip("100.96.0.2"), ip("203.0.113.10")
	const other = 0x0000_4010 // another program's bits
	for _, port := range []uint16{40001, 40002} {
		if err := ct.Create(conntrack.NewFlow(unix.IPPROTO_TCP, 0, sbx, web, port, 443, 120, other)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := NewFastMarker(WithNetNSFd(int(ns.h)))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	marks := func() map[uint16]uint32 { return ctMarks(t, ct) }
	flow := netip.AddrPortFrom(sbx, 40001)
	dst := netip.AddrPortFrom(web, 443)
	if err := m.Mark(flow, dst, false); err != nil {
		t.Fatal(err)
	}
	if got := marks(); got[40001] != other|MarkFast || got[40002] != other {
		t.Errorf("verified: marks %#x, want 40001 %#x and 40002 untouched", got, other|MarkFast)
	}
	if err := m.Mark(flow, dst, true); err != nil {
		t.Fatal(err)
	}
	if got := marks(); got[40001] != other|MarkFastDeny {
		t.Errorf("refused: mark %#x, want %#x (MarkFast cleared)", got[40001], other|MarkFastDeny)
	}
	if err := m.Mark(flow, dst, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Cut(flow, dst); err != nil {
		t.Fatal(err)
	}
	if got := marks(); got[40001] != other|MarkFast|MarkFastDeny {
		t.Errorf("cut: mark %#x, want %#x (MarkFast kept)", got[40001], other|MarkFast|MarkFastDeny)
	}
	// The released state: Wait alone; Confirm swaps it for Fast; a cut while waiting stays.
	if err := m.Release(flow, dst); err != nil {
		t.Fatal(err)
	}
	if got := marks(); got[40001] != other|MarkFastWait {
		t.Errorf("released: mark %#x, want %#x (Fast and Deny cleared)", got[40001], other|MarkFastWait)
	}
	if err := m.Confirm(flow, dst); err != nil {
		t.Fatal(err)
	}
	if got := marks(); got[40001] != other|MarkFast {
		t.Errorf("confirmed: mark %#x, want %#x", got[40001], other|MarkFast)
	}
	if err := m.Release(flow, dst); err != nil {
		t.Fatal(err)
	}
	if err := m.Cut(flow, dst); err != nil {
		t.Fatal(err)
	}
	if err := m.Confirm(flow, dst); err != nil {
		t.Fatal(err)
	}
	if got := marks(); got[40001] != other|MarkFast|MarkFastDeny {
		t.Errorf("cut while released, then confirmed: mark %#x, want %#x (still refused)", got[40001], other|MarkFast|MarkFastDeny)
	}
	if err := m.Mark(flow, dst, true); err != nil {
		t.Fatal(err)
	}
	if got := marks(); got[40001] != other|MarkFastDeny {
		t.Errorf("refused: mark %#x, want %#x", got[40001], other|MarkFastDeny)
	}
	if err := m.Mark(netip.AddrPortFrom(sbx, 40009), dst, false); !errors.Is(err, ErrNoFlow) {
		t.Errorf("a flow conntrack does not have: %v, want ErrNoFlow", err)
	}
	if err := m.Mark(netip.MustParseAddrPort("[2001:db8::1]:1"), dst, false); err == nil {
		t.Error("IPv6: no error")
	}
}

// ctMarks is the ct mark of every conntrack entry of ct's namespace, by source port (the
// tests give each flow a port of its own).
func ctMarks(t *testing.T, ct *conntrack.Conn) map[uint16]uint32 {
	t.Helper()
	all, err := ct.Dump(nil)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[uint16]uint32)
	for _, f := range all {
		out[f.TupleOrig.Proto.SourcePort] = f.Mark
	}
	return out
}
