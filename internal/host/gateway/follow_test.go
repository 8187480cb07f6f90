package gateway

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/host/firewall/firewalltest"
)

func TestOnlyAChangedTableIsApplied(t *testing.T) {
	cases := []struct {
		name    string
		change  func(w *world, a store.Network)
		applied bool
	}{
		{"nothing", func(*world, store.Network) {}, false},
		{"a VM without a sandbox network comes", func(w *world, _ store.Network) {
			w.view.put(VM{Tenant: "t", ID: "plain", Network: store.Network{Mode: "none"}, Allowed: pfx("0.0.0.0/0")})
		}, false},
		{"allowed_cidrs written otherwise, allowing the same", func(w *world, a store.Network) {
			w.view.put(VM{Tenant: "t", ID: "a", Network: a, Allowed: pfx("203.0.113.128/25", "203.0.113.0/25")})
		}, false},
		{"an IPv6 range allowed (sandboxes have no IPv6)", func(w *world, a store.Network) {
			w.view.put(VM{Tenant: "t", ID: "a", Network: a, Allowed: pfx("203.0.113.0/24", "2001:db8::/32")})
		}, false},
		{"allowed_cidrs widened", func(w *world, a store.Network) {
			w.view.put(VM{Tenant: "t", ID: "a", Network: a, Allowed: pfx("203.0.113.0/24", "198.51.100.0/24")})
		}, true},
		{"allowed_cidrs tightened", func(w *world, a store.Network) {
			w.view.put(VM{Tenant: "t", ID: "a", Network: a, Allowed: pfx("203.0.113.0/25")})
		}, true},
		{"the VM goes", func(w *world, _ store.Network) { w.view.remove("t", "a") }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, time.Hour)
			w.run()
			a := w.create("t", "a", "203.0.113.0/24")
			before, _ := w.fw.Applies()
			tc.change(w, a)
			w.view.settle(t)
			after, _ := w.fw.Applies()
			if got := after > before; got != tc.applied {
				t.Errorf("applied: %v, want %v (%d applies before, %d after)", got, tc.applied, before, after)
			}
		})
	}
}

func TestAPolicyChangeReachesTheTable(t *testing.T) {
	w := newWorld(t, time.Hour)
	w.run()
	a := w.create("t", "a", "203.0.113.0/24")
	w.create("t", "b")
	w.show("t", "a", a, "203.0.113.0/25", "198.51.100.0/24")
	w.golden("changed")
}

func TestResyncReappliesAnUnchangedTable(t *testing.T) {
	w := newWorld(t, 5*time.Millisecond)
	w.run()
	w.create("t", "a", "203.0.113.0/24")
	want := w.fw.Dump()
	before, _ := w.fw.Applies()
	w.eventually("re-applied", func() bool {
		n, _ := w.fw.Applies()
		return n >= before+2
	})
	if got := w.fw.Dump(); got != want {
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
		{"everything dropped", []string{"203.0.113.0/24"}, nil, []string{"100.96.0.2 keep "}},
		{"moved", []string{"203.0.113.0/24"}, []string{"198.51.100.0/24"}, []string{"100.96.0.2 keep 198.51.100.0/24"}},
		{"widened", []string{"203.0.113.0/25"}, []string{"203.0.113.0/24"}, nil},
		{"joined into one range", []string{"203.0.113.0/25", "203.0.113.128/25"}, []string{"203.0.113.0/24"}, nil},
		{"first allowance", nil, []string{"203.0.113.0/24"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, time.Hour)
			w.run()
			a := w.create("t", "a", tc.before...)
			w.create("t", "b", "203.0.113.0/24") // unchanged: never flushed
			w.fw.Flushes()
			w.show("t", "a", a, tc.now...)
			if got := flushStrings(w.fw.Flushes()); !slices.Equal(got, tc.flushes) {
				t.Errorf("flushes: %q, want %q", got, tc.flushes)
			}
		})
	}
}

