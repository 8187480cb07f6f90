package api_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/api"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/policy"
)

// fakeFleet answers Nodes from a function of how many times it was asked, as the nodes
// table would while heartbeats come in.
type fakeFleet struct {
	mu    sync.Mutex
	reads int
	nodes func(read int) ([]api.NodeState, error)
}

func (f *fakeFleet) Nodes(context.Context) ([]api.NodeState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return f.nodes(f.reads)
}

// stuckView is a gateway whose view never catches up.
type stuckView struct{}

func (stuckView) WaitRevision(ctx context.Context, rev int64) error {
	<-ctx.Done()
	return ctx.Err()
}

// inProcess runs the API over the real embedded store, with the gateway view (a real one
// unless cfg names another Enforcer; none at all when noView). It returns a client with the
// admin key and the store.
func inProcess(t *testing.T, cfg api.Config, noView bool) (*apiClient, store.Store) {
	t.Helper()
	st, key := bootstrappedStore(t)
	cfg.Store = st
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if cfg.Enforcer == nil && !noView {
		v, err := view.New(st, view.Config{Poll: time.Hour}) // woken by kicks only
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		if err := v.Start(ctx); err != nil {
			t.Fatal(err)
		}
		cfg.Store, cfg.Enforcer = store.WithHook(st, v.Kick), v
	}
	srv := httptest.NewServer(api.New(cfg))
	t.Cleanup(srv.Close)
	return &apiClient{t: t, base: srv.URL, key: key}, st
}

// TestWaitFleet: ?wait=fleet answers which up gateway nodes enforce a write. This node
// counts once its own view has the write; API-only and down nodes do not count; a node that
// is still behind when the wait ends is named in "lagging", and the answer is still 200.
func TestWaitFleet(t *testing.T) {
	var st store.Store
	current := func() int64 {
		rev, err := st.Revision(context.Background())
		if err != nil {
			t.Error(err)
		}
		return rev
	}
	others := func(gw2 int64) []api.NodeState {
		return []api.NodeState{
			{ID: "self", Roles: []string{"all"}, Revision: 0, Up: true}, // its heartbeat is old
			{ID: "gw2", Roles: []string{"gateway"}, Revision: gw2, Up: true},
			{ID: "api1", Roles: []string{"api"}, Revision: 0, Up: true},
			{ID: "gw3", Roles: []string{"gateway"}, Revision: 0, Up: false},
		}
	}
	tests := []struct {
		name     string
		nodes    func(read int) ([]api.NodeState, error)
		timeout  time.Duration // of the wait: short where it must run out
		status   int
		enforced []string
		lagging  []string
	}{
		{"all caught up", func(int) ([]api.NodeState, error) { return others(current()), nil },
			0, http.StatusOK, []string{"gw2", "self"}, nil},
		{"one catches up while the write waits", func(read int) ([]api.NodeState, error) {
			if read < 3 {
				return others(0), nil
			}
			return others(current()), nil
		}, 0, http.StatusOK, []string{"gw2", "self"}, nil},
		{"one lags", func(int) ([]api.NodeState, error) { return others(0), nil },
			300 * time.Millisecond, http.StatusOK, []string{"self"}, []string{"gw2"}},
		{"the nodes cannot be read", func(int) ([]api.NodeState, error) { return nil, errors.New("store down") },
			300 * time.Millisecond, http.StatusServiceUnavailable, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fleet := &fakeFleet{nodes: tt.nodes}
			var c *apiClient
			c, st = inProcess(t, api.Config{Fleet: fleet, Status: api.StatusConfig{NodeID: "self"}, WaitTimeout: tt.timeout}, false)
			c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)
			se := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)
			sid := se["session_id"].(string)

			for _, w := range []struct{ method, path string }{
				{"POST", "/v1/egress/vm/v?wait=fleet"},
				{"POST", "/v1/sessions?wait=fleet"},
				{"DELETE", "/v1/sessions/" + sid + "?wait=fleet"},
			} {
				var body any
				switch w.path {
				case "/v1/egress/vm/v?wait=fleet":
					body = map[string]any{"allow_https": true}
				case "/v1/sessions?wait=fleet":
					body = map[string]any{"vm_id": "v"}
				}
				r := c.do(w.method, w.path, body)
				if tt.status != http.StatusOK {
					r.mustError(t, tt.status, client.CodeUnavailable, "")
					continue
				}
				if r.status != http.StatusOK && r.status != http.StatusCreated {
					t.Fatalf("%s %s: %d %s", w.method, w.path, r.status, r.raw)
				}
				if got := strs(r.body["enforced_by"]); !equal(got, tt.enforced) {
					t.Errorf("%s %s: enforced_by %v, want %v", w.method, w.path, got, tt.enforced)
				}
				if got := strs(r.body["lagging"]); !equal(got, tt.lagging) {
					t.Errorf("%s %s: lagging %v, want %v", w.method, w.path, got, tt.lagging)
				}
			}
			// The write is stored whatever the fleet says.
			if got := c.do("GET", "/v1/egress/vm/v", nil).must(t, http.StatusOK); got["allow_https"] != true {
				t.Errorf("the policy written with wait=fleet is not stored: %v", got)
			}
		})
	}
}

