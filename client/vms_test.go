package client

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"
)

// A netns VM is placed on a node: the request carries the node and the selector as the
// server reads them, and a 202 (the node has not made the network yet) is a success whose VM
// says so.
func TestCreateVMOnANode(t *testing.T) {
	cases := []struct {
		name     string
		status   int
		answer   string
		net      Network
		wantBody string
		want     Network
	}{
		{
			name:     "ready (201)",
			status:   http.StatusCreated,
			answer:   `{"vm_id":"v1","network":{"mode":"netns","node":"gw-a","state":"ready","netns":"egressd-v1","path":"/run/netns/egressd-v1","address":"100.96.0.2","gateway":"100.96.0.1"},"sessions":0,"created_at":"2026-01-02T03:04:05Z"}`,
			net:      Network{Mode: "netns", Node: "gw-a"},
			wantBody: `{"vm_id":"v1","network":{"mode":"netns","node":"gw-a"}}`,
			want: Network{Mode: "netns", Node: "gw-a", State: "ready", Netns: "egressd-v1", Path: "/run/netns/egressd-v1",
				Address: "100.96.0.2", Gateway: "100.96.0.1"},
		},
		{
			name:     "pending (202)",
			status:   http.StatusAccepted,
			answer:   `{"vm_id":"v1","network":{"mode":"netns","node":"gw-b","state":"pending"},"sessions":0,"created_at":"2026-01-02T03:04:05Z"}`,
			net:      Network{Mode: "netns", NodeSelector: map[string]string{"zone": "eu-1", "gpu": "true"}},
			wantBody: `{"vm_id":"v1","network":{"mode":"netns","node_selector":{"gpu":"true","zone":"eu-1"}}}`,
			want:     Network{Mode: "netns", Node: "gw-b", State: "pending"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t, answerJSON(tc.status, tc.answer))
			c := mustNew(t, f.URL, "k")
			net := tc.net
			vm, err := c.CreateVM(context.Background(), CreateVMRequest{VMID: "v1", Network: &net})
			if err != nil {
				t.Fatalf("CreateVM: %v", err)
			}
			if got := f.last(t); got.method != "POST" || got.path != "/v1/vms" || got.body != tc.wantBody {
				t.Errorf("sent %s %s %s\nwant POST /v1/vms %s", got.method, got.path, got.body, tc.wantBody)
			}
			if vm.VMID != "v1" || vm.Network.Mode != tc.want.Mode || vm.Network.Node != tc.want.Node ||
				vm.Network.State != tc.want.State || vm.Network.Path != tc.want.Path || vm.Network.Address != tc.want.Address ||
				!vm.CreatedAt.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
				t.Errorf("decoded %+v, want network %+v", vm, tc.want)
			}
		})
	}
}

// A network the node could not make is an error (503) with the node's reason, not a VM.
func TestCreateVMNetworkFailed(t *testing.T) {
	f := newFakeAPI(t, answerJSON(http.StatusServiceUnavailable,
		`{"error":{"code":"unavailable","message":"node gw-a could not make the network: sandbox range full","field":"network"}}`))
	c := mustNew(t, f.URL, "k")
	vm, err := c.CreateVM(context.Background(), CreateVMRequest{Network: &Network{Mode: "netns"}})
	if vm != nil || ErrorCode(err) != CodeUnavailable {
		t.Fatalf("CreateVM = %+v, %v; want a 503 unavailable error", vm, err)
	}
}

// DELETE of a netns VM answers 204 once its node removed it, or 202 with the VM (state
// deleting) when it has not yet: DeleteVM succeeds on both, and reads neither body.
func TestDeleteVMAcceptsNoContentAndAccepted(t *testing.T) {
	cases := []struct {
		status int
		body   string
	}{
		{http.StatusNoContent, ""},
		{http.StatusAccepted, `{"vm_id":"v1","network":{"mode":"netns","node":"gw-a","state":"deleting"},"sessions":0,"created_at":"2026-01-02T03:04:05Z"}`},
		// A body that is not JSON at all: DeleteVM does not read it, so it cannot fail on it.
		{http.StatusAccepted, `accepted`},
	}
	for _, tc := range cases {
		f := newFakeAPI(t, answerJSON(tc.status, tc.body))
		c := mustNew(t, f.URL, "k")
		if err := c.DeleteVM(context.Background(), "v1"); err != nil {
			t.Errorf("%d %q: DeleteVM: %v", tc.status, tc.body, err)
		}
		if got := f.last(t); got.method != "DELETE" || got.path != "/v1/vms/v1" {
			t.Errorf("%d: sent %s %s", tc.status, got.method, got.path)
		}
	}
}

// After a 202 the VM reads back in state deleting, with its node.
func TestGetVMDeleting(t *testing.T) {
	f := newFakeAPI(t, answerJSON(http.StatusOK,
		`{"vm_id":"v1","network":{"mode":"netns","node":"gw-a","state":"node_down","netns":"egressd-v1","path":"/run/netns/egressd-v1"},"sessions":0,"created_at":"2026-01-02T03:04:05Z"}`))
	c := mustNew(t, f.URL, "k")
	vm, err := c.GetVM(context.Background(), "v1")
	if err != nil || vm.Network.State != "node_down" || vm.Network.Node != "gw-a" {
		t.Fatalf("GetVM = %+v, %v", vm, err)
	}
}

func TestNodes(t *testing.T) {
	f := newFakeAPI(t, answerJSON(http.StatusOK, `{"nodes":[
		{"id":"gw-a","roles":["api","gateway","transparent"],"address":"127.0.0.1:8470","labels":{"zone":"eu-1"},
		 "sandbox_cidr":"100.96.0.0/20","last_heartbeat":"2026-01-02T03:04:05Z","revision":42,"vm_count":3,"state":"up"},
		{"id":"gw-b","roles":["gateway"],"last_heartbeat":"2026-01-02T03:00:00Z","revision":40,"vm_count":0,"state":"down"}]}`))
	c := mustNew(t, f.URL, "k")
	nodes, err := c.Nodes(context.Background())
	if err != nil {
		t.Fatalf("Nodes: %v", err)
	}
	if got := f.last(t); got.method != "GET" || got.path != "/v1/nodes" {
		t.Errorf("sent %s %s", got.method, got.path)
	}
	if len(nodes) != 2 {
		t.Fatalf("got %d nodes: %+v", len(nodes), nodes)
	}
	a := nodes[0]
	if a.ID != "gw-a" || !slices.Equal(a.Roles, []string{"api", "gateway", "transparent"}) || a.Labels["zone"] != "eu-1" ||
		a.SandboxCIDR != "100.96.0.0/20" || a.Revision != 42 || a.VMs != 3 || a.State != "up" ||
		!a.LastHeartbeat.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("node a decoded as %+v", a)
	}
	if nodes[1].State != "down" || nodes[1].Labels != nil {
		t.Errorf("node b decoded as %+v", nodes[1])
	}
}
