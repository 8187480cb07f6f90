package postgres

import (
	"context"
	"errors"
	"fmt"
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
		s.Listen(ctx, Handlers{Changed: func() { kicks <- struct{}{} }}, slog.New(slog.NewTextHandler(t.Output(), nil)))
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

// TestWanted: a wait announced through one store reaches a listener of another, with its
// revision and node; a listener without a Wanted handler is not told, and nothing wakes the
// change handler for it.
func TestWanted(t *testing.T) {
	url := pgtest.NewDatabase(t)
	api, node := openTest(t, url), openTest(t, url)
	type want struct {
		rev  int64
		node string
	}
	wants := make(chan want, 10)
	changed := make(chan struct{}, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go node.Listen(ctx, Handlers{
		Changed: func() { changed <- struct{}{} },
		Wanted:  func(rev int64, node string) { wants <- want{rev, node} },
	}, slog.New(slog.NewTextHandler(t.Output(), nil)))
	waitKick(t, changed, "the first kick after connecting")

	// The listener may not be listening yet when the first announcement goes: repeat it.
	deadline := time.Now().Add(patience)
	var got want
	for got.rev == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no announced wait arrived")
		}
		if err := api.Wanted(ctx, 42, "gw-b"); err != nil {
			t.Fatal(err)
		}
		select {
		case got = <-wants:
		case <-time.After(100 * time.Millisecond):
		}
	}
	if got != (want{42, "gw-b"}) {
		t.Fatalf("got %+v, want revision 42 for gw-b", got)
	}
	if err := api.Wanted(ctx, 43, ""); err != nil {
		t.Fatal(err)
	}
	for got.rev != 43 {
		select {
		case got = <-wants:
		case <-time.After(patience):
			t.Fatal("the wait for every node did not arrive")
		}
	}
	if got.node != "" {
		t.Fatalf("a wait for every node arrived for %q", got.node)
	}
	select {
	case <-changed:
		t.Fatal("an announced wait kicked the change handler")
	default:
	}
}

func TestParseWanted(t *testing.T) {
	for payload, want := range map[string]string{
		"7":        "7 ",
		"7 gw-a":   "7 gw-a",
		"0":        "bad",
		"-3":       "bad",
		"x gw-a":   "bad",
		"":         "bad",
		"9 a b":    "9 a b",
		" 9":       "bad",
		"12345678": "12345678 ",
	} {
		rev, node, ok := parseWanted(payload)
		got := "bad"
		if ok {
			got = fmt.Sprintf("%d %s", rev, node)
		}
		if got != want {
			t.Errorf("parseWanted(%q) = %q, want %q", payload, got, want)
		}
	}
}
