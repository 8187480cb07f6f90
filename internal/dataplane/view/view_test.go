package view_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/policy"
)

type fixture struct {
	t  testing.TB
	st *sqlite.Store
	v  *view.View
}

func newFixture(t testing.TB, cfg view.Config) *fixture {
	t.Helper()
	st, err := sqlite.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{t: t, st: st}
	// A session that exists before the view starts must be loaded by Start.
	f.vm("vm1")
	f.session("early", "vm1", "early-token")
	if cfg.Poll == 0 {
		cfg.Poll = time.Hour // tests kick explicitly, unless they test polling
	}
	f.v, err = view.New(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := f.v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) vm(id string) {
	if _, err := f.st.CreateVM(context.Background(), store.VM{Tenant: "t", ID: id, Network: store.Network{Mode: "none"}}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) session(id, vm, token string) {
	h := sha256.Sum256([]byte(token))
	if _, err := f.st.CreateSession(context.Background(), store.Session{Tenant: "t", ID: id, VMID: vm, TokenHash: h[:]}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) put(scope store.Scope, id string, p policy.Policy) {
	if _, err := f.st.PutPolicy(context.Background(), store.PolicyRecord{Tenant: "t", Scope: scope, ID: id, Policy: p.WithDefaults()}); err != nil {
		f.t.Fatal(err)
	}
}

// eventually waits (bounded) for cond after kicking the view.
func (f *fixture) eventually(what string, cond func() bool) {
	f.t.Helper()
	f.v.Kick()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	f.t.Fatalf("timed out waiting for %s", what)
}

// caughtUp reports whether the view has applied every change in the store.
func (f *fixture) caughtUp() bool {
	rev, err := f.st.Revision(context.Background())
	return err == nil && f.v.Revision() == rev
}

var https = policy.Conn{Host: "api.example.com", IP: netip.MustParseAddr("8.8.8.8"), Port: 443, Transport: policy.TCP}

func allows(s interface{ Effective() *policy.Effective }, c policy.Conn) bool {
	return s.Effective().Decide(c).Allow
}

func TestAuthenticate(t *testing.T) {
	f := newFixture(t, view.Config{})
	if s, err := f.v.Authenticate("early", "early-token"); err != nil || s.ID != "early" || s.VMID != "vm1" || s.Tenant != "t" {
		t.Fatalf("loaded session: %v, %v", s, err)
	}
	for _, c := range []struct{ id, token string }{{"early", "wrong"}, {"early", ""}, {"nope", "early-token"}, {"", ""}} {
		if _, err := f.v.Authenticate(c.id, c.token); !errors.Is(err, view.ErrUnauthorized) {
			t.Errorf("Authenticate(%q, %q) = %v, want ErrUnauthorized", c.id, c.token, err)
		}
	}
	f.session("late", "vm1", "late-token")
	f.eventually("a new session", func() bool { _, err := f.v.Authenticate("late", "late-token"); return err == nil })
}

func TestPolicyChangesApplyAtOnce(t *testing.T) {
	f := newFixture(t, view.Config{})
	s, _ := f.v.Authenticate("early", "early-token")
	if allows(s, https) || s.Effective().Decide(https).Layer != policy.LayerDefault {
		t.Fatalf("no policy set: %+v, want the default's denial", s.Effective().Decide(https))
	}
	f.put(store.ScopeVM, "vm1", policy.Policy{AllowHTTPS: true})
	f.eventually("the VM policy", func() bool { return allows(s, https) })
	f.put(store.ScopeSession, "early", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"other.example.com"}})
	f.eventually("the session policy", func() bool { return !allows(s, https) })
	if d := s.Effective().Decide(https); d.Layer != policy.LayerSession {
		t.Errorf("denied by %s, want session", d.Layer)
	}
	if err := f.st.DeletePolicy(context.Background(), "t", store.ScopeSession, "early"); err != nil {
		t.Fatal(err)
	}
	f.eventually("the session policy cleared", func() bool { return allows(s, https) })
}

func TestDefaultPolicy(t *testing.T) {
	def := policy.Policy{AllowHTTPS: true}.WithDefaults()
	env, err := policy.NewEnv(nil, nil, &def)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, view.Config{Env: env})
	s, _ := f.v.Authenticate("early", "early-token")
	if d := s.Effective().Decide(https); !d.Allow || d.Layer != policy.LayerDefault {
		t.Fatalf("default policy: %+v", d)
	}
}

