package follow

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncedBuf is a log sink safe for the loop's goroutine and the test's reads.
type syncedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncedBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncedBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLoopLogsOnceAtEachTurn checks that failing syncs mark the loop not synced and warn once,
// not at every kick, and that the first sync that works again logs once that it is in sync.
func TestLoopLogsOnceAtEachTurn(t *testing.T) {
	var buf syncedBuf
	results := make(chan error)
	l := &Loop{
		Sync:     func(context.Context) error { return <-results },
		Revision: func() int64 { return 7 },
		Poll:     time.Hour, // only kicks sync here
		Timeout:  5 * time.Second,
		Log:      slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})),
		What:     "thing",
		Keeps:    "keeping the old one",
	}
	l.SetSynced()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kick := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx, kick) }()

	step := func(err error) {
		t.Helper()
		kick <- struct{}{}
		select {
		case results <- err:
		case <-ctx.Done():
			t.Fatal("the loop did not sync on a kick")
		}
	}
	step(errors.New("store down"))
	step(errors.New("store down"))
	step(errors.New("store down"))
	// A sync starts only after the one before it is recorded: the first failure is.
	if l.Synced() {
		t.Error("Synced after failed syncs")
	}
	step(nil)
	step(nil) // records the one before
	cancel()
	<-done

	out := buf.String()
	if n := strings.Count(out, "thing: sync failed; keeping the old one until the store answers"); n != 1 {
		t.Errorf("%d warnings for one outage, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "thing: in sync with the store again"); n != 1 || !strings.Contains(out, "revision=7") {
		t.Errorf("%d in-sync lines (want 1, with revision=7):\n%s", n, out)
	}
	if !l.Synced() {
		t.Error("not Synced after a sync that worked")
	}
}
