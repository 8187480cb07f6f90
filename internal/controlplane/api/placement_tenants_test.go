package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// tenant is a client of the placement lab with a new key of tenant name.
func (l *placementLab) tenant(name string) *apiClient {
	l.c.t.Helper()
	body := l.c.do("POST", "/v1/api-keys", map[string]any{"tenant": name}).must(l.c.t, http.StatusCreated)
	key, _ := body["key"].(string)
	return &apiClient{t: l.c.t, base: l.c.base, key: key}
}

// TestNodesAreTheOperators: GET /v1/nodes is for admin keys only, and placement answers do
// not show a tenant what it lists: a node's labels, how many nodes there are.
func TestNodesAreTheOperators(t *testing.T) {
	a := &fakeNode{id: "gw-a", labels: map[string]string{"zone": "a", "dedicated": "acme-corp"}}
	l := newPlacementLab(t, a)
	t1 := l.tenant("t1")
	t1.do("GET", "/v1/nodes", nil).mustError(t, http.StatusForbidden, "forbidden", "")

	msg := t1.do("POST", "/v1/vms", map[string]any{"vm_id": "v", "network": netns(map[string]any{"node": "gw-a", "node_selector": map[string]string{"zone": "b"}})}).
		mustError(t, http.StatusBadRequest, "bad_request", "network.node_selector")
	if strings.Contains(msg, "acme-corp") || strings.Contains(msg, "dedicated") {
		t.Errorf("a tenant is shown the node's labels: %q", msg)
	}
	if !strings.Contains(msg, "zone=b") {
		t.Errorf("the refusal does not say which of the tenant's labels is not matched: %q", msg)
	}
	msg = t1.do("POST", "/v1/vms", map[string]any{"vm_id": "v", "network": netns(map[string]any{"node_selector": map[string]string{"zone": "c"}})}).
		mustError(t, http.StatusServiceUnavailable, "unavailable", "network.node_selector")
	if strings.Contains(msg, "registered") || strings.Contains(msg, "acme-corp") {
		t.Errorf("a tenant is shown the fleet: %q", msg)
	}
}

// TestTenantsShareANode: two tenants' VMs of one vm_id on one node are two VMs: neither
// sees, conflicts with or deletes the other's.
func TestTenantsShareANode(t *testing.T) {
	l := newPlacementLab(t, &fakeNode{id: "gw-a"})
	t1, t2 := l.tenant("t1"), l.tenant("t2")
	create := func(c *apiClient) map[string]any {
		return c.do("POST", "/v1/vms", map[string]any{"vm_id": "same", "network": netns(map[string]any{"node": "gw-a"})}).must(t, http.StatusCreated)
	}
	create(t1)
	t2.do("GET", "/v1/vms/same", nil).mustError(t, http.StatusNotFound, "not_found", "")
	t2.do("DELETE", "/v1/vms/same", nil).mustError(t, http.StatusNotFound, "not_found", "")
	t2.do("POST", "/v1/sessions", map[string]any{"vm_id": "same"}).mustError(t, http.StatusNotFound, "not_found", "vm_id")
	create(t2)
	if r := t2.do("DELETE", "/v1/vms/same", nil); r.status != http.StatusNoContent {
		t.Fatalf("t2's delete: %d %s", r.status, r.raw)
	}
	if _, state := nodeOf(t1.do("GET", "/v1/vms/same", nil).must(t, http.StatusOK)); state != "ready" {
		t.Errorf("t1's VM is %q after t2 deleted its own", state)
	}
	if list := t2.do("GET", "/v1/vms", nil).must(t, http.StatusOK)["vms"].([]any); len(list) != 0 {
		t.Errorf("t2 lists %v", list)
	}
}

// TestWhatAClientMayPlace: a client names the mode, the node and a selector; everything
// else of a network is the node's to write, and a selector is a few labels.
func TestWhatAClientMayPlace(t *testing.T) {
	l := newPlacementLab(t, &fakeNode{id: "gw-a", labels: map[string]string{"zone": "a"}})
	for _, field := range []string{"state", "error", "netns", "path", "address", "gateway"} {
		for _, mode := range []string{"netns", "none"} {
			l.create("x-"+field, map[string]any{"mode": mode, field: "ready"}).mustError(t, http.StatusBadRequest, "bad_request", "network")
		}
	}
	l.create("x-none-selector", map[string]any{"mode": "none", "node_selector": map[string]string{"zone": "a"}}).mustError(t, http.StatusBadRequest, "bad_request", "network.node")
	l.create("x-no-mode", map[string]any{"node": "gw-a"}).mustError(t, http.StatusBadRequest, "bad_request", "network.node")
	huge := map[string]string{"zone": "a"}
	for i := range 10000 {
		huge[fmt.Sprintf("label-%05d", i)] = "x"
	}
	msg := l.create("x-huge", netns(map[string]any{"node_selector": huge})).mustError(t, http.StatusBadRequest, "bad_request", "network.node_selector")
	if len(msg) > 1000 {
		t.Errorf("the refusal of a huge selector is %d bytes long", len(msg))
	}
	l.create("x-long", netns(map[string]any{"node_selector": map[string]string{"zone": strings.Repeat("a", 100000)}})).mustError(t, http.StatusBadRequest, "bad_request", "network.node_selector")
	for _, id := range []string{"x-state", "x-none-selector", "x-no-mode", "x-huge", "x-long"} {
		l.c.do("GET", "/v1/vms/"+id, nil).mustError(t, http.StatusNotFound, "not_found", "")
	}
	// Odd names are labels like any other: they match only a node that has them.
	for _, sel := range []map[string]string{{"zone=a": ""}, {"Zone": "a"}, {"zone": "A"}, {" zone": "a"}, {"zone\x00": "a"}} {
		l.create("x-odd", netns(map[string]any{"node_selector": sel})).mustError(t, http.StatusServiceUnavailable, "unavailable", "network.node_selector")
	}
	if node, _ := nodeOf(l.create("ok", netns(map[string]any{"node_selector": map[string]string{"zone": "a"}})).must(t, http.StatusCreated)); node != "gw-a" {
		t.Errorf("placed on %q", node)
	}
}