func TestTrackedConnectionsAreCancelled(t *testing.T) {
	f := newFixture(t, view.Config{})
	f.put(store.ScopeVM, "vm1", policy.Policy{AllowHTTPS: true})
	f.session("s2", "vm1", "tok")
	var s *view.Session
	f.eventually("s2", func() bool { s = f.v.Session("s2"); return s != nil && allows(s, https) })

	cancelled := make(chan string, 4)
	untrack := s.Track(https, func(reason string) { cancelled <- reason })
	defer untrack()
	other := https
	other.Host = "keep.example.com"
	keep := make(chan string, 1)
	defer s.Track(other, func(reason string) { keep <- reason })()

	// Loosening or an unrelated change cancels nothing.
	f.put(store.ScopeSession, "s2", policy.Policy{AllowHTTPS: true, AllowHTTP: true})
	f.eventually("the loosened policy", f.caughtUp)
	select {
	case r := <-cancelled:
		t.Fatalf("cancelled (%s) by a policy that still allows it", r)
	case <-time.After(100 * time.Millisecond):
	}

	// Tightening the VM policy cancels the connection it no longer allows, and only that one.
	f.put(store.ScopeVM, "vm1", policy.Policy{AllowHTTPS: true, DeniedDomains: []string{"api.example.com"}})
	f.v.Kick()
	select {
	case r := <-cancelled:
		if r != view.CancelPolicy {
			t.Errorf("reason %q, want %q", r, view.CancelPolicy)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a connection the new policy denies was not cancelled within 2s")
	}
	select {
	case r := <-keep:
		t.Fatalf("an allowed connection was cancelled: %s", r)
	default:
	}

	// Ending the session cancels the rest, and a new Track on it is cancelled at once.
	if err := f.st.DeleteSession(context.Background(), "t", "s2"); err != nil {
		t.Fatal(err)
	}
	f.v.Kick()
	select {
	case r := <-keep:
		if r != view.CancelSessionEnded {
			t.Errorf("reason %q, want %q", r, view.CancelSessionEnded)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("ending the session did not cancel its connection")
	}
	select {
	case <-s.Done():
	case <-time.After(time.Second):
		t.Fatal("Done not closed")
	}
	if _, err := f.v.Authenticate("s2", "tok"); !errors.Is(err, view.ErrUnauthorized) {
		t.Errorf("ended session still authenticates: %v", err)
	}
	late := make(chan string, 1)
	s.Track(other, func(reason string) { late <- reason })()
	select {
	case <-late:
	case <-time.After(time.Second):
		t.Fatal("Track on an ended session was not cancelled")
	}
}

func TestDeletingTheVMEndsItsSessions(t *testing.T) {
	f := newFixture(t, view.Config{})
	s, _ := f.v.Authenticate("early", "early-token")
	if err := f.st.DeleteVM(context.Background(), "t", "vm1"); err != nil {
		t.Fatal(err)
	}
	f.eventually("the session to end", func() bool {
		select {
		case <-s.Done():
			return true
		default:
			return false
		}
	})
}

func TestPollingWithoutKick(t *testing.T) {
	f := newFixture(t, view.Config{Poll: 20 * time.Millisecond})
	s, _ := f.v.Authenticate("early", "early-token")
	f.put(store.ScopeVM, "vm1", policy.Policy{AllowHTTPS: true})
	for deadline := time.Now().Add(3 * time.Second); !allows(s, https); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a change was not picked up by polling")
		}
	}
	if f.v.Revision() == 0 {
		t.Error("revision not advanced")
	}
}

func TestStoreOutageKeepsLastPolicy(t *testing.T) {
	f := newFixture(t, view.Config{Poll: 20 * time.Millisecond})
	f.put(store.ScopeVM, "vm1", policy.Policy{AllowHTTPS: true})
	s, _ := f.v.Authenticate("early", "early-token")
	f.eventually("the policy", func() bool { return allows(s, https) })
	if !f.v.Ready() {
		t.Fatal("not ready while the store answers")
	}
	f.st.Close()
	f.eventually("not ready", func() bool { return !f.v.Ready() })
	if !allows(s, https) {
		t.Error("the last known policy was dropped during a store outage")
	}
	if _, err := f.v.Authenticate("early", "early-token"); err != nil {
		t.Errorf("credentials refused during a store outage: %v", err)
	}
}
