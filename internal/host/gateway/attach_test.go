package gateway

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/host/netns"
)

func TestAttachTakesTheLowestFreeSubnet(t *testing.T) {
	ctx := context.Background()
	// deleteVM is the API's delete: the store first, then the network.
	deleteVM := func(w *world, id string, n store.Network) {
		w.store.remove("t", id)
		w.view.remove("t", id)
		if err := w.gw.Detach(ctx, "t", id, n); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name  string
		setup func(w *world)
		want  string // the next VM's address
	}{
		{"nothing in use", func(*world) {}, "100.96.0.2"},
		{"a stored VM", func(w *world) { w.create("t", "a") }, "100.96.0.6"},
		{"an attachment whose VM is not stored yet", func(w *world) { w.attach("t", "a") }, "100.96.0.6"},
		{"an attachment whose VM could not be stored", func(w *world) {
			n := w.attach("t", "a")
			if err := w.gw.Detach(ctx, "t", "a", n); err != nil {
				t.Fatal(err)
			}
		}, "100.96.0.2"},
		{"a VM deleted from the store that the view still shows", func(w *world) {
			w.create("t", "a")
			w.store.remove("t", "a")
		}, "100.96.0.6"},
		{"a deleted VM", func(w *world) { deleteVM(w, "a", w.create("t", "a")) }, "100.96.0.2"},
		{"a gap between two VMs", func(w *world) {
			w.create("t", "a")
			b := w.create("t", "b")
			w.create("t", "c")
			deleteVM(w, "b", b)
		}, "100.96.0.6"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, time.Hour)
			w.run()
			tc.setup(w)
			if got := w.attach("t", "next"); got.Address != tc.want {
				t.Errorf("the next VM got %s, want %s", got.Address, tc.want)
			}
		})
	}
}

func TestPendingAttachmentsKeepTheirRules(t *testing.T) {
	w := newWorld(t, time.Hour)
	w.run()
	a, b := w.attach("t", "a"), w.attach("t", "b")
	if want := []string{a.Netns, b.Netns}; !slices.Equal(w.fw.Sandboxes(), sorted(want)) {
		t.Fatalf("sandboxes in the table: %v, want %v", w.fw.Sandboxes(), want)
	}
	// Neither VM is in the view yet: their interfaces are named, and nothing is allowed.
	w.golden("pending")

	// A change of the view that shows neither VM keeps both attachments in the table.
	w.view.settle(t)
	if got := w.fw.Sandboxes(); len(got) != 2 {
		t.Fatalf("after a change of the view, the table names %v; want both pending attachments", got)
	}
	// Once the view has shown a VM, it is the view's: when the view drops it, its rules go.
	w.store.put(store.VM{Tenant: "t", ID: "a", Network: a})
	w.show("t", "a", a, "203.0.113.0/24")
	w.view.remove("t", "a")
	w.view.settle(t)
	if got := w.fw.Sandboxes(); !slices.Equal(got, []string{b.Netns}) {
		t.Errorf("after the view dropped a, the table names %v; want only b, still pending", got)
	}
}

func TestAttachRefusesANamespaceInUse(t *testing.T) {
	cases := []struct {
		name  string
		setup func(w *world)
	}{
		{"the VM is being attached", func(w *world) { w.attach("t", "a") }},
		{"the view shows the VM", func(w *world) { w.create("t", "a") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, time.Hour)
			w.run()
			tc.setup(w)
			w.nets.Ops()
			applies, _ := w.fw.Applies()
			_, err := w.gw.Attach(context.Background(), "t", "a")
			if !errors.Is(err, store.ErrConflict) {
				t.Fatalf("Attach = %v, want store.ErrConflict", err)
			}
			if ops := w.nets.Ops(); len(ops) > 0 {
				t.Errorf("a refused Attach changed namespaces: %v", ops)
			}
			if now, _ := w.fw.Applies(); now != applies {
				t.Errorf("a refused Attach applied the firewall")
			}
		})
	}
}

