package store_test

import (
	"testing"

	"github.com/egressd/egressd/internal/controlplane/store"
)

// TestNetworkLive: only a netns network that its node made (or one stored before networks
// had states) is live; a node must not serve one it is still making, failed, or removing.
func TestNetworkLive(t *testing.T) {
	for _, tc := range []struct {
		mode, state string
		live        bool
	}{
		{"netns", store.NetworkReady, true},
		{"netns", "", true}, // stored before states
		{"netns", store.NetworkCreating, false},
		{"netns", store.NetworkPending, false},
		{"netns", store.NetworkFailed, false},
		{"netns", store.NetworkDeleting, false},
		{"none", "", false},
		{"none", store.NetworkReady, false},
		{"", "", false},
	} {
		if got := (store.Network{Mode: tc.mode, State: tc.state}).Live(); got != tc.live {
			t.Errorf("Network{Mode: %q, State: %q}.Live() = %v, want %v", tc.mode, tc.state, got, tc.live)
		}
	}
}
