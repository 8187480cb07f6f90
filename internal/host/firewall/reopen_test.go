package firewall

import (
	"bufio"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// TestAReopenedConnectionNeedsItsElement: after the server resets an allowed_tcp
// connection, conntrack keeps its (marked) entry in state CLOSE for a while, and a SYN of
// the same four-tuple is taken as part of it ("ignored", then re-synchronised on the
// server's SYN/ACK). A sandbox that reopens the connection from the same port after the
// element expired must not be forwarded by the old entry's mark: a new connection needs
// an element, as any other (DESIGN §2.6).
func TestAReopenedConnectionNeedsItsElement(t *testing.T) {
	t.Parallel()
	l, fw := tcpLab(t)
	var first atomic.Bool
	first.Store(true)
	serve(t, l.inet, "tcp4", "203.0.113.10:2223", func(c net.Conn) string {
		if first.Swap(false) {
			_ = c.(*net.TCPConn).SetLinger(0) // the close below resets the connection
			c.Close()
		}
		return "srv again"
	})
	if err := fw.Admit("egressd-lab", []Endpoint{ep("203.0.113.10", 2223, 1500*time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	from := func(timeout time.Duration) (string, error) { // a connection from port 40123, its greeting
		var c net.Conn
		var err error
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.IPv4(100, 96, 0, 2), Port: 40123}}
		if e := l.sbx.do(func() { c, err = d.Dial("tcp4", "203.0.113.10:2223") }); e != nil {
			return "", e
		}
		if err != nil {
			return "", err
		}
		defer c.Close()
		cc := &conn{Conn: c, r: bufio.NewReader(c)}
		return cc.line(timeout)
	}
	if _, err := from(ok); !reset(err) {
		t.Fatalf("the first connection: %v, want a reset", err)
	}
	waitGone(t, l.gw, "egressd-lab", "203.0.113.10:2223", 5*time.Second)
	if got, err := from(silent); err == nil || got != "" {
		t.Errorf("a connection reopened from the same port after the element expired got through: %q, %v", got, err)
	}
	// Another port, for comparison: a fresh connection after expiry is dropped.
	blocked(t, l.sbx, "", "203.0.113.10:2223")
}
