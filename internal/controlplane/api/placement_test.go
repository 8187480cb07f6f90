package api_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/api"
	"github.com/egressd/egressd/internal/controlplane/store"
)

// These tests drive placement and the network states (DESIGN §5) through the API over the
// real embedded store, with stand-in gateway nodes: goroutines that do what a node's
// reconciler does to the store (package gateway does it for real, and e2e's fleet test runs
// real nodes). Here the subject is the API's side: where a VM goes, what it answers, what it
// waits for.

// downStore shows the nodes named in down as silent for a minute, as the nodes table would
// after they stopped.
type downStore struct {
	store.Store
	mu   sync.Mutex
	down map[string]bool
}

func (d *downStore) setDown(id string, down bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down[id] = down
}

func (d *downStore) ListNodes(ctx context.Context) ([]store.Node, error) {
	nodes, err := d.Store.ListNodes(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range nodes {
		if d.down[nodes[i].ID] {
			nodes[i].Heartbeat = nodes[i].Heartbeat.Add(-time.Minute)
		}
	}
	return nodes, err
}

// fakeNode is a transparent node's reconciler as the store sees it: it makes its pending
// VMs ready (or failed, for IDs starting with "fail"), removes its deleting ones, and
// heartbeats the store's revision. A stopped one does nothing.
type fakeNode struct {
	id     string
	labels map[string]string
	mu     sync.Mutex
	paused bool
	// early lists the VMs whose creator asked for a policy ("with-policy…") that it found
	// pending before the policy was stored.
	early []string
}

func (n *fakeNode) pause(p bool) { n.mu.Lock(); n.paused = p; n.mu.Unlock() }

func (n *fakeNode) run(ctx context.Context, t *testing.T, st store.Store, subnet int) {
	beat := func() {
		rev, _ := st.Revision(ctx)
		st.PutNode(ctx, store.Node{ID: n.id, Roles: []string{"gateway", "transparent"}, Labels: n.labels,
			SandboxCIDR: fmt.Sprintf("100.96.%d.0/24", subnet), Revision: rev})
	}
	beat()
	go func() {
		for i := 0; ctx.Err() == nil && i < 10000; i++ {
			time.Sleep(5 * time.Millisecond)
			n.mu.Lock()
			paused := n.paused
			n.mu.Unlock()
			if paused {
				continue
			}
			vms, err := st.AllVMs(ctx)
			if err != nil {
				continue
			}
			for _, vm := range vms {
				if vm.Network.Node != n.id {
					continue
				}
				switch vm.Network.State {
				case store.NetworkPending:
					if _, err := st.GetPolicy(ctx, vm.Tenant, store.ScopeVM, vm.ID); err != nil && strings.HasPrefix(vm.ID, "with-policy") {
						n.mu.Lock()
						n.early = append(n.early, vm.ID)
						n.mu.Unlock()
					}
					st.UpdateVMNetwork(ctx, vm.Tenant, vm.ID, func(net store.Network) (store.Network, error) {
						if net.State != store.NetworkPending {
							return net, errors.New("not pending")
						}
						if strings.HasPrefix(vm.ID, "fail") {
							net.State, net.Error = store.NetworkFailed, "no room on this host"
							return net, nil
						}
						net.State, net.Netns, net.Address = store.NetworkReady, "egressd-"+vm.ID, fmt.Sprintf("100.96.%d.2", subnet)
						return net, nil
					})
				case store.NetworkDeleting:
					st.DeleteVM(ctx, vm.Tenant, vm.ID)
				}
			}
			beat()
		}
	}()
}

type placementLab struct {
	c     *apiClient
	st    *downStore
	nodes map[string]*fakeNode
}

func newPlacementLab(t *testing.T, nodes ...*fakeNode) *placementLab {
	t.Helper()
	base, key := bootstrappedStore(t)
	st := &downStore{Store: base, down: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	l := &placementLab{st: st, nodes: map[string]*fakeNode{}}
	for i, n := range nodes {
		n.run(ctx, t, base, i)
		l.nodes[n.id] = n
	}
	srv := httptest.NewServer(api.New(api.Config{
		Store:       st,
		Fleet:       api.StoreFleet(st),
		NetworkWait: 500 * time.Millisecond,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Status:      api.StatusConfig{NodeID: "api-1"},
	}))
	t.Cleanup(srv.Close)
	l.c = &apiClient{t: t, base: srv.URL, key: key}
	return l
}

func netns(extra map[string]any) map[string]any {
	n := map[string]any{"mode": "netns"}
	for k, v := range extra {
		n[k] = v
	}
	return n
}

func (l *placementLab) create(id string, network map[string]any) response {
	l.c.t.Helper()
	return l.c.do("POST", "/v1/vms", map[string]any{"vm_id": id, "network": network})
}

func nodeOf(body map[string]any) (node, state string) {
	n, _ := body["network"].(map[string]any)
	node, _ = n["node"].(string)
	state, _ = n["state"].(string)
	return node, state
}

// TestPlacement: an explicit node wins; otherwise the up transparent node with the fewest
// VMs, ties to the lowest ID, among those whose labels match node_selector.
func TestPlacement(t *testing.T) {
	a := &fakeNode{id: "gw-a", labels: map[string]string{"zone": "a"}}
	b := &fakeNode{id: "gw-b", labels: map[string]string{"zone": "b"}}
	l := newPlacementLab(t, a, b)

	// Ties go to the lowest ID.
	if node, state := nodeOf(l.create("auto-1", netns(nil)).must(t, http.StatusCreated)); node != "gw-a" || state != "ready" {
		t.Fatalf("first automatic VM: node %q state %q, want gw-a ready", node, state)
	}
	// gw-a has one VM now, gw-b none.
	if node, _ := nodeOf(l.create("auto-2", netns(nil)).must(t, http.StatusCreated)); node != "gw-b" {
		t.Fatalf("second automatic VM went to %q, want gw-b (fewest VMs)", node)
	}
	// Named explicitly, even where it is not the emptiest.
	if node, _ := nodeOf(l.create("named", netns(map[string]any{"node": "gw-b"})).must(t, http.StatusCreated)); node != "gw-b" {
		t.Fatalf("named VM went to %q", node)
	}
	// gw-b has two, gw-a one; a selector overrides the count.
	if node, _ := nodeOf(l.create("zone-b", netns(map[string]any{"node_selector": map[string]string{"zone": "b"}})).must(t, http.StatusCreated)); node != "gw-b" {
		t.Fatalf("selector zone=b placed on %q", node)
	}
	if node, _ := nodeOf(l.create("auto-3", netns(nil)).must(t, http.StatusCreated)); node != "gw-a" {
		t.Fatalf("third automatic VM went to %q, want gw-a", node)
	}
	// Refusals name the field to fix.
	l.create("x1", netns(map[string]any{"node": "gw-z"})).mustError(t, http.StatusBadRequest, "bad_request", "network.node")
	l.create("x2", netns(map[string]any{"node_selector": map[string]string{"zone": "c"}})).mustError(t, http.StatusServiceUnavailable, "unavailable", "network.node_selector")
	l.create("x3", netns(map[string]any{"node": "gw-a", "node_selector": map[string]string{"zone": "b"}})).mustError(t, http.StatusBadRequest, "bad_request", "network.node_selector")
	l.create("x4", netns(map[string]any{"node_selector": map[string]string{"": "b"}})).mustError(t, http.StatusBadRequest, "bad_request", "network.node_selector")
	l.create("x5", map[string]any{"mode": "none", "node": "gw-a"}).mustError(t, http.StatusBadRequest, "bad_request", "network.node")
	l.create("x6", netns(map[string]any{"address": "100.96.0.2"})).mustError(t, http.StatusBadRequest, "bad_request", "network")
	for _, id := range []string{"x1", "x2", "x3", "x4", "x5", "x6"} {
		l.c.do("GET", "/v1/vms/"+id, nil).mustError(t, http.StatusNotFound, "not_found", "")
	}

	// A down node takes nothing: neither automatically nor by name.
	l.st.setDown("gw-a", true)
	if node, _ := nodeOf(l.create("auto-4", netns(nil)).must(t, http.StatusCreated)); node != "gw-b" {
		t.Fatalf("with gw-a down, a VM went to %q", node)
	}
	l.create("x7", netns(map[string]any{"node": "gw-a"})).mustError(t, http.StatusServiceUnavailable, "unavailable", "network.node")
	l.st.setDown("gw-b", true)
	l.create("x8", netns(nil)).mustError(t, http.StatusServiceUnavailable, "unavailable", "network.mode")

	// GET /v1/nodes counts each node's VMs from the store, down or not.
	nodes := l.c.do("GET", "/v1/nodes", nil).must(t, http.StatusOK)["nodes"].([]any)
	got := map[string]any{}
	for _, n := range nodes {
		n := n.(map[string]any)
		got[n["id"].(string)] = fmt.Sprint(n["vm_count"], " ", n["state"], " ", n["sandbox_cidr"], " ", n["labels"])
	}
	if got["gw-a"] != "2 down 100.96.0.0/24 map[zone:a]" || got["gw-b"] != "4 down 100.96.1.0/24 map[zone:b]" {
		t.Fatalf("nodes: %v", got)
	}
}

// TestNoTransparentNode: without a transparent node, netns is refused with how to get one.
func TestNoTransparentNode(t *testing.T) {
	l := newPlacementLab(t)
	msg := l.create("v", netns(nil)).mustError(t, http.StatusBadRequest, "bad_request", "network.mode")
	if !strings.Contains(msg, "--transparent") {
		t.Fatalf("refusal does not say how: %q", msg)
	}
}

// TestNetworkStates: a VM with a policy is never pending before its policy is stored; a node
// that does not act in time gives 202 and "pending"; a failure is a 503 that leaves no VM; a
// down node's VMs show node_down; deleting waits for the node, or answers 202 "deleting".
func TestNetworkStates(t *testing.T) {
	a := &fakeNode{id: "gw-a"}
	l := newPlacementLab(t, a)

	body := map[string]any{"vm_id": "with-policy", "network": netns(nil), "egress_policy": map[string]any{"allow_https": true}}
	l.c.do("POST", "/v1/vms", body).must(t, http.StatusCreated)
	a.mu.Lock()
	if len(a.early) > 0 {
		t.Errorf("the node found %v pending before its policy was stored", a.early)
	}
	a.mu.Unlock()
	if pol := l.c.do("GET", "/v1/egress/vm/with-policy", nil).must(t, http.StatusOK); pol["allow_https"] != true {
		t.Fatalf("policy: %v", pol)
	}

	// Failure: 503 naming the node's reason, and the VM is gone.
	msg := l.create("fail-1", netns(nil)).mustError(t, http.StatusServiceUnavailable, "unavailable", "network")
	if !strings.Contains(msg, "no room on this host") || !strings.Contains(msg, "gw-a") {
		t.Fatalf("failure message: %q", msg)
	}
	l.c.do("GET", "/v1/vms/fail-1", nil).mustError(t, http.StatusNotFound, "not_found", "")

	// A node that does not act within the wait: 202, pending; GET shows it too.
	a.pause(true)
	r := l.create("slow", netns(nil))
	if _, state := nodeOf(r.must(t, http.StatusAccepted)); state != "pending" {
		t.Fatalf("slow VM: state %q", state)
	}
	if _, state := nodeOf(l.c.do("GET", "/v1/vms/slow", nil).must(t, http.StatusOK)); state != "pending" {
		t.Fatalf("GET slow: state %q", state)
	}
	// No session on a VM being deleted: retire it with the node paused.
	if _, state := nodeOf(l.c.do("DELETE", "/v1/vms/with-policy", nil).must(t, http.StatusAccepted)); state != "deleting" {
		t.Fatalf("delete with the node paused: state %q", state)
	}
	l.c.do("POST", "/v1/sessions", map[string]any{"vm_id": "with-policy"}).mustError(t, http.StatusNotFound, "not_found", "vm_id")
	l.c.do("POST", "/v1/egress/vm/with-policy", map[string]any{"allow_http": true}).mustError(t, http.StatusNotFound, "not_found", "")
	a.pause(false)
	deadline := time.Now().Add(5 * time.Second)
	for l.c.do("GET", "/v1/vms/with-policy", nil).status != http.StatusNotFound {
		if time.Now().After(deadline) {
			t.Fatal("the node did not finish the deletion")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The node back: slow becomes ready.
	for {
		if _, state := nodeOf(l.c.do("GET", "/v1/vms/slow", nil).must(t, http.StatusOK)); state == "ready" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("slow never became ready")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The node down: its VMs show node_down; deleting answers 202 at once, state deleting.
	l.st.setDown("gw-a", true)
	if _, state := nodeOf(l.c.do("GET", "/v1/vms/slow", nil).must(t, http.StatusOK)); state != "node_down" {
		t.Fatalf("VM of a down node: state %q", state)
	}
	list := l.c.do("GET", "/v1/vms", nil).must(t, http.StatusOK)["vms"].([]any)
	if _, state := nodeOf(list[0].(map[string]any)); state != "node_down" {
		t.Fatalf("listed VM of a down node: state %q", state)
	}
	a.pause(true)
	start := time.Now()
	if _, state := nodeOf(l.c.do("DELETE", "/v1/vms/slow", nil).must(t, http.StatusAccepted)); state != "deleting" {
		t.Fatalf("delete on a down node: state %q", state)
	}
	if took := time.Since(start); took > 400*time.Millisecond {
		t.Errorf("delete on a down node waited %s for a node that is down", took)
	}
	// Back: the deletion completes.
	l.st.setDown("gw-a", false)
	a.pause(false)
	deadline = time.Now().Add(5 * time.Second)
	for l.c.do("GET", "/v1/vms/slow", nil).status != http.StatusNotFound {
		if time.Now().After(deadline) {
			t.Fatal("the returning node did not finish the deletion")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A delete the node finishes in time is a 204.
	l.create("quick", netns(nil)).must(t, http.StatusCreated)
	if r := l.c.do("DELETE", "/v1/vms/quick", nil); r.status != http.StatusNoContent {
		t.Fatalf("delete with the node up: %d %s", r.status, r.raw)
	}
}
