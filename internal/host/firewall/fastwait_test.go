package firewall

import (
	"net/netip"
	"sync/atomic"
	"testing"
)

// A released flow (ct mark MarkFastWait) is not forwarded by the kernel: its server's
// packets come to the queue too, and a reader that holds them keeps the server's answer
// from the sandbox. Once the reader confirms the flow (MarkFast, as egressd does when the
// server acknowledged the ClientHello), neither side's packets are queued any more.
func TestFastPathWait(t *testing.T) {
	t.Parallel()
	l, _, got := fastLab(t)
	var confirm atomic.Bool
	q := readQueue(t, l.gw, DefaultFastQueue, func(p queued) (uint32, uint32) {
		switch {
		case p.src.Port() == webPortHTTPS && confirm.Load():
			return nfAccept, MarkFast
		case p.src.Port() == webPortHTTPS:
			return nfDrop, 0 // never confirmed
		case p.payload == 0:
			return nfAccept, 0
		}
		return nfAccept, MarkFastWait // the first data segment: released
	})
	srv := netip.MustParseAddrPort("203.0.113.10:443")
	// count is the queued packets of the flow from local: the server's, and the client's
	// with data.
	count := func(local netip.AddrPort) (server, clientData int) {
		for _, p := range q.packets() {
			switch {
			case p.src == srv && p.dst == local:
				server++
			case p.src == local && p.payload > 0:
				clientData++
			}
		}
		return server, clientData
	}
	open := func() (*conn, netip.AddrPort) {
		c, greet, err := dial(l.sbx, "", "203.0.113.10:443", ok)
		if err != nil || greet != "srv" {
			t.Fatalf("fast flow: %q, %v", greet, err)
		}
		t.Cleanup(func() { c.Close() })
		return c, netip.MustParseAddrPort(c.LocalAddr().String())
	}

	held, heldSrc := open()
	if err := held.echo("held hello", silent); !timedOut(err) {
		t.Errorf("released flow, server's packets dropped by the reader: %v, want a timeout", err)
	}
	if !waitFor(ok, func() bool { s, _ := count(heldSrc); return s > 0 }) {
		t.Errorf("no server packet of the released flow reached the queue: %v", q.packets())
	}
	if !waitFor(ok, func() bool { return len(got()) == 1 }) || got()[0] != "held hello" {
		t.Errorf("the server got %q, want the released segment", got())
	}

	confirm.Store(true)
	c, src := open()
	if err := c.echo("client hello", ok); err != nil {
		t.Fatalf("released flow, then confirmed: %v", err)
	}
	server, _ := count(src)
	if server == 0 {
		t.Errorf("no server packet of the flow reached the queue before its confirmation: %v", q.packets())
	}
	for _, s := range []string{"second", "third"} {
		if err := c.echo(s, ok); err != nil {
			t.Fatalf("confirmed flow, %q: %v", s, err)
		}
	}
	if s, d := count(src); s != server || d != 1 {
		t.Errorf("after the confirmation the queue saw %d more server packets and %d client data segments in all, want 0 and 1: %v", s-server, d, q.packets())
	}
}
