package e2e

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/policy"
)

// TestTransparentAllowedTCPQuick: the real binary end to end for allowed_tcp in transparent
// mode. A sandbox that looks up an allowed_tcp name connects to its address on the port;
// an unlisted name, an address it never looked up, and another VM (same policy, no
// lookup of its own) do not reach the server; removing the entry closes the address; the
// denied attempts are recorded.
func TestTransparentAllowedTCPQuick(t *testing.T) { eachGWMode(t, testTransparentAllowedTCPQuick) }

func testTransparentAllowedTCPQuick(t *testing.T, m gwMode) {
	l := newGWLab(t, m.args...)
	l.dns.Set("git.example.test", webAddr)
	p := policy.Policy{AllowedTCP: []string{"git.example.test:22"}}
	// Closed connections leave conntrack at once (in this lab's gateway only), so that a
	// record whose TIME_WAIT update was missed still comes now, with the DESTROY.
	for _, s := range []string{"time_wait", "close", "close_wait", "last_ack", "fin_wait"} {
		ipCmd(t, "netns", "exec", l.gwNS, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_"+s+"=1")
	}
	a := l.vm("a", &p)
	b := l.vm("b", &p)

	if out, _ := l.py(a, tcpProbe("git.example.test", 22)); strings.TrimSpace(out) != "open" {
		t.Fatalf("A to git.example.test:22 after its lookup: %q", out)
	}
	if n := l.tcp22.Load(); n != 1 {
		t.Fatalf("the server got %d connections on 22, want 1", n)
	}
	for _, c := range []struct {
		who  *client.VM
		what string
		host string
	}{
		{a, "an unlisted name", "other.example.test"},
		{a, "an address never looked up", otherWeb},
		{b, "another VM, by the address A looked up", webAddr},
	} {
		if out, _ := l.py(c.who, tcpProbe(c.host, 22)); !strings.HasPrefix(strings.TrimSpace(out), "closed") {
			t.Errorf("%s (%s:22): %q", c.what, c.host, out)
		}
	}
	if n := l.tcp22.Load(); n != 1 {
		t.Errorf("the server got %d connections on 22, want only A's", n)
	}

	// A's connection is recorded when it ends: allowed by the entry, named, with its bytes.
	// Should its TIME_WAIT update be missed, its DESTROY comes when conntrack's garbage
	// collector passes, up to a minute later, or at once when a dump meets the expired
	// entry: the lab dumps its gateway's table meanwhile.
	_, errCT := exec.LookPath("conntrack")
	flow := l.awaitEvents(t, 90*time.Second, client.EventsFilter{VMID: l.id("a")}, func(evs []client.Event) bool {
		if errCT == nil {
			exec.Command("ip", "netns", "exec", l.gwNS, "conntrack", "-L", "-p", "tcp").Run()
		}
		return slices.ContainsFunc(evs, func(e client.Event) bool { return e.Kind == "close" && e.Port == 22 })
	})
	var conn, closed []client.Event
	for _, e := range flow {
		if e.Port == 22 && e.IP == webAddr {
			switch e.Kind {
			case "connect":
				conn = append(conn, e)
			case "close":
				closed = append(closed, e)
			}
		}
	}
	if len(conn) != 1 || conn[0].Decision != "allow" || conn[0].Reason != "allowed_tcp" || conn[0].Rule != "allowed_tcp git.example.test:22" || conn[0].Host != "git.example.test" {
		t.Errorf("A's connect records: %+v", conn)
	}
	if len(closed) != 1 || closed[0].BytesUp == 0 || closed[0].BytesDown == 0 || closed[0].Host != "git.example.test" {
		t.Errorf("A's close records: %+v", closed)
	}

	// Tightening: A's policy no longer lists the name. The address A was given is
	// closed at once, though its answer's lifetime is not over.
	l.setVM("a", policy.Policy{AllowedTCP: []string{"db.example.test:5432"}})
	if out, _ := l.py(a, tcpProbe(webAddr, 22)); !strings.HasPrefix(strings.TrimSpace(out), "closed") {
		t.Errorf("A to %s:22 after the entry was removed: %q", webAddr, out)
	}
	if n := l.tcp22.Load(); n != 1 {
		t.Errorf("the server got %d connections on 22 after the tightening, want 1", n)
	}

	// B's attempt is recorded, denied, as B's, by address: B looked nothing up.
	isB := func(e client.Event) bool { return e.Kind == "connect" && e.IP == webAddr && e.Port == 22 }
	evs := l.awaitEvents(t, 10*time.Second, client.EventsFilter{VMID: l.id("b"), Decision: "deny"}, func(evs []client.Event) bool {
		return slices.ContainsFunc(evs, isB)
	})
	for _, e := range evs {
		if isB(e) && (e.Reason != "ip_literal" || e.Host != "") {
			t.Errorf("B's attempt recorded as %+v", e)
		}
	}
}

// awaitEvents polls the events API, for bound at most, until done holds for the events of f.
func (l *gwLab) awaitEvents(t *testing.T, bound time.Duration, f client.EventsFilter, done func([]client.Event) bool) []client.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	for {
		evs, err := l.api.Events(ctx, f)
		if err == nil && done(evs) {
			return evs
		}
		if ctx.Err() != nil {
			t.Fatalf("events %+v: not there after %v (last: %+v, %v)", f, bound, evs, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestTransparentMonitorEveryPort: a VM whose policy is monitor reaches any port (the
// kernel lets it through) and each such flow is recorded as a would-be denial.
func TestTransparentMonitorEveryPort(t *testing.T) { eachGWMode(t, testTransparentMonitorEveryPort) }

func testTransparentMonitorEveryPort(t *testing.T, mode gwMode) {
	l := newGWLab(t, mode.args...)
	m := l.vm("m", &policy.Policy{Mode: policy.Monitor})
	if out, _ := l.py(m, tcpProbe(webAddr, 22)); strings.TrimSpace(out) != "open" {
		t.Fatalf("monitor VM to %s:22: %q", webAddr, out)
	}
	evs := l.awaitEvents(t, 10*time.Second, client.EventsFilter{VMID: l.id("m")}, func(evs []client.Event) bool {
		return slices.ContainsFunc(evs, func(e client.Event) bool { return e.Kind == "connect" && e.Port == 22 })
	})
	for _, e := range evs {
		if e.Kind == "connect" && e.Port == 22 && (e.Decision != "allow" || !e.WouldDeny || e.Mode != "monitor" || e.IP != webAddr) {
			t.Errorf("the monitored flow recorded as %+v", e)
		}
	}
}
