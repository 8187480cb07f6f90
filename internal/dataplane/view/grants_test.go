package view_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/policy"
)

var ssh = policy.Conn{Host: "git.example.com", IP: netip.MustParseAddr("8.8.4.4"), Port: 22, Transport: policy.TCP}

func (f *fixture) grant(scope store.Scope, id, gid string, ttl time.Duration, tcp ...string) store.Grant {
	f.t.Helper()
	g, err := f.st.CreateGrant(context.Background(), store.Grant{Tenant: "t", ID: gid, Scope: scope, ObjectID: id, TCP: tcp}, ttl)
	if err != nil {
		f.t.Fatal(err)
	}
	return g
}

// waitCut waits (bounded) for a tracked connection's cancellation and returns its reason.
func waitCut(t *testing.T, cut <-chan string, what string) string {
	t.Helper()
	select {
	case r := <-cut:
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the connection was not cut", what)
		return ""
	}
}

// TestGrantExpiryCutsConnections: a grant opens what its layer did not allow, with a rule
// that names it, and at its expiry the connections it alone allowed are cut, on the
// session and on the VM, with no store write and no poll (the view polls hourly here).
func TestGrantExpiryCutsConnections(t *testing.T) {
	f := newFixture(t, view.Config{Poll: time.Hour})
	f.put(store.ScopeVM, "vm1", policy.Policy{AllowHTTPS: true, AllowedTCP: []string{"git.example.com:22", "db.example.com:5432"}})
	f.put(store.ScopeSession, "early", policy.Policy{AllowHTTPS: true})
	s, _ := f.v.Authenticate("early", "early-token")
	f.eventually("the policies", func() bool { return allows(s, https) })
	if allows(s, ssh) {
		t.Fatal("the session policy allows ssh without a grant")
	}
	g := f.grant(store.ScopeSession, "early", "gr_short", 2*time.Second, "git.example.com:22")
	f.grant(store.ScopeSession, "early", "gr_long", time.Hour, "db.example.com:5432")
	f.eventually("the grant", func() bool { return allows(s, ssh) })
	if d := s.Effective().Decide(ssh); d.Rule != "grant gr_short: allowed_tcp git.example.com:22" {
		t.Errorf("decision by the grant: %+v", d)
	}
	vm := f.v.VM("t", "vm1")
	if d := vm.Effective().Decide(ssh); !d.Allow || !strings.HasPrefix(d.Rule, "grant gr_short: ") {
		t.Errorf("the VM's effective policy (its own AND the session's): %+v", d)
	}
	db := policy.Conn{Host: "db.example.com", IP: netip.MustParseAddr("8.8.4.4"), Port: 5432, Transport: policy.TCP}
	sCut, vmCut, dbCut := make(chan string, 1), make(chan string, 1), make(chan string, 1)
	defer s.Track(ssh, func(r string) { sCut <- r })()
	defer vm.Track(ssh, func(r string) { vmCut <- r })()
	defer s.Track(db, func(r string) { dbCut <- r })()
	if time.Now().After(g.ExpiresAt) {
		t.Skip("the machine is too slow for a 2 s grant to outlive the setup") // never in practice
	}
	if r := waitCut(t, sCut, "session"); r != view.CancelPolicy {
		t.Errorf("session connection cut for %q", r)
	}
	if r := waitCut(t, vmCut, "vm"); r != view.CancelPolicy {
		t.Errorf("vm connection cut for %q", r)
	}
	if allows(s, ssh) || allows(vm, ssh) {
		t.Error("ssh still allowed after the grant expired")
	}
	if !allows(s, db) {
		t.Error("the expiry of one grant took another one's allowance")
	}
	select {
	case r := <-dbCut:
		t.Errorf("the connection of the unexpired grant was cut: %s", r)
	default:
	}
}

// TestGrantRevokeCuts: revoking a grant is a tightening like a policy change.
func TestGrantRevokeCuts(t *testing.T) {
	f := newFixture(t, view.Config{})
	f.put(store.ScopeVM, "vm1", policy.Policy{})
	s, _ := f.v.Authenticate("early", "early-token")
	f.grant(store.ScopeVM, "vm1", "gr_v", time.Hour, "git.example.com:22")
	f.eventually("the vm grant", func() bool { return allows(s, ssh) })
	cut := make(chan string, 1)
	defer s.Track(ssh, func(r string) { cut <- r })()
	if err := f.st.DeleteGrant(context.Background(), "t", store.ScopeVM, "vm1", "gr_v"); err != nil {
		t.Fatal(err)
	}
	f.v.Kick()
	if r := waitCut(t, cut, "revoke"); r != view.CancelPolicy {
		t.Errorf("cut for %q", r)
	}
}

