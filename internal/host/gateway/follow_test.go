package gateway

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/host/firewall/firewalltest"
	"github.com/egressd/egressd/internal/host/netns"
)

func TestOnlyAChangedTableIsApplied(t *testing.T) {
	cases := []struct {
		name    string
		change  func(w *world)
		applied bool
	}{
		{"a VM without a sandbox network comes", func(w *world) {
			w.put("t", "plain", store.Network{Mode: "none"})
			w.policy("t", "plain", "0.0.0.0/0")
		}, false},
		{"another node's VM comes", func(w *world) {
			w.put("t", "x", store.Network{Mode: "netns", Node: nodeB, State: store.NetworkReady, Address: "100.97.0.2", Gateway: "100.97.0.1"})
			w.policy("t", "x", "0.0.0.0/0")
		}, false},
		{"allowed_cidrs written otherwise, allowing the same", func(w *world) {
			w.policy("t", "a", "203.0.113.128/25", "203.0.113.0/25")
		}, false},
		{"an IPv6 range allowed (sandboxes have no IPv6)", func(w *world) {
			w.policy("t", "a", "203.0.113.0/24", "2001:db8::/32")
		}, false},
		{"allowed_cidrs widened", func(w *world) { w.policy("t", "a", "203.0.113.0/24", "198.51.100.0/24") }, true},
		{"allowed_cidrs tightened", func(w *world) { w.policy("t", "a", "203.0.113.0/25") }, true},
		{"the VM is deleted", func(w *world) { w.retire("t", "a"); w.awaitGone("t", "a") }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			a := w.nodeA().run()
			a.ready("t", "a", "203.0.113.0/24")
			before, _ := a.fw.Applies()
			tc.change(w)
			a.enforced()
			after, _ := a.fw.Applies()
			if got := after > before; got != tc.applied {
				t.Errorf("applied: %v, want %v (%d applies before, %d after)", got, tc.applied, before, after)
			}
		})
	}
}

// TestTablesOfVMsBeingMade: the table names the interface of a VM whose network is being
// made, and allows it nothing, until the view shows the VM ready.
func TestTablesOfVMsBeingMade(t *testing.T) {
	w := newWorld(t)
	a := w.nodeA().run()
	inTable := make(chan string, 2)
	a.nets.setOnCreate(func(at netns.Attachment) { inTable <- a.fw.Dump() })
	a.ready("t", "a", "203.0.113.0/24")
	<-inTable
	a.nets.setOnCreate(nil)
	// b's policy changes nothing: the view does not show it ready yet.
	block := make(chan struct{})
	a.nets.setOnCreate(func(at netns.Attachment) { inTable <- a.fw.Dump(); <-block })
	w.create(nodeA, "t", "b", "203.0.113.0/24")
	golden(t, "pending.nft", <-inTable)
	close(block)
	w.await("t", "b", store.NetworkReady)
}

func TestAPolicyChangeReachesTheTable(t *testing.T) {
	w := newWorld(t)
	a := w.nodeA().run()
	a.ready("t", "a", "203.0.113.0/24")
	a.ready("t", "b")
	a.setPolicy("t", "a", "203.0.113.0/25", "198.51.100.0/24")
	golden(t, "changed.nft", a.fw.Dump())
}

func TestResyncReappliesAnUnchangedTable(t *testing.T) {
	w := newWorld(t)
	a := w.node(nodeA, sandboxRange, 5*time.Millisecond).run()
	a.ready("t", "a", "203.0.113.0/24")
	want := a.fw.Dump()
	before, _ := a.fw.Applies()
	eventually(t, "re-applied", func() bool {
		n, _ := a.fw.Applies()
		return n >= before+2
	})
	if got := a.fw.Dump(); got != want {
		t.Errorf("a resync changed the table:\n%s\nwas:\n%s", got, want)
	}
}

func TestTighteningFlushesConntrack(t *testing.T) {
	cases := []struct {
		name        string
		before, now []string
		flushes     []string // firewalltest.Flush.String of each
	}{
		{"narrowed", []string{"203.0.113.0/24"}, []string{"203.0.113.0/25"}, []string{"100.96.0.2 keep 203.0.113.0/25"}},
		{"one range dropped", []string{"203.0.113.0/24", "198.51.100.0/24"}, []string{"198.51.100.0/24"}, []string{"100.96.0.2 keep 198.51.100.0/24"}},
		{"everything dropped", []string{"203.0.113.0/24"}, []string{}, []string{"100.96.0.2 keep "}},
		{"moved", []string{"203.0.113.0/24"}, []string{"198.51.100.0/24"}, []string{"100.96.0.2 keep 198.51.100.0/24"}},
		{"widened", []string{"203.0.113.0/25"}, []string{"203.0.113.0/24"}, nil},
		{"joined into one range", []string{"203.0.113.0/25", "203.0.113.128/25"}, []string{"203.0.113.0/24"}, nil},
		{"first allowance", nil, []string{"203.0.113.0/24"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			a := w.nodeA().run()
			a.ready("t", "a", tc.before...)
			a.ready("t", "b", "203.0.113.0/24") // unchanged: never flushed
			a.fw.Flushes()
			a.setPolicy("t", "a", tc.now...)
			if got := flushStrings(a.fw.Flushes()); !slices.Equal(got, tc.flushes) {
				t.Errorf("flushes: %q, want %q", got, tc.flushes)
			}
		})
	}
}

