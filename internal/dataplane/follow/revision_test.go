package follow_test

import (
	"context"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/follow"
)

// TestRevision: a waiter returns only once the revision reaches its own; the revision never
// goes back.
func TestRevision(t *testing.T) {
	var rw follow.Revision
	done := make(chan error, 1)
	go func() { _, err := rw.Wait(context.Background(), 3); done <- err }()
	rw.Advance(2)
	select {
	case err := <-done:
		t.Fatalf("returned at revision 2: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	rw.Advance(1) // never goes back
	rw.Advance(5)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := rw.Wait(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
}
