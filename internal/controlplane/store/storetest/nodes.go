package storetest

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
)

func mustNow(t *testing.T, s store.Store) time.Time {
	t.Helper()
	now, err := s.Now(t.Context())
	if err != nil {
		t.Fatalf("Now: %v", err)
	}
	return now
}

func mustNodes(t *testing.T, s store.Store) []store.Node {
	t.Helper()
	nodes, err := s.ListNodes(t.Context())
	if err != nil {
		t.Fatalf("ListNodes: %v", err)
	}
	return nodes
}

// testNodes: a node's registration reads back as it was put, with the store's time as its
// heartbeat whatever the node said; the list is by ID in byte order.
func testNodes(t *testing.T, s store.Store) {
	ctx := t.Context()
	if nodes := mustNodes(t, s); nodes == nil || len(nodes) != 0 {
		t.Fatalf("ListNodes on an empty store = %#v, want an empty list", nodes)
	}
	put := []store.Node{
		{ID: "gw-a", Roles: []string{"gateway", "transparent"}, Address: "198.51.100.7:8470",
			Labels: map[string]string{"zone": "a", "rack": "7"}, SandboxCIDR: "100.96.0.0/20", Instance: "3f9c2a", Revision: 41, VMs: 3},
		{ID: "GW-b", Roles: []string{"api"}, Address: "198.51.100.8:8470", Labels: map[string]string{}, Revision: 40},
		{ID: "api-1"}, // nothing but its ID: nil roles and labels
	}
	before := mustNow(t, s)
	for _, n := range put {
		n.Heartbeat = time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC) // the store's clock wins
		if err := s.PutNode(ctx, n); err != nil {
			t.Fatalf("PutNode(%s): %v", n.ID, err)
		}
	}
	after := mustNow(t, s)

	got := mustNodes(t, s)
	// Byte order; a linguistic collation would put gw-a before GW-b.
	want := []store.Node{
		{ID: "GW-b", Roles: []string{"api"}, Address: "198.51.100.8:8470", Labels: map[string]string{}, Revision: 40},
		{ID: "api-1", Roles: []string{}, Labels: map[string]string{}},
		put[0],
	}
	if len(got) != len(want) {
		t.Fatalf("ListNodes = %+v, want %d nodes", got, len(want))
	}
	for i := range got {
		checkTime(t, got[i].ID+" Heartbeat", got[i].Heartbeat, before, after)
		got[i].Heartbeat = time.Time{}
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("ListNodes[%d] = %#v, want %#v", i, got[i], want[i])
		}
	}

	if err := s.PutNode(ctx, store.Node{Roles: []string{"api"}}); err == nil {
		t.Error("PutNode without an ID succeeded")
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.PutNode(canceled, store.Node{ID: "late"}); err == nil {
		t.Error("PutNode with a canceled context succeeded")
	}
	if n := len(mustNodes(t, s)); n != len(want) {
		t.Errorf("failed PutNode calls left %d nodes, want %d", n, len(want))
	}
}

// testNodeUpdates: putting a node again replaces its registration and moves its heartbeat on.
func testNodeUpdates(t *testing.T, s store.Store) {
	ctx := t.Context()
	first := store.Node{ID: "gw", Roles: []string{"gateway"}, Address: "a:1", Labels: map[string]string{"old": "1"},
		SandboxCIDR: "100.96.0.0/20", Revision: 5, VMs: 1}
	if err := s.PutNode(ctx, first); err != nil {
		t.Fatalf("PutNode: %v", err)
	}
	was := mustNodes(t, s)[0].Heartbeat
	next := store.Node{ID: "gw", Roles: []string{"gateway", "api"}, Address: "b:2", Labels: map[string]string{"new": "2"},
		SandboxCIDR: "100.96.16.0/20", Revision: 9, VMs: 0}
	if err := s.PutNode(ctx, next); err != nil {
		t.Fatalf("PutNode again: %v", err)
	}
	got := mustNodes(t, s)
	if len(got) != 1 {
		t.Fatalf("ListNodes = %+v, want the one node", got)
	}
	if got[0].Heartbeat.Before(was) {
		t.Errorf("Heartbeat went back from %v to %v", was, got[0].Heartbeat)
	}
	got[0].Heartbeat = time.Time{}
	if !reflect.DeepEqual(got[0], next) {
		t.Errorf("after a second PutNode: %#v, want %#v", got[0], next)
	}

	// A node that restarts without a range (no longer transparent) clears it.
	last := store.Node{ID: "gw", Roles: []string{"api"}, Address: "b:2", Labels: map[string]string{}, Revision: 10}
	if err := s.PutNode(ctx, last); err != nil {
		t.Fatalf("PutNode a third time: %v", err)
	}
	got = mustNodes(t, s)
	if len(got) != 1 {
		t.Fatalf("ListNodes = %+v, want the one node", got)
	}
	got[0].Heartbeat = time.Time{}
	if !reflect.DeepEqual(got[0], last) {
		t.Errorf("after a third PutNode: %#v, want %#v", got[0], last)
	}
}

// testNodesTakeNoRevision: heartbeats are not changes. A view that follows the change log
// must not wake up every second for every node.
func testNodesTakeNoRevision(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustVM(t, s, tenantA, "vm")
	rev := mustRevision(t, s)
	for i := range 3 {
		if err := s.PutNode(ctx, store.Node{ID: "gw", Revision: rev, VMs: i}); err != nil {
			t.Fatalf("PutNode: %v", err)
		}
	}
	if got := mustRevision(t, s); got != rev {
		t.Errorf("Revision after heartbeats = %d, want %d", got, rev)
	}
	changes, err := s.ChangesSince(ctx, rev, 10)
	if err != nil || len(changes) != 0 {
		t.Errorf("ChangesSince after heartbeats = %+v, %v; want none", changes, err)
	}
	if next := mustVM(t, s, tenantA, "vm-2"); next.Revision <= rev {
		t.Errorf("the next write took revision %d, want > %d", next.Revision, rev)
	}
}

// testNow: the store's clock is in UTC, does not go back, and tells the time.
func testNow(t *testing.T, s store.Store) {
	first := mustNow(t, s)
	second := mustNow(t, s)
	if first.Location() != time.UTC || second.Location() != time.UTC {
		t.Errorf("Now = %v, %v; want UTC", first, second)
	}
	if second.Before(first) {
		t.Errorf("Now went back from %v to %v", first, second)
	}
	// The database's clock is not this process's, but a server whose clock is a minute off
	// would mark every node of a fleet down or up wrongly.
	if off := time.Since(first).Abs(); off > time.Minute {
		t.Errorf("Now = %v, %v from this machine's clock", first, off)
	}
}
