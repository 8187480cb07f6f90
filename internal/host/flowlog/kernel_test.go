package flowlog

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/host/firewall"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// running is a Reader running in the lab's gateway namespace, its records in channels.
type running struct {
	r        *Reader
	flows    chan Flow
	opens    chan Flow
	attempts chan Attempt
}

// start runs r (NetNSFd set to the gateway) until the test ends; Run must then return nil.
func start(t *testing.T, l *lab, r *Reader, attempts func(Attempt)) *running {
	t.Helper()
	rn := &running{r: r, flows: make(chan Flow, 1000), opens: make(chan Flow, 1000), attempts: make(chan Attempt, 10000)}
	r.NetNSFd = int(l.gw.h)
	r.OnOpen = func(f Flow) { rn.opens <- f }
	ready := make(chan struct{})
	r.Ready = func() { close(ready) }
	if attempts == nil {
		attempts = func(a Attempt) { rn.attempts <- a }
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, func(f Flow) { rn.flows <- f }, attempts) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not get ready")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return rn
}

// next waits (bounded) for a record that match accepts, skipping others.
func next[T any](t *testing.T, ch <-chan T, within time.Duration, match func(T) bool) (T, bool) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case v := <-ch:
			if match(v) {
				return v, true
			}
		case <-deadline:
			var zero T
			return zero, false
		}
	}
}

// none asserts that no record that match accepts comes within d.
func none[T any](t *testing.T, ch <-chan T, d time.Duration, match func(T) bool, what string) {
	t.Helper()
	if v, ok := next(t, ch, d, match); ok {
		t.Errorf("%s: got %+v", what, v)
	}
}

// exchange sends n bytes in lines over c and reads them back.
func exchange(t *testing.T, c net.Conn, n int) {
	t.Helper()
	line := strings.Repeat("x", 99) + "\n"
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, len(line))
	for sent := 0; sent < n; sent += len(line) {
		if _, err := c.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		if _, err := ioReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	}
}

func ioReadFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func to(dst string, port uint16) func(Flow) bool {
	return func(f Flow) bool { return f.Dst == ip(dst) && f.Port == port }
}

