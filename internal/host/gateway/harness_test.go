package gateway

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/internal/host/firewall"
	"github.com/egressd/egressd/internal/host/firewall/firewalltest"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/host/netns/netnstest"
	"github.com/egressd/egressd/policy"
)

var update = flag.Bool("update", false, "rewrite the golden dumps of the fakes in testdata")

// bound is how long a test waits for a gateway working in the background at most: a bound
// on the wait, not a measure of speed.
const bound = 10 * time.Second

// The nodes of the tests, and their sandbox ranges (DESIGN §10: inside 100.96.0.0/16).
const (
	nodeA = "gw-a"
	nodeB = "gw-b"
)

var (
	sandboxRange = netip.MustParsePrefix("100.96.0.0/16") // node A's
	rangeB       = netip.MustParsePrefix("100.97.0.0/24")
)

// world is a store shared by the nodes of a test: the real SQLite store, whose every write
// (the test's, standing for the API's, and the gateways') kicks every node's view, as
// cmd/egressd wires a process's writes to its view.
type world struct {
	t   *testing.T
	raw *sqlite.Store
	st  store.Store
	env *policy.Env

	mu    sync.Mutex
	views []*view.View
}

func newWorld(t *testing.T) *world {
	t.Helper()
	raw, err := sqlite.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	env, err := policy.NewEnv(&policy.Classifier{HardDeny: pfx("198.51.100.53/32")}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, raw: raw, env: env}
	w.st = store.WithHook(raw, w.kick)
	return w
}

func (w *world) kick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, v := range w.views {
		v.Kick()
	}
}

// node is one gateway node: its view of the shared store, its host's namespaces and
// firewall (fakes), and its gateway, not started yet (run).
type node struct {
	w    *world
	id   string
	view *view.View
	nets *nets
	fw   *fw
	st   *gwStore
	gw   *Gateway
}

