package gateway

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWaitApplied: a write waits for the kernel rules built from its revision; while the
// firewall cannot be applied, it waits in vain (the API then answers 503), and once a retry
// applies the table it returns.
func TestWaitApplied(t *testing.T) {
	w := newWorld(t)
	a := w.nodeA().run()
	a.ready("t", "a", "203.0.113.0/24")
	a.setPolicy("t", "a", "203.0.113.0/25") // a tightening, waited for by WaitApplied

	a.fw.Fail(errors.New("netlink: operation not permitted"))
	w.policy("t", "a", "203.0.113.0/26")
	rev, err := w.raw.Revision(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	if err := a.gw.WaitApplied(short, rev); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitApplied while the firewall fails = %v, want the deadline", err)
	}
	// What the node reports to the fleet is the rules' revision, not the view's: another
	// node's wait=fleet must not count this one while its kernel enforces an older policy.
	if got, view := a.gw.Revision(), a.view.Revision(); got >= view || view != rev {
		t.Errorf("Revision while the firewall fails = %d, want less than the view's %d (the store's %d)", got, view, rev)
	}
	a.fw.Fail(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.gw.WaitApplied(ctx, rev); err != nil {
		t.Fatalf("WaitApplied after the retry: %v", err)
	}
	if got := a.gw.Revision(); got < rev {
		t.Errorf("Revision after the retry = %d, want at least %d", got, rev)
	}
}