func TestFailedApplies(t *testing.T) {
	broken := errors.New("netlink: operation not permitted")
	ctx := context.Background()

	t.Run("at start: the gateway does not start, and nothing is up", func(t *testing.T) {
		w := newWorld(t, time.Hour)
		w.store.put(store.VM{Tenant: "t", ID: "a", Network: stored(t, "t", "a", 0)})
		w.fw.Fail(broken)
		if err := w.gw.Run(t.Context()); !errors.Is(err, broken) {
			t.Fatalf("Run = %v, want the firewall's error", err)
		}
		if ops := w.nets.Ops(); len(ops) > 0 {
			t.Errorf("namespace changes before the table: %v", ops)
		}
		if w.gw.Ready() == nil {
			t.Error("Ready = nil")
		}
	})

	t.Run("a tightening: the previous rules stay until a retry applies it", func(t *testing.T) {
		w := newWorld(t, time.Hour)
		w.run()
		a := w.create("t", "a", "203.0.113.0/24")
		inForce := w.fw.Dump()
		w.fw.Flushes()
		w.fw.Fail(broken)
		w.show("t", "a", a, "203.0.113.0/25")
		if err := w.gw.Ready(); !errors.Is(err, broken) {
			t.Errorf("Ready = %v, want the firewall's error", err)
		}
		if w.fw.Dump() != inForce {
			t.Error("a failed apply changed the table in force")
		}
		if f := w.fw.Flushes(); len(f) > 0 {
			t.Errorf("flows were cut before the rules changed: %v", f)
		}
		// The follower may still be handling the second signal of show: once one more apply
		// has failed, every later one is a retry, with no change of the view to prompt it.
		_, failed := w.fw.Applies()
		w.eventually("failing once more", func() bool { _, n := w.fw.Applies(); return n > failed })
		w.fw.Fail(nil)
		w.eventually("ready", func() bool { return w.gw.Ready() == nil })
		if got, want := flushStrings(w.fw.Flushes()), []string{"100.96.0.2 keep 203.0.113.0/25"}; !slices.Equal(got, want) {
			t.Errorf("flushes after the retry: %q, want %q", got, want)
		}
		if w.fw.Dump() == inForce {
			t.Error("the retry did not apply the tightening")
		}
	})

	t.Run("during Attach: no namespace, nothing pending", func(t *testing.T) {
		w := newWorld(t, time.Hour)
		w.run()
		w.nets.Ops()
		w.fw.Fail(broken)
		if _, err := w.gw.Attach(ctx, "t", "a"); !errors.Is(err, broken) {
			t.Fatalf("Attach = %v, want the firewall's error", err)
		}
		if ops := w.nets.Ops(); len(ops) > 0 {
			t.Errorf("namespace changes without rules: %v", ops)
		}
		w.fw.Fail(nil)
		w.eventually("ready", func() bool { return w.gw.Ready() == nil })
		if n := w.attach("t", "a"); n.Address != "100.96.0.2" {
			t.Errorf("the VM attached again got %s, want 100.96.0.2", n.Address)
		}
	})

	t.Run("during Detach: the namespace goes, its rules with a retry", func(t *testing.T) {
		w := newWorld(t, time.Hour)
		w.run()
		a := w.attach("t", "a") // never stored: the API detaches it again
		w.nets.Ops()
		w.fw.Fail(broken)
		if err := w.gw.Detach(ctx, "t", "a", a); !errors.Is(err, broken) {
			t.Fatalf("Detach = %v, want the firewall's error", err)
		}
		if ops := w.nets.Ops(); !slices.Equal(ops, []string{"delete " + a.Netns}) {
			t.Errorf("namespace changes: %v, want its deletion", ops)
		}
		w.fw.Fail(nil)
		w.eventually("without the detached VM's rules", func() bool { return len(w.fw.Sandboxes()) == 0 })
		w.eventually("ready", func() bool { return w.gw.Ready() == nil })
	})
}

func flushStrings(fs []firewalltest.Flush) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.String())
	}
	return out
}
