package gateway

import (
	"context"
	"flag"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/host/firewall/firewalltest"
	"github.com/egressd/egressd/internal/host/netns/netnstest"
	"github.com/egressd/egressd/policy"
)

var update = flag.Bool("update", false, "rewrite the golden dumps of the fakes in testdata")

// bound is how long a test waits for the gateway's follower at most: a bound on the wait,
// not a measure of speed.
const bound = 10 * time.Second

// fakeStore holds the stored VMs.
type fakeStore struct {
	mu  sync.Mutex
	vms []store.VM
}

func (s *fakeStore) AllVMs(context.Context) ([]store.VM, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.vms), nil
}

func (s *fakeStore) put(vm store.VM) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vms = append(s.vms, vm)
}

func (s *fakeStore) remove(tenant, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vms = slices.DeleteFunc(s.vms, func(vm store.VM) bool { return vm.Tenant == tenant && vm.ID == id })
}

// fakeView is the view. Its Changed channel is unbuffered: when a signal's send returns,
// the follower has taken it, and when the next one's returns, it has handled the first.
type fakeView struct {
	mu      sync.Mutex
	vms     []VM
	rev     int64 // one more with each put or drop
	changed chan struct{}
}

func (v *fakeView) VMs() []VM {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.vms)
}

func (v *fakeView) Changed() <-chan struct{} { return v.changed }

func (v *fakeView) Revision() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rev
}

// put shows vm, replacing the VM of the same tenant and ID.
func (v *fakeView) put(vm VM) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.vms = slices.DeleteFunc(v.vms, func(o VM) bool { return o.Tenant == vm.Tenant && o.ID == vm.ID })
	v.vms = append(v.vms, vm)
	v.rev++
}

func (v *fakeView) remove(tenant, id string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.vms = slices.DeleteFunc(v.vms, func(vm VM) bool { return vm.Tenant == tenant && vm.ID == id })
	v.rev++
}

// signal tells the follower that the view changed.
func (v *fakeView) signal(t *testing.T) {
	t.Helper()
	select {
	case v.changed <- struct{}{}:
	case <-time.After(bound):
		t.Fatal("the gateway does not follow the view")
	}
}

// settle signals twice: once both are taken, the follower has handled the first, and so
// every change made before it.
func (v *fakeView) settle(t *testing.T) {
	t.Helper()
	v.signal(t)
	v.signal(t)
}

// world is a gateway with fakes all round, as cmd/egressd wires it with the real parts.
type world struct {
	t     *testing.T
	store *fakeStore
	view  *fakeView
	nets  *netnstest.Fake
	fw    *firewalltest.Fake
	gw    *Gateway
}

var sandboxRange = netip.MustParsePrefix("100.96.0.0/16")

// newWorld makes a gateway that resyncs every resync (an hour: never, in a test).
func newWorld(t *testing.T, resync time.Duration) *world {
	w := &world{
		t:     t,
		store: &fakeStore{},
		view:  &fakeView{changed: make(chan struct{})},
		nets:  &netnstest.Fake{},
		fw:    &firewalltest.Fake{},
	}
	env, err := policy.NewEnv(&policy.Classifier{HardDeny: pfx("198.51.100.53/32")}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := New(w.store, w.view, w.nets, w.fw, Config{
		SandboxCIDR: sandboxRange,
		ProxyPort:   15001,
		DNSPort:     15353,
		Env:         env,
		Logger:      slog.New(slog.DiscardHandler),
		Resync:      resync,
	})
	if err != nil {
		t.Fatal(err)
	}
	gw.firstRetry = time.Millisecond
	w.gw = gw
	return w
}

func (w *world) run() {
	w.t.Helper()
	if err := w.gw.Run(w.t.Context()); err != nil {
		w.t.Fatalf("Run: %v", err)
	}
}

// attach is the API's first step of creating a netns VM.
func (w *world) attach(tenant, id string) store.Network {
	w.t.Helper()
	n, err := w.gw.Attach(context.Background(), tenant, id)
	if err != nil {
		w.t.Fatalf("Attach %s/%s: %v", tenant, id, err)
	}
	return n
}

// create attaches, stores and shows a VM with a policy allowing allowed, as creating it
// through the API does, and waits until the follower has applied what the view shows.
func (w *world) create(tenant, id string, allowed ...string) store.Network {
	w.t.Helper()
	n := w.attach(tenant, id)
	w.store.put(store.VM{Tenant: tenant, ID: id, Network: n})
	w.show(tenant, id, n, allowed...)
	return n
}

// show puts a VM in the view and waits until the follower has applied it.
func (w *world) show(tenant, id string, n store.Network, allowed ...string) {
	w.t.Helper()
	w.view.put(VM{Tenant: tenant, ID: id, Network: n, Allowed: pfx(allowed...)})
	w.view.settle(w.t)
}

// eventually waits, at most bound, for cond, re-checking after each apply of the firewall.
func (w *world) eventually(what string, cond func() bool) {
	w.t.Helper()
	deadline := time.After(bound)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-w.fw.Applied():
		case <-tick.C:
		case <-deadline:
			w.t.Fatalf("still not %s after %v", what, bound)
		}
	}
}

// golden compares the table in force with testdata/<name>.nft (-update rewrites it).
func (w *world) golden(name string) {
	w.t.Helper()
	golden(w.t, name+".nft", w.fw.Dump())
}

// golden compares got with testdata/<file> (-update rewrites it).
func golden(t *testing.T, file, got string) {
	t.Helper()
	path := filepath.Join("testdata", file)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update creates it)", err)
	}
	if got != string(want) {
		t.Errorf("the dump differs from %s (go test -update rewrites it):\n%s", path, got)
	}
}

func pfx(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}
