package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
)

// TestFastPathVerifiedFlowsOutliveEgressd: DESIGN §4 — if egressd dies, the flows it
// verified go on (the kernel forwards them by their mark), and nothing new is verified:
// a new connection to the same answered address fails, whether it would be allowed or not.
func TestFastPathVerifiedFlowsOutliveEgressd(t *testing.T) {
	requireFastPath(t)
	l := newGWLab(t, "--fast-path")
	vm := l.vm("survive", &policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})
	l.lookup(vm, "api.example.test")
	before := l.fastFlows("verified")

	// A download of 300 KiB at 1 KiB per 20 ms: about 6 s, most of it after the kill.
	type result struct {
		out  string
		code int
	}
	done := make(chan result, 1)
	go func() {
		out, code := l.run(vm, 40*time.Second, "curl", "-sS", "--max-time", "30", "--resolve", "api.example.test:443:"+webAddr,
			"-o", "/dev/null", "-w", "%{size_download}", "https://api.example.test/slow?n=300")
		done <- result{out, code}
	}()
	// Wait until the flow is verified, then kill egressd.
	for deadline := time.Now().Add(10 * time.Second); l.fastFlows("verified") == before; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the download was never verified by the fast path")
		}
	}
	time.Sleep(300 * time.Millisecond)
	l.in.Kill()

	// A new connection to the same answered address: its ClientHello is held for a reader
	// that is gone, and the kernel drops it.
	if out, code := l.curl(vm, "--resolve", "api.example.test:443:"+webAddr, "https://api.example.test/"); code == 0 {
		t.Errorf("with egressd killed, a new connection was verified: %q", out)
	}
	select {
	case r := <-done:
		if r.code != 0 || strings.TrimSpace(r.out) != "307200" {
			t.Errorf("the verified download, egressd killed during it: exit %d, %q bytes; want all 307200", r.code, r.out)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("the verified download did not finish")
	}
}
