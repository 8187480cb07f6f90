package view_test

import (
	"context"
	"crypto/sha256"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/policy"
)

// racing is the store with a hook that runs once, just before the view reads the policy of
// one VM: another node's write that commits while the view reloads an object, between two of
// its reads.
type racing struct {
	*sqlite.Store
	mu     sync.Mutex
	before func()
	vmID   string
}

func (r *racing) arm(vmID string, f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.vmID, r.before = vmID, f
}

func (r *racing) GetPolicy(ctx context.Context, tenant string, scope store.Scope, id string) (store.PolicyRecord, error) {
	r.mu.Lock()
	hook := r.before
	if scope != store.ScopeVM || id != r.vmID {
		hook = nil
	}
	if hook != nil {
		r.before = nil
	}
	r.mu.Unlock()
	if hook != nil {
		hook()
	}
	return r.Store.GetPolicy(ctx, tenant, scope, id)
}

// retireRace is a ready netns VM at addr with a VM policy that allows HTTPS to
// other.example.com only, with session an open session on it whose own policy allows any
// HTTPS, and a view of the store in env, loaded.
func retireRace(t *testing.T, env *policy.Env, session bool) (*racing, *view.View, netip.Addr) {
	t.Helper()
	ctx := context.Background()
	raw, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	st := &racing{Store: raw}
	addr := netip.MustParseAddr("100.96.0.2")
	if _, err := st.CreateVM(ctx, store.VM{Tenant: "t", ID: "vm", Network: store.Network{Mode: "netns", Node: "gw-a", State: store.NetworkReady,
		Netns: "egressd-0123456789", Path: "/run/netns/egressd-0123456789", Address: addr.String(), Gateway: "100.96.0.1"}}); err != nil {
		t.Fatal(err)
	}
	put := func(scope store.Scope, id string, p policy.Policy) {
		if _, err := st.PutPolicy(ctx, store.PolicyRecord{Tenant: "t", Scope: scope, ID: id, Policy: p.WithDefaults()}); err != nil {
			t.Fatal(err)
		}
	}
	put(store.ScopeVM, "vm", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"other.example.com"}})
	if session {
		h := sha256.Sum256([]byte("token"))
		if _, err := st.CreateSession(ctx, store.Session{Tenant: "t", ID: "s", VMID: "vm", TokenHash: h[:]}); err != nil {
			t.Fatal(err)
		}
		put(store.ScopeSession, "s", policy.Policy{AllowHTTPS: true})
	}
	v, err := view.New(st, view.Config{Env: env, Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	vctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	if err := v.Start(vctx); err != nil {
		t.Fatal(err)
	}
	return st, v, addr
}

// applyRacing writes a policy of scope and id again (the one retireRace set), with the VM
// retired while the view reloads what that write touched, and waits for the view to apply
// the write (and nothing after it: nothing kicks the view again).
func applyRacing(t *testing.T, st *racing, v *view.View, scope store.Scope, id string, p policy.Policy) {
	t.Helper()
	ctx := context.Background()
	st.arm("vm", func() {
		if _, err := st.RetireVM(ctx, "t", "vm"); err != nil {
			t.Error(err)
		}
	})
	rec, err := st.PutPolicy(ctx, store.PolicyRecord{Tenant: "t", Scope: scope, ID: id, Policy: p.WithDefaults()})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := v.WaitRevision(wctx, rec.Revision); err != nil {
		t.Fatal(err)
	}
}

// TestARetireDuringAReloadLeavesNoSessionAlone: a VM retired (its sessions and policies
// deleted at once) while the view reloads a session of it must not leave the session open
// under its own policy alone, without its VM's.
func TestARetireDuringAReloadLeavesNoSessionAlone(t *testing.T) {
	st, v, _ := retireRace(t, nil, true)
	s, err := v.Authenticate("s", "token")
	if err != nil {
		t.Fatal(err)
	}
	if allows(s, https) {
		t.Fatal("the VM's policy does not bind the session")
	}
	applyRacing(t, st, v, store.ScopeSession, "s", policy.Policy{AllowHTTPS: true})
	if s, err := v.Authenticate("s", "token"); err == nil {
		t.Errorf("the session of a retired VM authenticates, and its policy allows api.example.com: %v", allows(s, https))
	}
	select {
	case <-s.Done():
	default:
		t.Error("the session of a retired VM is not ended")
	}
}

// TestARetireDuringAReloadLeavesNoVMOnTheDefault: the same race must not leave the VM
// found by its address under the operator's default policy, its own being gone.
func TestARetireDuringAReloadLeavesNoVMOnTheDefault(t *testing.T) {
	def := policy.Policy{AllowHTTPS: true}.WithDefaults()
	env, err := policy.NewEnv(nil, nil, &def)
	if err != nil {
		t.Fatal(err)
	}
	st, v, addr := retireRace(t, env, false)
	vm := v.VMByAddr(addr)
	if vm == nil || allows(vm, https) {
		t.Fatalf("the loaded VM: %v", vm)
	}
	applyRacing(t, st, v, store.ScopeVM, "vm", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"other.example.com"}})
	if got := v.VMByAddr(addr); got != nil {
		t.Errorf("a retired VM is found by its address (%s), and its policy allows api.example.com: %v", got.Network.State, allows(got, https))
	}
	select {
	case <-vm.Done():
	default:
		t.Error("the retired VM's connections are not ended")
	}
}

// TestRetireEndsTheVMAndItsSessions: retiring a VM ends, at the view's next sync, its
// sessions (their credentials stop working) and the connections of both its sessions (the
// explicit proxy's) and its sandbox (the transparent proxy's), which is no longer found by
// its address.
func TestRetireEndsTheVMAndItsSessions(t *testing.T) {
	st, v, addr := retireRace(t, nil, true)
	s, err := v.Authenticate("s", "token")
	if err != nil {
		t.Fatal(err)
	}
	vm := v.VMByAddr(addr)
	if vm == nil {
		t.Fatal("the ready VM is not found by its address")
	}
	other := policy.Conn{Host: "other.example.com", IP: netip.MustParseAddr("8.8.8.8"), Port: 443, Transport: policy.TCP}
	cut := make(chan string, 2)
	s.Track(other, func(reason string) { cut <- "session: " + reason })
	vm.Track(other, func(reason string) { cut <- "vm: " + reason })
	if _, err := st.RetireVM(context.Background(), "t", "vm"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rev, err := st.Revision(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WaitRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Authenticate("s", "token"); err == nil {
		t.Error("the session of a retired VM authenticates")
	}
	if got := v.VMByAddr(addr); got != nil {
		t.Errorf("the retired VM is found by its address: %+v", got.Network)
	}
	got := map[string]bool{}
	for range 2 {
		select {
		case r := <-cut:
			got[r] = true
		case <-ctx.Done():
			t.Fatalf("connections cut: %v; want the session's and the VM's", got)
		}
	}
	if !got["session: "+view.CancelSessionEnded] || !got["vm: "+view.CancelSessionEnded] {
		t.Errorf("connections cut: %v", got)
	}
}