// A connection through the allowed_tcp set yields one open record and one closed record
// with its bytes (at least what was sent each way); a cut one is reported too.
func TestFlowOfAllowedTCP(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	echoServer(t, l.inet, "203.0.113.10:22")
	echoServer(t, l.inet, "198.51.100.10:5432")
	if err := l.fw.Admit("lab", []firewall.Endpoint{{Addr: ip("203.0.113.10"), Port: 22, Timeout: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	rn := start(t, l, &Reader{}, nil)

	const n = 20000
	c, err := l.dial("203.0.113.10:22", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, c, n)
	open, ok := next(t, rn.opens, 5*time.Second, to("203.0.113.10", 22))
	if !ok || !open.Marked || open.Src != ip("100.96.0.2") || open.Proto != 6 || open.Start.IsZero() || open.BytesOut != 0 {
		t.Fatalf("open record: %+v, %v", open, ok)
	}
	// An unmarked forwarded flow (allowed_cidrs) is not reported without Sandboxes.
	other, err := l.dial("198.51.100.10:5432", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, other, 100)
	other.Close()
	c.Close()
	// Conntrack forgets a closed connection after TIME_WAIT; the cut makes it now, and
	// is itself a way a flow ends.
	if _, err := l.fw.FlushTCP(ip("100.96.0.2"), nil); err != nil {
		t.Fatal(err)
	}
	f, ok := next(t, rn.flows, 10*time.Second, to("203.0.113.10", 22))
	if !ok {
		t.Fatal("no flow record")
	}
	if !f.Marked || f.Src != ip("100.96.0.2") || f.SrcPort == 0 || f.Proto != 6 ||
		f.BytesOut < n || f.BytesIn < n || f.PacketsOut == 0 || f.Start.IsZero() || f.End.Before(f.Start) {
		t.Errorf("flow record: %+v", f)
	}
	none(t, rn.flows, 500*time.Millisecond, func(f Flow) bool { return f.Port == 22 || f.Port == 5432 }, "a second record, or an unmarked flow")
	if s := rn.r.Stats(); s != (Stats{}) {
		t.Errorf("stats: %+v", s)
	}
}

// With Sandboxes set, unmarked forwarded flows from the range are reported too; flows
// DNATed to the gateway's own listeners never are.
func TestFlowOfSandboxRange(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	echoServer(t, l.inet, "198.51.100.10:5432")
	echoServer(t, l.gw, "0.0.0.0:15001") // the transparent proxy
	rn := start(t, l, &Reader{Sandboxes: mustPrefix("100.96.0.0/16")}, nil)
	for _, addr := range []string{"198.51.100.10:5432", "203.0.113.10:443"} {
		c, err := l.dial(addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		exchange(t, c, 500)
		c.Close()
	}
	f, ok := next(t, rn.opens, 5*time.Second, to("198.51.100.10", 5432))
	if !ok || f.Marked {
		t.Errorf("allowed_cidrs flow: %+v, %v", f, ok)
	}
	none(t, rn.opens, 500*time.Millisecond, func(f Flow) bool { return f.Port == 443 || f.Port == 15001 }, "a DNATed flow")
}

// A denied SYN yields an Attempt with its tuple and the prefix deny; a monitor sandbox's
// passes and yields one with the prefix monitor.
func TestAttempts(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	echoServer(t, l.inet, "203.0.113.10:2222")
	rn := start(t, l, &Reader{}, nil)
	if c, err := l.dial("203.0.113.10:2222", 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a denied connection got through")
	}
	a, ok := next(t, rn.attempts, 5*time.Second, func(Attempt) bool { return true })
	want := Attempt{Src: ip("100.96.0.2"), Dst: ip("203.0.113.10"), Proto: 6, Port: 2222, Prefix: firewall.PrefixDeny}
	a.SrcPort, a.At = 0, time.Time{}
	if !ok || a != want {
		t.Errorf("attempt %+v (%v), want %+v", a, ok, want)
	}

	l.apply(t, true)
	c, err := l.dial("203.0.113.10:2222", 5*time.Second)
	if err != nil {
		t.Fatalf("monitor: %v", err)
	}
	exchange(t, c, 100)
	c.Close()
	a, ok = next(t, rn.attempts, 5*time.Second, func(a Attempt) bool { return a.Prefix == firewall.PrefixMonitor })
	if !ok || a.Dst != ip("203.0.113.10") || a.Port != 2222 {
		t.Errorf("monitor attempt: %+v, %v", a, ok)
	}
}

// The log rule's limit bounds the Attempts of a flood: 300 new flows (UDP, each its own
// port) in a burst give at most the burst plus the rate over the time it took.
func TestAttemptFloodIsLimited(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	rn := start(t, l, &Reader{}, nil)
	const flows = 300
	began := time.Now()
	err := l.sbx.do(func() {
		c, err := net.ListenPacket("udp4", "100.96.0.2:0")
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		for i := 0; i < flows; i++ {
			if _, err := c.WriteTo([]byte("x"), &net.UDPAddr{IP: net.ParseIP("203.0.113.10"), Port: 10000 + i}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(began)
	got := 0
	for {
		if _, ok := next(t, rn.attempts, time.Second, func(a Attempt) bool { return a.Proto == 17 }); !ok {
			break
		}
		got++
		if got > flows {
			break
		}
	}
	limit := 50 + int(20*(took.Seconds()+1)) // burst + rate over the flood and the wait's slack
	t.Logf("%d attempts for %d flows sent in %v", got, flows, took)
	if got == 0 || got > limit {
		t.Errorf("%d attempts for %d flows sent in %v, want 1..%d", got, flows, took, limit)
	}
}

// A consumer that does not keep up loses records (counted); the socket reader does not
// wait for it, and records flow again once it is back.
func TestSlowConsumerDrops(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	release := make(chan struct{})
	got := make(chan Attempt, 1000)
	rn := start(t, l, &Reader{Queue: 2}, func(a Attempt) {
		<-release
		got <- a
	})
	flood := func(base int) {
		_ = l.sbx.do(func() {
			c, err := net.ListenPacket("udp4", "100.96.0.2:0")
			if err != nil {
				return
			}
			defer c.Close()
			for i := 0; i < 40; i++ {
				_, _ = c.WriteTo([]byte("x"), &net.UDPAddr{IP: net.ParseIP("203.0.113.10"), Port: base + i})
			}
		})
	}
	flood(20000)
	deadline := time.Now().Add(10 * time.Second)
	for rn.r.Stats().AttemptsDropped == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if rn.r.Stats().AttemptsDropped == 0 {
		t.Fatal("a blocked consumer lost nothing: the reader waited for it")
	}
	close(release)
	time.Sleep(1100 * time.Millisecond) // the limit's tokens come back at 20 a second
	flood(30000)
	if _, ok := next(t, got, 5*time.Second, func(a Attempt) bool { return a.Port >= 30000 }); !ok {
		t.Error("no record after the consumer came back")
	}
}

// One group, one reader: a second Run on the same group fails, wrapped.
func TestGroupHeld(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	start(t, l, &Reader{Group: 77}, nil)
	r := &Reader{NetNSFd: int(l.gw.h), Group: 77}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := r.Run(ctx, nil, func(Attempt) {})
	if err == nil || !strings.Contains(err.Error(), "flowlog: nflog: bind group 77") {
		t.Errorf("second reader of a group: %v", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Error("second reader waited instead of failing")
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// A connection that ends by itself is reported when conntrack forgets it (after
// TIME_WAIT, shortened here to a second in the lab's gateway), once.
func TestFlowClosedByItself(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	l.gw.sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1")
	echoServer(t, l.inet, "203.0.113.10:22")
	if err := l.fw.Admit("lab", []firewall.Endpoint{{Addr: ip("203.0.113.10"), Port: 22, Timeout: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	rn := start(t, l, &Reader{}, nil)
	c, err := l.dial("203.0.113.10:22", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, c, 3000)
	began := time.Now()
	c.Close()
	// The kernel reaps an expired entry on its next GC scan, which may be a minute away
	// in an idle namespace, or when the table is read: the test reads it (bounded).
	h, err := vnl.NewHandleAt(l.gw.h, unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var f Flow
	ok := false
	for i := 0; i < 30 && !ok; i++ {
		if _, err := h.ConntrackTableList(vnl.ConntrackTable, unix.AF_INET); err != nil {
			t.Fatal(err)
		}
		f, ok = next(t, rn.flows, 500*time.Millisecond, to("203.0.113.10", 22))
	}
	if !ok || !f.Marked || f.BytesOut < 3000 || f.BytesIn < 3000 {
		t.Fatalf("flow record: %+v, %v", f, ok)
	}
	t.Logf("record %v after the close", time.Since(began))
	none(t, rn.flows, 500*time.Millisecond, to("203.0.113.10", 22), "a second record")
}

// A denied connection's retransmitted SYNs are one attempt, not one each.
func TestAttemptRetransmissionsAreOne(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	rn := start(t, l, &Reader{}, nil)
	// SYNs at 0, 1 and 3 s: the dial gives up after 3.5 s.
	if c, err := l.dial("203.0.113.10:2222", 3500*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a denied connection got through")
	}
	if _, ok := next(t, rn.attempts, 5*time.Second, func(a Attempt) bool { return a.Port == 2222 }); !ok {
		t.Fatal("no attempt")
	}
	none(t, rn.attempts, 500*time.Millisecond, func(a Attempt) bool { return a.Port == 2222 }, "a second attempt")
	if s := rn.r.Stats(); s.Repeats < 1 {
		t.Errorf("stats %+v: the retransmissions were not seen (the check would be vacuous)", s)
	}
}
