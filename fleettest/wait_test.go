package fleettest

import (
	"net/http"
	"slices"
	"testing"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
)

// TestWaitFleet: nodes register and heartbeat (GET /v1/nodes); a write made with
// ?wait=fleet through node A is answered once every up gateway node has applied it, so node
// B's proxy obeys it the moment A answers, with no waiting on the test's side.
func TestWaitFleet(t *testing.T) {
	db := pgtest.NewDatabase(t)
	one, two := startSite(t, webA), startSite(t, webB)
	a := startNode(t, "a", "--store", db, "--role", "all", "--public-cidrs", publicLab)
	b := startNode(t, "b", "--store", db, "--role", "gateway", "--public-cidrs", publicLab)
	c := startNode(t, "c", "--store", db, "--role", "api")
	admin, err := client.New(a.URL, a.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := admin.Nodes(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n.ID)
		if n.State != "up" || n.LastHeartbeat.IsZero() {
			t.Errorf("node %s: state %q, heartbeat %v, want up", n.ID, n.State, n.LastHeartbeat)
		}
	}
	if want := []string{"a", "b", "c"}; !slices.Equal(ids, want) {
		t.Fatalf("GET /v1/nodes lists %v, want %v", ids, want)
	}
	if nodes[1].Roles[0] != "gateway" || nodes[2].Roles[0] != "api" {
		t.Errorf("roles: %v, %v", nodes[1].Roles, nodes[2].Roles)
	}

	api, err := client.New(c.URL, a.AdminKey, client.WithWaitFleet()) // through the API-only node
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.CreateVM(ctx(t), client.CreateVMRequest{VMID: "vm-w"}); err != nil {
		t.Fatal(err)
	}
	s := newSession(t, api, "vm-w")
	for i, target := range []string{webA, webB, webA, webB} {
		allowed, denied := one, two
		if target == webB {
			allowed, denied = two, one
		}
		p, err := api.SetSessionPolicy(ctx(t), s.id, only(target))
		if err != nil {
			t.Fatal(err)
		}
		if p.Enforcement == nil || !slices.Equal(p.Enforcement.EnforcedBy, []string{"a", "b"}) || len(p.Enforcement.Lagging) > 0 {
			t.Fatalf("write %d: enforcement %+v, want enforced by a and b", i, p.Enforcement)
		}
		for _, n := range []*node{a, b} {
			if got, gotDenied := s.status(n.ProxyAddr, allowed.URL), s.status(n.ProxyAddr, denied.URL); got != http.StatusOK || gotDenied != http.StatusForbidden {
				t.Errorf("write %d: node %s answers %d and %d right after the answer, want 200 and 403", i, n.name, got, gotDenied)
			}
		}
	}

	// A tenant's key does not list the fleet.
	if code, _ := a.get("/v1/nodes"); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/nodes without a key: %d, want 401", code)
	}
}