func TestConcurrentAttachOfOneVM(t *testing.T) {
	w := newWorld(t, time.Hour)
	w.run()
	w.nets.Ops()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { _, errs[i] = w.gw.Attach(context.Background(), "t", "a") })
	}
	wg.Wait()
	ok, conflict := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, store.ErrConflict):
			conflict++
		default:
			t.Errorf("Attach: %v", err)
		}
	}
	if ok != 1 || conflict != 1 {
		t.Errorf("%d Attaches succeeded and %d conflicted; want one of each", ok, conflict)
	}
	if ops, want := w.nets.Ops(), []string{"create " + netns.Name("t", "a")}; !slices.Equal(ops, want) {
		t.Errorf("namespace changes: %v, want %v", ops, want)
	}
}

func TestAttachLeavesAnotherGatewaysNamespaceAlone(t *testing.T) {
	w := newWorld(t, time.Hour)
	w.run()
	name := netns.Name("t", "a")
	w.nets.Foreign(name)
	before := w.nets.Dump()
	if _, err := w.gw.Attach(context.Background(), "t", "a"); err == nil || errors.Is(err, store.ErrConflict) {
		t.Fatalf("Attach into another gateway's namespace = %v, want its error", err)
	}
	if got := w.nets.Dump(); got != before {
		t.Errorf("the failed Attach changed namespaces:\n%s\nwas:\n%s", got, before)
	}
	if got := w.fw.Sandboxes(); len(got) != 0 {
		t.Errorf("the failed Attach left rules for %v", got)
	}
	// Nothing of it stays pending: its subnet is free, and the gateway ready.
	if got := w.attach("t", "b"); got.Address != "100.96.0.2" {
		t.Errorf("the next VM got %s, want the failed one's 100.96.0.2", got.Address)
	}
	if err := w.gw.Ready(); err != nil {
		t.Errorf("Ready = %v", err)
	}
}

func TestDetach(t *testing.T) {
	ctx := context.Background()
	t.Run("after the view dropped the VM", func(t *testing.T) {
		w := newWorld(t, time.Hour)
		w.run()
		a, b := w.create("t", "a", "203.0.113.0/24"), w.create("t", "b", "203.0.113.0/24")
		w.nets.Ops()
		w.store.remove("t", "a")
		w.view.remove("t", "a")
		if err := w.gw.Detach(ctx, "t", "a", a); err != nil {
			t.Fatal(err)
		}
		if ops := w.nets.Ops(); !slices.Equal(ops, []string{"delete " + a.Netns}) {
			t.Errorf("namespace changes: %v, want only a's deletion", ops)
		}
		if got := w.fw.Sandboxes(); !slices.Equal(got, []string{b.Netns}) {
			t.Errorf("the table names %v, want only b", got)
		}
	})
	t.Run("while the view still shows the VM", func(t *testing.T) {
		w := newWorld(t, time.Hour)
		w.run()
		a := w.create("t", "a", "203.0.113.0/24")
		w.store.remove("t", "a")
		if err := w.gw.Detach(ctx, "t", "a", a); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(w.nets.Dump(), a.Netns) {
			t.Errorf("the namespace is still there:\n%s", w.nets.Dump())
		}
		// Its rules name an interface that no longer exists, until the view catches up.
		w.view.remove("t", "a")
		w.view.settle(t)
		if got := w.fw.Sandboxes(); len(got) != 0 {
			t.Errorf("after the view dropped the VM, the table names %v", got)
		}
	})
	t.Run("a VM without a namespace", func(t *testing.T) {
		w := newWorld(t, time.Hour)
		w.run()
		w.nets.Ops()
		if err := w.gw.Detach(ctx, "t", "a", store.Network{Mode: "none"}); err != nil {
			t.Fatal(err)
		}
		if ops := w.nets.Ops(); len(ops) > 0 {
			t.Errorf("namespace changes: %v", ops)
		}
	})
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
