package store_test

import (
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
)

func TestNodeUp(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name      string
		heartbeat time.Time
		up        bool
	}{
		{"just now", now, true},
		{"9.999 s ago", now.Add(-store.DownAfter + time.Millisecond), true},
		{"10 s ago", now.Add(-store.DownAfter), false},
		{"a minute ago", now.Add(-time.Minute), false},
		{"never", time.Time{}, false},
		// Now was read before the heartbeat was written.
		{"after now", now.Add(time.Second), true},
	} {
		if got := (store.Node{Heartbeat: tc.heartbeat}).Up(now); got != tc.up {
			t.Errorf("%s: Up = %v, want %v", tc.name, got, tc.up)
		}
	}
}