// node makes a gateway node with the sandbox range cidr, which re-applies its firewall and
// reconciles every resync (an hour: never, in a test, unless the test says otherwise). Its
// view loads what the store has now.
func (w *world) node(id string, cidr netip.Prefix, resync time.Duration) *node {
	w.t.Helper()
	v, err := view.New(w.raw, view.Config{Env: w.env, Poll: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		w.t.Fatal(err)
	}
	if err := v.Start(w.t.Context()); err != nil {
		w.t.Fatal(err)
	}
	w.mu.Lock()
	w.views = append(w.views, v)
	w.mu.Unlock()
	n := &node{w: w, id: id, view: v, nets: &nets{}, fw: &fw{}, st: &gwStore{Store: w.st}}
	n.gw, err = New(n.st, FromView(v), n.nets, n.fw, Config{
		NodeID:      id,
		SandboxCIDR: cidr,
		ProxyPort:   15001,
		DNSPort:     15353,
		Env:         w.env,
		Logger:      slog.New(slog.DiscardHandler),
		Resync:      resync,
	})
	if err != nil {
		w.t.Fatal(err)
	}
	n.gw.firstRetry = time.Millisecond
	return n
}

// nodeA is node A with its range and no resync.
func (w *world) nodeA() *node { return w.node(nodeA, sandboxRange, time.Hour) }

func (n *node) run() *node {
	n.w.t.Helper()
	if err := n.gw.Run(n.w.t.Context()); err != nil {
		n.w.t.Fatalf("Run: %v", err)
	}
	// The test's context ends before its cleanups run: wait for the gateway to stop
	// writing before the store is closed and its directory removed.
	n.w.t.Cleanup(n.gw.Wait)
	return n
}

// enforced waits until node's firewall reflects every store change so far: its view has
// them, and the table built from it is in force.
func (n *node) enforced() {
	n.w.t.Helper()
	rev, err := n.w.raw.Revision(context.Background())
	if err != nil {
		n.w.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if err := n.gw.WaitApplied(ctx, rev); err != nil {
		n.w.t.Fatalf("node %s does not enforce revision %d: %v", n.id, rev, err)
	}
}

// create stores a netns VM as the API does: creating on its node, its policy (allowing
// allowed, when any is given), then pending.
func (w *world) create(nodeID, tenant, id string, allowed ...string) {
	w.t.Helper()
	ctx := context.Background()
	if _, err := w.st.CreateVM(ctx, store.VM{Tenant: tenant, ID: id, Network: store.Network{Mode: "netns", Node: nodeID, State: store.NetworkCreating}}); err != nil {
		w.t.Fatal(err)
	}
	if allowed != nil {
		w.policy(tenant, id, allowed...)
	}
	w.setState(tenant, id, store.NetworkCreating, store.NetworkPending)
}

// setState moves a VM's network from state from to state to, as the API does.
func (w *world) setState(tenant, id, from, to string) {
	w.t.Helper()
	if _, err := w.st.UpdateVMNetwork(context.Background(), tenant, id, func(n store.Network) (store.Network, error) {
		if n.State != from {
			w.t.Errorf("%s/%s is %q, not %q", tenant, id, n.State, from)
		}
		n.State = to
		return n, nil
	}); err != nil {
		w.t.Fatal(err)
	}
}

// policy sets the VM policy of a VM: allowed_cidrs and nothing else.
func (w *world) policy(tenant, id string, allowed ...string) {
	w.t.Helper()
	p := policy.Policy{AllowedCIDRs: slices.Clone(allowed)}.WithDefaults()
	if _, err := w.st.PutPolicy(context.Background(), store.PolicyRecord{Tenant: tenant, Scope: store.ScopeVM, ID: id, Policy: p}); err != nil {
		w.t.Fatal(err)
	}
}

// put stores a VM as it is, as an earlier run (or an older egressd) left it.
func (w *world) put(tenant, id string, n store.Network) {
	w.t.Helper()
	if _, err := w.raw.CreateVM(context.Background(), store.VM{Tenant: tenant, ID: id, Network: n}); err != nil {
		w.t.Fatal(err)
	}
}

// retire deletes a VM as the API does: its node is to remove it.
func (w *world) retire(tenant, id string) {
	w.t.Helper()
	if _, err := w.st.RetireVM(context.Background(), tenant, id); err != nil {
		w.t.Fatal(err)
	}
}

// get reads a VM; ok is false when it is gone.
func (w *world) get(tenant, id string) (vm store.VM, ok bool) {
	w.t.Helper()
	vm, err := w.raw.GetVM(context.Background(), tenant, id)
	switch {
	case err == nil:
		return vm, true
	case errors.Is(err, store.ErrNotFound):
		return store.VM{}, false
	}
	w.t.Fatal(err)
	return store.VM{}, false
}

// await waits for a VM's network to reach state.
func (w *world) await(tenant, id, state string) store.Network {
	w.t.Helper()
	var vm store.VM
	eventually(w.t, tenant+"/"+id+" "+state, func() bool {
		var ok bool
		vm, ok = w.get(tenant, id)
		return ok && vm.Network.State == state
	})
	return vm.Network
}

// awaitGone waits for a VM's row to be deleted.
func (w *world) awaitGone(tenant, id string) {
	w.t.Helper()
	eventually(w.t, tenant+"/"+id+" deleted", func() bool { _, ok := w.get(tenant, id); return !ok })
}

// ready creates a VM on n, waits for it to be ready, and for n to enforce its policy.
func (n *node) ready(tenant, id string, allowed ...string) store.Network {
	n.w.t.Helper()
	n.w.create(n.id, tenant, id, allowed...)
	net := n.w.await(tenant, id, store.NetworkReady)
	n.enforced()
	return net
}

// remove retires a VM of n and waits for n to have deleted it, and to enforce that.
func (n *node) remove(tenant, id string) {
	n.w.t.Helper()
	n.w.retire(tenant, id)
	n.w.awaitGone(tenant, id)
	n.enforced()
}

// setPolicy changes a VM's policy and waits until n enforces it.
func (n *node) setPolicy(tenant, id string, allowed ...string) {
	n.w.t.Helper()
	n.w.policy(tenant, id, allowed...)
	n.enforced()
}

// eventually waits, at most bound, for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after %v", what, bound)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// nets is the fake namespaces, with a hook a test may set to act while a network is made.
type nets struct {
	netnstest.Fake
	mu       sync.Mutex
	onCreate func(a netns.Attachment)
}

func (n *nets) Create(a netns.Attachment) error {
	n.mu.Lock()
	hook := n.onCreate
	n.mu.Unlock()
	if hook != nil {
		hook(a)
	}
	return n.Fake.Create(a)
}

func (n *nets) setOnCreate(f func(a netns.Attachment)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.onCreate = f
}

// has reports whether this gateway has the network called name.
func (n *nets) has(name string) bool {
	names, _ := n.List()
	return slices.Contains(names, name)
}

// fw is the fake firewall, remembering every sandbox any table in force ever named.
type fw struct {
	firewalltest.Fake
	mu      sync.Mutex
	named   map[string]bool
	inForce map[string][]netip.Prefix // by sandbox name: what the table in force allows it
	kernel  kernelTCP                 // the tcp_<name> sets and the flows they admitted (tcp_harness_test.go)
	fast    kernelFast                // the fast_<name> sets and the verified flows (fast_test.go)
}

func (f *fw) Apply(d firewall.Desired) error {
	if err := f.Fake.Apply(d); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.named == nil {
		f.named = make(map[string]bool)
	}
	f.inForce = make(map[string][]netip.Prefix)
	for _, s := range d.Sandboxes {
		f.named[s.Name] = true
		f.inForce[s.Name] = slices.Clone(s.Allowed)
	}
	f.kernel.apply(d)
	f.fast.apply(d, f.kernel.now())
	return nil
}

// everNamed reports whether a table in force ever named the sandbox called name.
func (f *fw) everNamed(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.named[name]
}

// allowed is what the table in force allows the sandbox called name, and whether it names it.
func (f *fw) allowed(name string) ([]netip.Prefix, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	allowed, ok := f.inForce[name]
	return allowed, ok
}

// gwStore is the store as a gateway writes it, with hooks: before a VM is deleted, and the
// networks the gateway wrote.
type gwStore struct {
	store.Store
	mu           sync.Mutex
	beforeDelete func(tenant, id string)
	written      []store.Network
	// lost makes the gateway's writes fail, as while the database is unreachable.
	lost atomic.Bool
}

// errLost is a write of the gateway while gwStore.lost is set.
var errLost = errors.New("the database is unreachable")

func (s *gwStore) DeleteVM(ctx context.Context, tenant, id string) error {
	s.mu.Lock()
	hook := s.beforeDelete
	s.mu.Unlock()
	if hook != nil {
		hook(tenant, id)
	}
	if s.lost.Load() {
		return errLost
	}
	return s.Store.DeleteVM(ctx, tenant, id)
}

func (s *gwStore) UpdateVMNetwork(ctx context.Context, tenant, id string, update func(store.Network) (store.Network, error)) (store.VM, error) {
	if s.lost.Load() {
		return store.VM{}, errLost
	}
	vm, err := s.Store.UpdateVMNetwork(ctx, tenant, id, update)
	if err == nil {
		s.mu.Lock()
		s.written = append(s.written, vm.Network)
		s.mu.Unlock()
	}
	return vm, err
}

// states are the states the gateway wrote, in order.
func (s *gwStore) states() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, n := range s.written {
		out = append(out, n.State)
	}
	return out
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
