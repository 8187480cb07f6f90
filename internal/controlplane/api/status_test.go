package api_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

// TestStatus: GET /v1/status gives every key the build and the node, and counts only what
// the key may see: a tenant its own VMs, sessions and open connections, an admin every
// tenant's, with the node's roles and store kind besides.
func TestStatus(t *testing.T) {
	in := egressdtest.Start(t, egressdtest.TunnelArgs("--node-id", "node-a")...)
	ctx := context.Background()
	admin, _ := client.New(in.URL, in.AdminKey)
	tenantClient := func(tenant string) *client.Client {
		k, err := admin.CreateAPIKey(ctx, client.CreateAPIKeyRequest{Tenant: tenant})
		if err != nil {
			t.Fatal(err)
		}
		c, _ := client.New(in.URL, k.Key)
		return c
	}
	alice, bob := tenantClient("alice"), tenantClient("bob")

	// alice: two VMs, one session with a tunnel open; bob: one VM.
	for _, id := range []string{"a1", "a2"} {
		if _, err := alice.CreateVM(ctx, client.CreateVMRequest{VMID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.CreateVM(ctx, client.CreateVMRequest{VMID: "b1"}); err != nil {
		t.Fatal(err)
	}
	egressdtest.OpenTunnel(t, alice, "a1")

	version, err := exec.Command(egressdtest.Binary(t, "egressd"), "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name                 string
		c                    *client.Client
		scope, tenant, store string
		roles                []string
		vms, sessions        int
		open                 int64
	}{
		{"tenant alice", alice, client.StatusScopeTenant, "alice", "", nil, 2, 1, 1},
		{"tenant bob", bob, client.StatusScopeTenant, "bob", "", nil, 1, 0, 0},
		{"admin", admin, client.StatusScopeAll, "default", "sqlite", []string{"api", "gateway"}, 3, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := tt.c.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Scope != tt.scope || st.Tenant != tt.tenant || st.Store != tt.store || strings.Join(st.Roles, ",") != strings.Join(tt.roles, ",") {
				t.Errorf("scope %q tenant %q store %q roles %v, want %q %q %q %v", st.Scope, st.Tenant, st.Store, st.Roles, tt.scope, tt.tenant, tt.store, tt.roles)
			}
			if st.VMs != tt.vms || st.Sessions != tt.sessions || st.OpenConnections == nil || *st.OpenConnections != tt.open {
				t.Errorf("vms %d sessions %d open %v, want %d %d %d", st.VMs, st.Sessions, st.OpenConnections, tt.vms, tt.sessions, tt.open)
			}
			// The build is the same for every key, and is what --version says.
			if st.NodeID != "node-a" || !strings.HasPrefix(string(version), "egressd "+st.Version+" (commit ") || !strings.Contains(string(version), st.GoVersion) {
				t.Errorf("node %q version %q go %q; egressd --version says %s", st.NodeID, st.Version, st.GoVersion, version)
			}
		})
	}

	// No key, no status.
	newClient(t, in, "").do("GET", "/v1/status", nil).mustError(t, http.StatusUnauthorized, "unauthorized", "")

	// The same build is on /metrics, for dashboards.
	st, _ := admin.Status(ctx)
	resp, err := http.Get(in.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `egressd_build_info{commit="` + st.Commit + `",go_version="` + st.GoVersion + `",version="` + st.Version + `"} 1`
	if !strings.Contains(string(body), want) {
		t.Errorf("/metrics lacks %s", want)
	}
}

// TestStatusPostgres: the store kind is "postgres", and nothing of its URL shows, least of all
// the password in it.
func TestStatusPostgres(t *testing.T) {
	u, err := url.Parse(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	const password = "s3cret-in-the-dsn" // the test server trusts loopback: any password does
	u.User = url.UserPassword(u.User.Username(), password)
	in := egressdtest.Start(t, "--store", u.String())
	r := newClient(t, in, in.AdminKey).do("GET", "/v1/status", nil)
	body := r.must(t, http.StatusOK)
	if body["store"] != "postgres" || strings.Contains(string(r.raw), password) || strings.Contains(string(r.raw), u.Host) {
		t.Errorf("status with a PostgreSQL store: %s", r.raw)
	}
}
