package proxy

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// TestTransparentWithView runs the transparent proxy against the real view over a real
// store: the VM found by its address, held to its policy AND its open session's, a policy
// change cutting a live tunnel, and the VM's deletion making its address unknown.
func TestTransparentWithView(t *testing.T) {
	te := newTransparentEnv(t, policy.Policy{}) // the fake internet; its fake VM is not used
	ctx := context.Background()
	// The sandbox's address is the test client's, 127.0.0.1.
	live := newLiveStore(t, te.tp.log, store.VM{ID: "vmn", Network: store.Network{Mode: "netns", Address: "127.0.0.1", Gateway: "127.0.0.2"}}, "ses_n", "tok",
		policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"*.example.test"}},
		policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})
	st, v, put := live.st, live.view, live.put

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
	te.sink.wait(t, "unknown source", func(r events.Record) bool { return r.Reason == policy.ReasonUnknownSandbox })
}
