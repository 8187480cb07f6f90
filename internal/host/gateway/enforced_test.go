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
	w := newWorld(t, time.Hour)
	w.run()
	a := w.create("t", "a", "203.0.113.0/24")
	w.show("t", "a", a, "203.0.113.0/25") // a tightening, at the view's newest revision
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.gw.WaitApplied(ctx, w.view.Revision()); err != nil {
		t.Fatalf("WaitApplied after an applied change: %v", err)
	}

	w.fw.Fail(errors.New("netlink: operation not permitted"))
	w.show("t", "a", a, "203.0.113.0/26")
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	if err := w.gw.WaitApplied(short, w.view.Revision()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitApplied while the firewall fails = %v, want the deadline", err)
	}
	// What the node reports to the fleet is the rules' revision, not the view's: another
	// node's wait=fleet must not count this one while its kernel enforces an older policy.
	if got, view := w.gw.Revision(), w.view.Revision(); got >= view {
		t.Errorf("Revision while the firewall fails = %d, want less than the view's %d", got, view)
	}
	w.fw.Fail(nil)
	if err := w.gw.WaitApplied(ctx, w.view.Revision()); err != nil {
		t.Fatalf("WaitApplied after the retry: %v", err)
	}
	if got, view := w.gw.Revision(), w.view.Revision(); got != view {
		t.Errorf("Revision after the retry = %d, want the view's %d", got, view)
	}
}

func TestRevisionWaiter(t *testing.T) {
	var rw revisionWaiter
	done := make(chan error, 1)
	go func() { done <- rw.wait(context.Background(), 3) }()
	rw.advance(2)
	select {
	case err := <-done:
		t.Fatalf("returned at revision 2: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	rw.advance(1) // never goes back
	rw.advance(5)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := rw.wait(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
}
