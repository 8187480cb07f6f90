package fleet_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/fleet"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
)

// patience bounds every wait for something that must happen (it normally takes milliseconds).
const patience = 10 * time.Second

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func start(t *testing.T, reg fleet.Registry, cfg fleet.Config) *fleet.Heartbeat {
	t.Helper()
	h, err := fleet.Start(t.Context(), reg, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(h.Stop)
	return h
}

// node is the store's registration of id; it fails the test if there is none.
func node(t *testing.T, st store.Store, id string) store.Node {
	t.Helper()
	nodes, err := st.ListNodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.ID == id {
			return n
		}
	}
	t.Fatalf("node %s is not registered (nodes: %+v)", id, nodes)
	return store.Node{}
}

// waitFor polls until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(patience); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, patience)
		}
	}
}

func TestStartRegisters(t *testing.T) {
	st := openStore(t)
	labels := map[string]string{"zone": "a"}
	start(t, st, fleet.Config{
		Node:     store.Node{ID: "gw-1", Roles: []string{"gateway"}, Address: "127.0.0.1:8470", Labels: labels},
		Revision: func() int64 { return 7 },
		VMs:      func() int { return 2 },
		Interval: time.Hour, // only Start's registration
	})
	labels["zone"] = "changed by the caller later"

	got := node(t, st, "gw-1")
	if got.Heartbeat.IsZero() {
		t.Error("registered without a heartbeat")
	}
	if len(got.Instance) < 16 {
		t.Errorf("registered with instance %q, want a random string", got.Instance)
	}
	got.Heartbeat, got.Instance = time.Time{}, ""
	want := store.Node{ID: "gw-1", Roles: []string{"gateway"}, Address: "127.0.0.1:8470", Labels: map[string]string{"zone": "a"}, Revision: 7, VMs: 2}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("registered %+v, want %+v", got, want)
	}
}

// TestKickReportsAtOnce: with an interval far longer than the test, only Kick can report a
// new revision.
func TestKickReportsAtOnce(t *testing.T) {
	st := openStore(t)
	var rev atomic.Int64
	h := start(t, st, fleet.Config{Node: store.Node{ID: "gw"}, Revision: rev.Load, Interval: time.Hour})
	rev.Store(9)
	h.Kick()
	waitFor(t, "the kicked heartbeat reports revision 9", func() bool { return node(t, st, "gw").Revision == 9 })
}

