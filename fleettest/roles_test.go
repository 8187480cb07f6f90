package fleettest

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/store/postgres/pgtest"
)

// TestRoles: --role api serves the API and no proxy; --role gateway serves the proxy and the
// operational endpoints, and answers 404 to the API's paths.
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
}