func TestFailedApplies(t *testing.T) {
	broken := errors.New("netlink: operation not permitted")

	t.Run("at start: the gateway does not start, and nothing is up", func(t *testing.T) {
		w := newWorld(t)
		w.put("t", "a", on(network(attachment(t, "t", "a", 0)), nodeA, store.NetworkReady))
		w.put("t", "p", store.Network{Mode: "netns", Node: nodeA, State: store.NetworkPending})
		a := w.nodeA()
		a.fw.Fail(broken)
		if err := a.gw.Run(t.Context()); !errors.Is(err, broken) {
			t.Fatalf("Run = %v, want the firewall's error", err)
		}
		if ops := a.nets.Ops(); len(ops) > 0 {
			t.Errorf("namespace changes before the table: %v", ops)
		}
		if a.gw.Ready() == nil {
			t.Error("Ready = nil")
		}
	})

	t.Run("a tightening: the previous rules stay until a retry applies it", func(t *testing.T) {
		w := newWorld(t)
		a := w.nodeA().run()
		a.ready("t", "a", "203.0.113.0/24")
		inForce := a.fw.Dump()
		a.fw.Flushes()
		a.fw.Fail(broken)
		w.policy("t", "a", "203.0.113.0/25")
		eventually(t, "failing", func() bool { return errors.Is(a.gw.Ready(), broken) })
		if a.fw.Dump() != inForce {
			t.Error("a failed apply changed the table in force")
		}
		if f := a.fw.Flushes(); len(f) > 0 {
			t.Errorf("flows were cut before the rules changed: %v", f)
		}
		// Once one more apply has failed, every later one is a retry, with no change of the
		// view to prompt it.
		_, failed := a.fw.Applies()
		eventually(t, "failing once more", func() bool { _, n := a.fw.Applies(); return n > failed })
		a.fw.Fail(nil)
		eventually(t, "ready", func() bool { return a.gw.Ready() == nil })
		if got, want := flushStrings(a.fw.Flushes()), []string{"100.96.0.2 keep 203.0.113.0/25"}; !slices.Equal(got, want) {
			t.Errorf("flushes after the retry: %q, want %q", got, want)
		}
		if a.fw.Dump() == inForce {
			t.Error("the retry did not apply the tightening")
		}
	})

	t.Run("while a network is made: nothing is made without rules, and a retry makes it", func(t *testing.T) {
		w := newWorld(t)
		a := w.nodeA().run()
		a.nets.Ops()
		a.fw.Fail(broken)
		w.create(nodeA, "t", "a", "203.0.113.0/24")
		// A few attempts, each of which failed at the table.
		_, failed := a.fw.Applies()
		eventually(t, "failing again", func() bool { _, n := a.fw.Applies(); return n > failed+2 })
		if ops := a.nets.Ops(); len(ops) > 0 {
			t.Errorf("namespace changes without rules: %v", ops)
		}
		if vm, _ := w.get("t", "a"); vm.Network.State != store.NetworkPending {
			t.Errorf("the VM is %q while its table cannot be applied, want pending", vm.Network.State)
		}
		a.fw.Fail(nil)
		if n := w.await("t", "a", store.NetworkReady); n.Address != "100.96.0.2" {
			t.Errorf("the VM got %s, want 100.96.0.2", n.Address)
		}
		a.enforced()
		if err := a.gw.Ready(); err != nil {
			t.Errorf("Ready = %v", err)
		}
	})

	t.Run("while a network is removed: the namespace goes, its rules with a retry", func(t *testing.T) {
		w := newWorld(t)
		a := w.nodeA().run()
		n := a.ready("t", "a", "203.0.113.0/24")
		a.nets.Ops()
		a.fw.Fail(broken)
		w.retire("t", "a")
		w.awaitGone("t", "a")
		if ops := a.nets.Ops(); !slices.Equal(ops, []string{"delete " + n.Netns}) {
			t.Errorf("namespace changes: %v, want its deletion", ops)
		}
		a.fw.Fail(nil)
		eventually(t, "without the deleted VM's rules", func() bool { return len(a.fw.Sandboxes()) == 0 })
		eventually(t, "ready", func() bool { return a.gw.Ready() == nil })
	})
}

func flushStrings(fs []firewalltest.Flush) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.String())
	}
	return out
}
