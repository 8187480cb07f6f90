package proxy

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// TestWithView runs the proxy against the real view over a real store: credentials,
// the effective policy of session and VM, a policy change cutting a live tunnel, and the
// end of a session revoking its credentials.
func TestWithView(t *testing.T) {
	e := newEnv(t, policy.Policy{}) // the fake internet; its fake sessions are not used
	ctx := context.Background()
	live := newLiveStore(t, e.p.log, store.VM{ID: "vm1", Network: store.Network{Mode: "none"}}, "ses_v", "tok_v",
		policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"*.example.test"}, DeniedDomains: []string{"other.example.test"}},
		policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test", "other.example.test"}})
	st, v, put := live.st, live.view, live.put

	// A second proxy on the same fake internet, over the view.
	cfg := e.p.cfg
	cfg.Sessions = FromView(v)
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	go p.Serve(ln)
	t.Cleanup(func() { p.Close() })
	e.addr, e.sess, e.token = ln.Addr().String(), &Source{ID: "ses_v"}, "tok_v"

	c := e.client()
	resp, err := c.Get("https://api.example.test/slow?n=500")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("allowed by both layers: %s", resp.Status)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	// The VM layer denies other.example.test although the session allows it.
	if _, err := c.Get("https://other.example.test/"); err == nil {
		t.Error("a host the VM policy denies was reached")
	}
	r := e.sink.wait(t, "VM-layer denial", func(r events.Record) bool { return r.Decision == "deny" && r.Host == "other.example.test" })
	if r.Layer != "vm" || r.Reason != policy.ReasonDeniedDomain || r.Tenant != "t1" || r.VMID != "vm1" || r.SessionID != "ses_v" {
		t.Errorf("record %+v", r)
	}

	// Tightening the session policy cuts the transfer in progress.
	put(store.ScopeSession, "ses_v", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"other.example.test"}})
	cut := time.Now()
	v.Kick()
	io.Copy(io.Discard, resp.Body)
	if d := time.Since(cut); d > 2*time.Second {
		t.Errorf("the tunnel was cut %v after the policy changed", d)
	}
	e.sink.wait(t, "close by policy", func(r events.Record) bool { return r.Kind == events.KindClose && r.CloseReason == "policy" })

	// Ending the session revokes its credentials.
	if err := st.DeleteSession(ctx, "t1", "ses_v"); err != nil {
		t.Fatal(err)
	}
	v.Kick()
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		cc, br := e.dial()
		resp, _ := e.roundTrip(cc, br, "GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\nProxy-Authorization: "+e.authHeader()+"\r\n\r\n")
		if resp.StatusCode == http.StatusProxyAuthRequired {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ended session: %s, want 407", resp.Status)
		}
	}
}
