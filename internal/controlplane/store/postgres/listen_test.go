package postgres

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
)

// patience bounds every wait for something that must happen (it normally takes milliseconds).
const patience = 15 * time.Second

// listening runs s.Listen until the test ends and returns the channel its kicks arrive on.
func listening(t *testing.T, s *Store) <-chan struct{} {
	t.Helper()
	kicks := make(chan struct{}, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		s.Listen(ctx, func() { kicks <- struct{}{} }, slog.New(slog.NewTextHandler(t.Output(), nil)))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-stopped:
		case <-time.After(patience):
			t.Error("Listen did not return after its context ended")
		}
	})
	return kicks
}

func waitKick(t *testing.T, kicks <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-kicks:
	case <-time.After(patience):
		t.Fatalf("no kick %s", what)
	}
}

// drain empties kicks, waiting a moment for stragglers.
func drain(kicks <-chan struct{}) int {
	n := 0
	for {
		select {
		case <-kicks:
			n++
		case <-time.After(200 * time.Millisecond):
			return n
		}
	}
}

// TestListen: a node hears of another node's committed writes, and not of failed ones.
func TestListen(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	node, other := openTest(t, url), openTest(t, url)
	kicks := listening(t, node)
	waitKick(t, kicks, "once listening (the catch-up kick)")
	drain(kicks)

	ctx := t.Context()
	if _, err := other.CreateVM(ctx, store.VM{Tenant: "t", ID: "vm"}); err != nil {
		t.Fatal(err)
	}
	waitKick(t, kicks, "after another node's CreateVM")
	drain(kicks)

	if _, err := other.CreateVM(ctx, store.VM{Tenant: "t", ID: "vm"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CreateVM twice: %v", err)
	}
	if err := other.DeleteSession(ctx, "t", "no-such-session"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteSession: %v", err)
	}
	// A write that fails commits nothing and so notifies nobody. (A stray kick would only
	// cost a sync; this checks that the notification is part of the transaction.)
	if n := drain(kicks); n != 0 {
		t.Errorf("%d kicks after failed writes, want none", n)
	}
}

// TestListenReconnects: when its connection is killed, Listen reconnects, kicks once so that
// the follower catches up on what it may have missed, and hears later writes again.
func TestListenReconnects(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	node := openTest(t, url)
	kicks := listening(t, node)
	waitKick(t, kicks, "once listening")
	drain(kicks)

	c := connect(t, url)
	var killed int
	err := c.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = 'egressd-listen'`).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminating the listener's connection: %d terminated, %v", killed, err)
	}
	// A write while the listener may be down: the reconnect kick covers it.
	if _, err := node.CreateVM(t.Context(), store.VM{Tenant: "t", ID: "during"}); err != nil {
		t.Fatal(err)
	}
	// The old connection is gone before the write, so this kick is the reconnection's,
	// sent once the new connection listens.
	waitKick(t, kicks, "after the connection was killed")
	drain(kicks)

	if _, err := node.CreateVM(t.Context(), store.VM{Tenant: "t", ID: "after"}); err != nil {
		t.Fatal(err)
	}
	waitKick(t, kicks, "for a write after the reconnection")
}