// TestHeartbeatsFollowTheNode: each heartbeat reports the node's figures as they are then,
// with a later heartbeat time, and takes no store revision.
func TestHeartbeatsFollowTheNode(t *testing.T) {
	st := openStore(t)
	if _, err := st.CreateVM(t.Context(), store.VM{Tenant: "t", ID: "vm"}); err != nil {
		t.Fatal(err)
	}
	storeRev, err := st.Revision(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var rev, vms atomic.Int64
	rev.Store(storeRev)
	start(t, st, fleet.Config{
		Node:     store.Node{ID: "gw"},
		Revision: rev.Load,
		VMs:      func() int { return int(vms.Load()) },
		Interval: 10 * time.Millisecond,
	})
	first := node(t, st, "gw")
	vms.Store(3)
	waitFor(t, "a heartbeat reports 3 VMs", func() bool { return node(t, st, "gw").VMs == 3 })
	if later := node(t, st, "gw"); !later.Heartbeat.After(first.Heartbeat) || later.Revision != storeRev {
		t.Errorf("after heartbeats: %+v; want a heartbeat after %v and revision %d", later, first.Heartbeat, storeRev)
	}
	if got, err := st.Revision(t.Context()); err != nil || got != storeRev {
		t.Errorf("store revision after heartbeats = %d, %v; want %d: heartbeats must not take revisions", got, err, storeRev)
	}
}

func TestStartErrors(t *testing.T) {
	down := errors.New("store unreachable")
	for _, tc := range []struct {
		name string
		reg  fleet.Registry
		cfg  fleet.Config
		want string
	}{
		{"no ID", openStore(t), fleet.Config{Node: store.Node{Roles: []string{"gateway"}}}, "ID is empty"},
		{"store down", &registry{fail: func(int64) error { return down }}, fleet.Config{Node: store.Node{ID: "gw-9"}}, `register node "gw-9": store unreachable`},
	} {
		h, err := fleet.Start(t.Context(), tc.reg, tc.cfg)
		if err == nil {
			h.Stop()
			t.Errorf("%s: Start succeeded", tc.name)
		} else if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Start: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

// TestStopEndsHeartbeats: once Stop has returned, nothing is sent, kicked or not.
func TestStopEndsHeartbeats(t *testing.T) {
	reg := &registry{Registry: openStore(t)}
	h := start(t, reg, fleet.Config{Node: store.Node{ID: "gw"}, Interval: 5 * time.Millisecond})
	waitFor(t, "three heartbeats", func() bool { return reg.calls.Load() >= 3 })
	h.Stop()
	sent := reg.calls.Load()
	h.Kick()
	time.Sleep(20 * 5 * time.Millisecond) // twenty intervals
	if got := reg.calls.Load(); got != sent {
		t.Errorf("%d heartbeats after Stop, want none", got-sent)
	}
	h.Stop() // again: harmless
}

// TestFailuresLoggedOnce: a store that fails for a while gets one warning and one line when
// heartbeats work again, not one line a second; the heartbeats go on meanwhile.
func TestFailuresLoggedOnce(t *testing.T) {
	reg := &registry{Registry: openStore(t), fail: func(call int64) error {
		if call >= 2 && call <= 6 { // after the registration and one heartbeat
			return errors.New("connection refused")
		}
		return nil
	}}
	var logs bytes.Buffer // read once Stop has returned: the heartbeat goroutine has ended
	h := start(t, reg, fleet.Config{
		Node:     store.Node{ID: "gw"},
		Interval: 5 * time.Millisecond,
		Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
	})
	waitFor(t, "heartbeats after the failures", func() bool { return reg.calls.Load() >= 9 })
	h.Stop()
	out := logs.String()
	if n := strings.Count(out, "heartbeat failed"); n != 1 || !strings.Contains(out, "connection refused") {
		t.Errorf("%d failure lines, want one naming the error; log:\n%s", n, out)
	}
	if n := strings.Count(out, "reach the store again"); n != 1 {
		t.Errorf("%d recovery lines, want one; log:\n%s", n, out)
	}
}

// registry counts PutNode calls, and fails those that fail says to fail (it is given the
// call's number, from 1) instead of passing them to Registry.
type registry struct {
	fleet.Registry
	calls atomic.Int64
	fail  func(call int64) error
}

func (r *registry) PutNode(ctx context.Context, n store.Node) error {
	call := r.calls.Add(1)
	if r.fail != nil {
		if err := r.fail(call); err != nil {
			return err
		}
	}
	return r.Registry.PutNode(ctx, n)
}

// countingRegistry counts registrations.
type countingRegistry struct {
	fleet.Registry
	n atomic.Int64
}

func (c *countingRegistry) PutNode(ctx context.Context, n store.Node) error {
	c.n.Add(1)
	return c.Registry.PutNode(ctx, n)
}

// TestKicksAreSpaced: a stream of kicks (a node applying write after write) heartbeats at most
// once per MinGap, and the last kick's revision is still reported.
func TestKicksAreSpaced(t *testing.T) {
	reg := &countingRegistry{Registry: openStore(t)}
	var rev atomic.Int64
	h := start(t, reg, fleet.Config{Node: store.Node{ID: "gw"}, Revision: rev.Load, Interval: time.Hour, MinGap: 100 * time.Millisecond})
	began := time.Now()
	for i := range 200 {
		rev.Store(int64(i + 1))
		h.Kick()
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(began)
	waitFor(t, "the last kick's revision is reported", func() bool {
		nodes, err := reg.Registry.(store.Store).ListNodes(t.Context())
		return err == nil && len(nodes) == 1 && nodes[0].Revision == 200
	})
	// One registration, then at most one beat per gap of the kicking time, and the last.
	if most := int64(elapsed/(100*time.Millisecond)) + 3; reg.n.Load() > most {
		t.Fatalf("%d heartbeats for 200 kicks in %s; at most %d with a 100ms gap", reg.n.Load(), elapsed.Round(time.Millisecond), most)
	}
}

// aheadClock is a store whose clock runs ahead, so that a row ages out sooner than
// store.DownAfter of real time.
type aheadClock struct {
	store.Store
	by time.Duration
}

func (a aheadClock) Now(ctx context.Context) (time.Time, error) {
	now, err := a.Store.Now(ctx)
	return now.Add(a.by), err
}

// TestOneProcessPerID: on a shared store a second process with a node's ID is refused while
// the first runs; it takes over at once after a clean stop, and after a crash once the row
// shows down.
func TestOneProcessPerID(t *testing.T) {
	st := openStore(t)
	cfg := fleet.Config{Node: store.Node{ID: "gw", Address: "first"}, Interval: 100 * time.Millisecond, Shared: true}

	first := start(t, st, cfg)
	began := time.Now()
	_, err := fleet.Start(t.Context(), st, fleet.Config{Node: store.Node{ID: "gw", Address: "second"}, Shared: true})
	if err == nil || !strings.Contains(err.Error(), "held by another running egressd") || !strings.Contains(err.Error(), "first") {
		t.Fatalf("a second live process with the ID: err %v", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("refusing took %s; a live holder heartbeats every 100ms", took)
	}
	if n := node(t, st, "gw"); n.Address != "first" {
		t.Fatalf("the refused process registered: %+v", n)
	}

	// A clean stop lets go of the ID: the next process starts without waiting.
	first.Stop()
	if n := node(t, st, "gw"); n.Instance != "" {
		t.Fatalf("stopped, the row still holds instance %q", n.Instance)
	}
	began = time.Now()
	second := start(t, st, fleet.Config{Node: store.Node{ID: "gw", Address: "second"}, Interval: time.Hour, Shared: true})
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("taking over a released ID took %s", took)
	}
	if n := node(t, st, "gw"); n.Address != "second" || n.Instance == "" {
		t.Fatalf("after taking over: %+v", n)
	}

	// A crash (no Stop) leaves the ID held: the next process waits until the row shows
	// down. The clock runs 9.5 s ahead, so that is half a second here.
	crashed, cancel := context.WithCancel(t.Context())
	third, err := fleet.Start(crashed, st, fleet.Config{Node: store.Node{ID: "gw-crash"}, Interval: time.Hour, Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	cancel() // heartbeats end; the row keeps its instance
	_ = third
	began = time.Now()
	start(t, aheadClock{st, store.DownAfter - 500*time.Millisecond}, fleet.Config{Node: store.Node{ID: "gw-crash"}, Interval: time.Hour, Shared: true})
	if took := time.Since(began); took < 200*time.Millisecond || took > 5*time.Second {
		t.Errorf("taking over the ID of a crashed process took %s; want about half a second", took)
	}
	_ = second
}