// TestWriteNotEnforcedInTime: a write that this node's gateway does not apply within the
// wait is a 503 that says the change is stored (a policy, a deletion) or was taken back (a
// creation, so that no session is left whose one-time proxy token nobody saw).
func TestWriteNotEnforcedInTime(t *testing.T) {
	c, st := inProcess(t, api.Config{Enforcer: stuckView{}, WaitTimeout: 100 * time.Millisecond}, false)
	// Made in the store directly, since creating through the API waits for the stuck view.
	// The admin key's tenant is "default".
	ctx := context.Background()
	if _, err := st.CreateVM(ctx, store.VM{Tenant: "default", ID: "v", Network: store.Network{Mode: "none"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSession(ctx, store.Session{Tenant: "default", ID: "ses_x", VMID: "v", TokenHash: []byte("h")}); err != nil {
		t.Fatal(err)
	}

	msg := c.do("POST", "/v1/egress/vm/v", map[string]any{"allow_https": true}).mustError(t, http.StatusServiceUnavailable, client.CodeUnavailable, "")
	if !strings.Contains(msg, "stored") || !strings.Contains(msg, "/readyz") {
		t.Errorf("message %q does not say the change is stored and where to look", msg)
	}
	if got := c.do("GET", "/v1/egress/vm/v", nil).must(t, http.StatusOK); got["allow_https"] != true {
		t.Errorf("the policy is not stored: %v", got)
	}

	msg = c.do("POST", "/v1/sessions", map[string]any{"vm_id": "v"}).mustError(t, http.StatusServiceUnavailable, client.CodeUnavailable, "")
	if !strings.Contains(msg, "not created") {
		t.Errorf("message %q does not say the session was not created", msg)
	}
	if n := len(c.do("GET", "/v1/sessions?vm_id=v", nil).must(t, http.StatusOK)["sessions"].([]any)); n != 1 {
		t.Errorf("%d sessions on v, want the 1 made before: a session nobody can use was left", n)
	}
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "w"}).mustError(t, http.StatusServiceUnavailable, client.CodeUnavailable, "")
	c.do("GET", "/v1/vms/w", nil).mustError(t, http.StatusNotFound, client.CodeNotFound, "")

	c.do("DELETE", "/v1/sessions/ses_x", nil).mustError(t, http.StatusServiceUnavailable, client.CodeUnavailable, "")
	c.do("GET", "/v1/sessions/ses_x", nil).mustError(t, http.StatusNotFound, client.CodeNotFound, "")
}

// TestAPIOnlyNodeAnswersWhenDurable: a node without a gateway (--role api) has no view to
// wait for; without a fleet, wait=fleet names no node.
func TestAPIOnlyNodeAnswersWhenDurable(t *testing.T) {
	c, _ := inProcess(t, api.Config{Status: api.StatusConfig{NodeID: "api1"}}, true)
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)
	got := c.do("POST", "/v1/egress/vm/v?wait=fleet", map[string]any{"allow_https": true}).must(t, http.StatusOK)
	if by, ok := got["enforced_by"].([]any); !ok || len(by) != 0 {
		t.Errorf("enforced_by on an API-only node without a fleet = %v, want []", got["enforced_by"])
	}
	c.do("DELETE", "/v1/egress/vm/v", nil).must(t, http.StatusNoContent)
}

// TestSDKWaitFleet: the Go SDK's WithWaitFleet against the server.
func TestSDKWaitFleet(t *testing.T) {
	fleet := &fakeFleet{nodes: func(int) ([]api.NodeState, error) {
		return []api.NodeState{{ID: "gw2", Roles: []string{"gateway"}, Revision: 1 << 40, Up: true}}, nil
	}}
	raw, _ := inProcess(t, api.Config{Fleet: fleet, Status: api.StatusConfig{NodeID: "self"}}, false)
	c, err := client.New(raw.base, raw.key, client.WithWaitFleet())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	vm, err := c.CreateVM(ctx, client.CreateVMRequest{VMID: "v"})
	if err != nil || vm.Enforcement == nil || !equal(vm.EnforcedBy, []string{"gw2", "self"}) {
		t.Fatalf("CreateVM = %+v, %v; want enforced by gw2 and self", vm, err)
	}
	p, err := c.SetVMPolicy(ctx, "v", policy.Policy{AllowHTTPS: true})
	if err != nil || p.Enforcement == nil || !equal(p.EnforcedBy, []string{"gw2", "self"}) || len(p.Lagging) != 0 {
		t.Fatalf("SetVMPolicy = %+v, %v", p, err)
	}
	if err := c.DeleteVM(ctx, "v"); err != nil {
		t.Fatal(err)
	}
}