// TestGrantCannotLoosenAnotherLayer: a session grant does not let through what the VM
// policy denies, and a grant on a session without a policy adds nothing beside the VM's.
func TestGrantCannotLoosenAnotherLayer(t *testing.T) {
	f := newFixture(t, view.Config{})
	f.put(store.ScopeVM, "vm1", policy.Policy{AllowHTTPS: true})
	s, _ := f.v.Authenticate("early", "early-token")
	f.grant(store.ScopeSession, "early", "gr_s", time.Hour, "git.example.com:22")
	f.eventually("the grant", f.caughtUp)
	if d := s.Effective().Decide(ssh); d.Allow || d.Layer != policy.LayerVM {
		t.Errorf("session grant beside a VM policy that denies: %+v", d)
	}
	f.put(store.ScopeSession, "early", policy.Policy{AllowHTTPS: true})
	f.eventually("the session policy", f.caughtUp)
	if d := s.Effective().Decide(ssh); d.Allow || d.Layer != policy.LayerVM {
		t.Errorf("session policy and grant, VM denies: %+v", d)
	}
	if !allows(s, https) {
		t.Error("a grant took away what both layers allow")
	}
}

// TestGrantsAcrossRestart: a view started on a store keeps the unexpired grants and drops
// the expired ones.
func TestGrantsAcrossRestart(t *testing.T) {
	f := newFixture(t, view.Config{})
	f.put(store.ScopeSession, "early", policy.Policy{})
	db := policy.Conn{Host: "db.example.com", IP: netip.MustParseAddr("8.8.4.4"), Port: 5432, Transport: policy.TCP}
	short := f.grant(store.ScopeSession, "early", "gr_short", time.Second, "git.example.com:22")
	f.grant(store.ScopeSession, "early", "gr_long", time.Hour, "db.example.com:5432")
	for time.Now().Before(short.ExpiresAt.Add(10 * time.Millisecond)) {
		time.Sleep(10 * time.Millisecond) // bounded: the grant lives 1 s
	}
	v2, err := view.New(f.st, view.Config{Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := v2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := v2.Authenticate("early", "early-token")
	if err != nil {
		t.Fatal(err)
	}
	if allows(s, ssh) {
		t.Error("an expired grant came back after a restart")
	}
	if d := s.Effective().Decide(db); !d.Allow || d.Rule != "grant gr_long: allowed_tcp db.example.com:5432" {
		t.Errorf("the unexpired grant after a restart: %+v", d)
	}
}

// downStore fails every read while down is set, as a database that went away would.
type downStore struct {
	*sqlite.Store
	down atomic.Bool
}

var errDown = errors.New("the store is down")

func (d *downStore) ChangesSince(ctx context.Context, rev int64, limit int) ([]store.Change, error) {
	if d.down.Load() {
		return nil, errDown
	}
	return d.Store.ChangesSince(ctx, rev, limit)
}

func (d *downStore) GetPolicy(ctx context.Context, tenant string, scope store.Scope, id string) (store.PolicyRecord, error) {
	if d.down.Load() {
		return store.PolicyRecord{}, errDown
	}
	return d.Store.GetPolicy(ctx, tenant, scope, id)
}

func (d *downStore) ListGrants(ctx context.Context, tenant string, scope store.Scope, id string, now time.Time) ([]store.Grant, error) {
	if d.down.Load() {
		return nil, errDown
	}
	return d.Store.ListGrants(ctx, tenant, scope, id, now)
}

// TestGrantExpiresWhileTheStoreIsDown: a store that does not answer keeps no grant alive:
// the view compiles the policy again from the layers it holds, and cuts.
func TestGrantExpiresWhileTheStoreIsDown(t *testing.T) {
	f := newFixture(t, view.Config{Poll: time.Hour})
	d := &downStore{Store: f.st}
	f.put(store.ScopeVM, "vm1", policy.Policy{AllowHTTPS: true})
	g := f.grant(store.ScopeVM, "vm1", "gr_d", 2*time.Second, "git.example.com:22")
	v, err := view.New(d, view.Config{Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s, _ := v.Authenticate("early", "early-token")
	vm := v.VM("t", "vm1")
	if !allows(s, ssh) || !allows(vm, ssh) {
		t.Fatal("the grant does not allow before its expiry")
	}
	cut := make(chan string, 2)
	defer s.Track(ssh, func(r string) { cut <- r })()
	defer vm.Track(ssh, func(r string) { cut <- r })()
	d.down.Store(true)
	if time.Now().After(g.ExpiresAt) {
		t.Skip("the machine is too slow for a 2 s grant to outlive the setup")
	}
	for range 2 {
		if r := waitCut(t, cut, "store down"); r != view.CancelPolicy {
			t.Errorf("cut for %q", r)
		}
	}
	if allows(s, ssh) || allows(vm, ssh) {
		t.Error("the expired grant still allows while the store is down")
	}
	if !allows(s, https) {
		t.Error("the policy itself was dropped with the grant")
	}
}
