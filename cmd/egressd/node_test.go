package main

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
)

func TestNodeLabelFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		want string // labelFlag.String(), or "error: ..." text
	}{
		{args: nil, want: ""},
		{args: []string{"--node-label", "zone=a"}, want: "zone=a"},
		{args: []string{"--node-label", "zone=a", "--node-label", "disk=ssd"}, want: "disk=ssd,zone=a"},
		{args: []string{"--node-label", "zone=a", "--node-label", "zone=b"}, want: "zone=b"},
		{args: []string{"--node-label", "empty="}, want: "empty="},
		{env: "zone=a, rack=r1", want: "rack=r1,zone=a"},
		{args: []string{"--node-label", "zone"}, want: "error: is not a label"},
		{args: []string{"--node-label", "=a"}, want: "error: is not a label"},
	} {
		t.Setenv("EGRESSD_NODE_LABEL", tc.env) // "" sets no label
		cfg, err := parseFlags(append([]string{"--node-id", "n"}, tc.args...))
		if strings.HasPrefix(tc.want, "error: ") {
			if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(tc.want, "error: ")) {
				t.Errorf("%v: err %v, want %q", tc.args, err, tc.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v %q: %v", tc.args, tc.env, err)
			continue
		}
		if got := cfg.nodeLabels.String(); got != tc.want {
			t.Errorf("%v %q: labels %q, want %q", tc.args, tc.env, got, tc.want)
		}
	}
}

type nodeList []store.Node

func (l nodeList) ListNodes(context.Context) ([]store.Node, error) { return l, nil }

// TestCheckSandboxRange: a transparent node's range must not overlap any other registered
// node's, up or down; its own earlier registration and nodes without a range do not count.
func TestCheckSandboxRange(t *testing.T) {
	nodes := nodeList{
		{ID: "gw-a", SandboxCIDR: "100.96.0.0/24"},
		{ID: "gw-b", SandboxCIDR: "100.96.1.0/24"},
		{ID: "api", SandboxCIDR: ""},
	}
	for _, tc := range []struct {
		id, cidr string
		want     string // "" or words of the error
	}{
		{"gw-c", "100.96.2.0/24", ""},
		{"gw-a", "100.96.0.0/24", ""},       // itself, restarted
		{"gw-a", "100.96.0.0/23", "gw-b"},   // itself, grown into gw-b
		{"gw-c", "100.96.1.128/25", "gw-b"}, // inside another
		{"gw-c", "100.96.0.0/16", "gw-a"},   // around others
		{"gw-c", "100.96.0.0/24", "gw-a"},   // the same: gw-a's host under a new ID?
	} {
		cfg := &config{nodeID: tc.id, sandboxCIDR: netip.MustParsePrefix(tc.cidr)}
		err := checkSandboxRange(context.Background(), nodes, cfg)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %s: %v", tc.id, tc.cidr, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), `"`+tc.want+`"`) || !strings.Contains(err.Error(), `"`+tc.id+`"`) || !strings.Contains(err.Error(), tc.cidr)):
			t.Errorf("%s %s: err %v, want one naming %s, %s and %s", tc.id, tc.cidr, err, tc.id, tc.cidr, tc.want)
		}
	}
	// A host that ran as gw-a, restarted under another ID, is told how to get its VMs back.
	cfg := &config{nodeID: "gw-renamed", sandboxCIDR: netip.MustParsePrefix("100.96.0.0/24")}
	if err := checkSandboxRange(context.Background(), nodes, cfg); err == nil || !strings.Contains(err.Error(), "--node-id gw-a") {
		t.Errorf("the range of gw-a under another ID: %v, want the advice to start with --node-id gw-a", err)
	}
}

// steppedEnforcer enforces up to a revision the test sets.
type steppedEnforcer struct {
	mu  sync.Mutex
	rev int64
	up  chan struct{}
}

func (e *steppedEnforcer) set(rev int64) {
	e.mu.Lock()
	e.rev = rev
	e.mu.Unlock()
	select {
	case e.up <- struct{}{}:
	default:
	}
}

func (e *steppedEnforcer) WaitRevision(ctx context.Context, rev int64) error {
	for {
		e.mu.Lock()
		ok := e.rev >= rev
		e.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-e.up:
		}
	}
}

// TestWaitReporter: a gateway node heartbeats once it enforces a revision waited for (by every
// node, or by it), never for a wait of another node, and never before it enforces it.
func TestWaitReporter(t *testing.T) {
	e := &steppedEnforcer{up: make(chan struct{}, 1)}
	r := newWaitReporter("gw-a")
	kicks := make(chan struct{}, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.run(ctx, e, func() { kicks <- struct{}{} })
	none := func(what string) {
		t.Helper()
		select {
		case <-kicks:
			t.Fatalf("a heartbeat %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
	one := func(what string) {
		t.Helper()
		select {
		case <-kicks:
		case <-time.After(5 * time.Second):
			t.Fatalf("no heartbeat %s", what)
		}
	}
	r.Wanted(5, "gw-b")
	none("for another node's wait")
	r.Wanted(5, "")
	none("before revision 5 is enforced")
	e.set(5)
	one("once revision 5 is enforced")
	r.Wanted(4, "gw-a")
	none("for a revision already reported")
	e.set(9)
	r.Wanted(9, "gw-a")
	one("for its own wait, already enforced")
	none("twice for one wait")
}

// TestWaitReporterOutlivesABogusRevision: an announcement is trusted for nothing but a
// heartbeat. One of a revision that never comes (any client of the database may NOTIFY)
// must not stop the node from heartbeating for the waits after it.
func TestWaitReporterOutlivesABogusRevision(t *testing.T) {
	e := &steppedEnforcer{up: make(chan struct{}, 1)}
	e.set(5)
	r := newWaitReporter("gw-a")
	r.giveUp = 100 * time.Millisecond
	kicks := make(chan struct{}, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.run(ctx, e, func() { kicks <- struct{}{} })
	r.Wanted(1<<62, "")
	time.Sleep(2 * r.giveUp)
	e.set(6)
	r.Wanted(6, "gw-a")
	select {
	case <-kicks:
	case <-time.After(5 * time.Second):
		t.Fatal("no heartbeat for a revision waited for after a bogus one")
	}
}
