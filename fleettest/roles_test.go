package fleettest

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
)

// TestRoles: --role api serves the API and no proxy; --role gateway serves the proxy and the
// operational endpoints (GET /v1/status among them), and answers 404 to the API's paths.
func TestRoles(t *testing.T) {
	db := pgtest.NewDatabase(t)
	apiNode := startNode(t, "api", "--store", db, "--role", "api")
	gw := startNode(t, "gateway", "--store", db, "--role", "gateway")

	api, err := client.New(apiNode.URL, apiNode.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.ListVMs(ctx(t)); err != nil {
		t.Errorf("the API node's API: %v", err)
	}
	if c, err := net.DialTimeout("tcp", apiNode.ProxyAddr, time.Second); err == nil {
		c.Close()
		t.Errorf("the API node listens on its --proxy-listen %s", apiNode.ProxyAddr)
	}

	if c, err := net.DialTimeout("tcp", gw.ProxyAddr, time.Second); err != nil {
		t.Errorf("the gateway node's proxy: %v", err)
	} else {
		c.Close()
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, body := gw.get(path); code != http.StatusOK {
			t.Errorf("gateway %s = %d %s, want 200", path, code, body)
		}
	}
	if _, body := gw.get("/metrics"); !strings.Contains(body, "go_goroutines") {
		t.Errorf("gateway /metrics lacks the process metrics:\n%.500s", body)
	}
	code, body := gw.get("/v1/vms")
	var answer struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(body), &answer); err != nil || code != http.StatusNotFound || answer.Error.Code != client.CodeNotFound {
		t.Errorf("gateway GET /v1/vms = %d %s (%v), want 404 in the API's error shape", code, body, err)
	}
	if !strings.Contains(answer.Error.Message, "--role gateway") {
		t.Errorf("the gateway's 404 does not say why: %q", answer.Error.Message)
	}

	// Each node's status says what it serves; only a node with a gateway counts connections.
	for _, tc := range []struct {
		n     *node
		roles string
		open  bool
	}{{apiNode, "api", false}, {gw, "gateway", true}} {
		c, _ := client.New(tc.n.URL, apiNode.AdminKey)
		st, err := c.Status(ctx(t))
		if err != nil {
			t.Errorf("%s node's status: %v", tc.roles, err)
			continue
		}
		if strings.Join(st.Roles, ",") != tc.roles || st.Store != "postgres" || (st.OpenConnections != nil) != tc.open {
			t.Errorf("%s node's status: roles %v store %q open_connections %v", tc.roles, st.Roles, st.Store, st.OpenConnections)
		}
	}
}
