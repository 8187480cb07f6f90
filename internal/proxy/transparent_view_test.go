package proxy

import (
	"context"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/events"
	"github.com/egressd/egressd/internal/store"
	"github.com/egressd/egressd/internal/store/sqlite"
	"github.com/egressd/egressd/internal/view"
	"github.com/egressd/egressd/policy"
)

// TestTransparentWithView runs the transparent proxy against the real view over a real
// store: the VM found by its address, held to its policy AND its open session's, a policy
// change cutting a live tunnel, and the VM's deletion making its address unknown.
func TestTransparentWithView(t *testing.T) {
	te := newTransparentEnv(t, policy.Policy{}) // the fake internet; its fake VM is not used
	ctx := context.Background()
	st, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// The sandbox's address is the test client's, 127.0.0.1.
	if _, err := st.CreateVM(ctx, store.VM{Tenant: "t1", ID: "vmn", Network: store.Network{Mode: "netns", Address: "127.0.0.1", Gateway: "127.0.0.2"}}); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256([]byte("tok"))
	if _, err := st.CreateSession(ctx, store.Session{Tenant: "t1", ID: "ses_n", VMID: "vmn", TokenHash: h[:]}); err != nil {
		t.Fatal(err)
	}
	put := func(scope store.Scope, id string, p policy.Policy) {
		t.Helper()
		if _, err := st.PutPolicy(ctx, store.PolicyRecord{Tenant: "t1", Scope: scope, ID: id, Policy: p.WithDefaults()}); err != nil {
			t.Fatal(err)
		}
	}
	put(store.ScopeVM, "vmn", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"*.example.test"}})
	put(store.ScopeSession, "ses_n", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})

	v, err := view.New(st, view.Config{Classifier: classifier, Poll: 20 * time.Millisecond, Logger: te.tp.log})
	if err != nil {
		t.Fatal(err)
	}
	vctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	if err := v.Start(vctx); err != nil {
		t.Fatal(err)
	}
	cfg := te.tp.cfg
	cfg.Sandboxes = SandboxesFromView(v)
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	te.tp = p
	addr := te.listen(webIP + ":443")

	resp, err := te.tlsGet(addr, "api.example.test", "/slow?n=500")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	r := te.sink.wait(t, "allow", func(r events.Record) bool { return r.Kind == events.KindConnect && r.Decision == "allow" })
	if r.Tenant != "t1" || r.VMID != "vmn" || r.SessionID != "" || r.IP != webIP {
		t.Errorf("record %+v", r)
	}
	// The VM allows other.example.test, its open session does not: denied.
	if _, err := te.tlsGet(addr, "other.example.test", "/"); err == nil {
		t.Error("a host the session policy denies was reached")
	}
	r = te.sink.wait(t, "session-layer denial", func(r events.Record) bool { return r.Decision == "deny" && r.Host == "other.example.test" })
	if r.Layer != "session" || r.Reason != policy.ReasonHostNotListed || r.VMID != "vmn" {
		t.Errorf("record %+v", r)
	}

	// Tightening the session policy cuts the transfer in progress.
	put(store.ScopeSession, "ses_n", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"other.example.test"}})
	cut := time.Now()
	v.Kick()
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if d := time.Since(cut); d > 2*time.Second {
		t.Errorf("the tunnel was cut %v after the policy changed", d)
	}
	te.sink.wait(t, "close by policy", func(r events.Record) bool { return r.Kind == events.KindClose && r.CloseReason == "policy" })

	// Once the VM is deleted its address belongs to no sandbox.
	if err := st.DeleteVM(ctx, "t1", "vmn"); err != nil {
		t.Fatal(err)
	}
	v.Kick()
	for deadline := time.Now().Add(3 * time.Second); v.VMByAddr(mustAddr("127.0.0.1")) != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the deleted VM is still in the view")
		}
	}
	if _, err := te.tlsGet(addr, "other.example.test", "/"); err == nil {
		t.Error("a deleted VM's address was served")
	}
	te.sink.wait(t, "unknown source", func(r events.Record) bool { return r.Reason == ReasonUnknownSource })
}
