package api_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

// originIP is a loopback address inside the --public-cidrs these tests pass and outside
// egressd's own listening address (127.0.0.1), so that allowed_cidrs can open it.
const originIP = "127.0.0.3"

// startOrigin serves "ok" on originIP.
func startOrigin(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", originIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestWritesAreEnforcedWhenAnswered (DESIGN §3): once a write to a policy, a session or a VM
// is answered, the next connection through the explicit proxy, and /check, obey it. Fifty
// writes alternate between allowing and denying one origin; after each, a new connection
// (no keep-alive) is made at once.
func TestWritesAreEnforcedWhenAnswered(t *testing.T) {
	origin := startOrigin(t)
	port := mustPort(t, origin)
	in := egressdtest.Start(t, "--public-cidrs", "127.0.0.0/26")
	c := newClient(t, in, in.AdminKey)
	allow := map[string]any{"allowed_cidrs": []string{originIP + "/32"}}

	vm, sid, proxyURL := "enforced", "", ""
	newSession := func() {
		se := c.do("POST", "/v1/sessions", map[string]any{"vm_id": vm}).must(t, http.StatusCreated)
		sid, proxyURL = se["session_id"].(string), se["proxy_url"].(string)
	}
	c.do("POST", "/v1/vms", map[string]any{"vm_id": vm}).must(t, http.StatusCreated)
	newSession()

	// want is what the session that the test holds gets after the write: "allow", "deny",
	// or "gone" (its credentials no longer work).
	steps := []struct {
		name  string
		write func()
		want  string
	}{
		{"set the session policy", func() { c.do("POST", "/v1/egress/session/"+sid, allow).must(t, http.StatusOK) }, "allow"},
		{"clear the session policy", func() { c.do("DELETE", "/v1/egress/session/"+sid, nil).must(t, http.StatusNoContent) }, "deny"},
		{"set the VM policy", func() { c.do("POST", "/v1/egress/vm/"+vm, allow).must(t, http.StatusOK) }, "allow"},
		{"narrow by a session policy", func() { c.do("POST", "/v1/egress/session/"+sid, map[string]any{}).must(t, http.StatusOK) }, "deny"},
		{"end the session", func() { c.do("DELETE", "/v1/sessions/"+sid, nil).must(t, http.StatusNoContent) }, "gone"},
		{"start a session", newSession, "allow"},
		{"clear the VM policy", func() { c.do("DELETE", "/v1/egress/vm/"+vm, nil).must(t, http.StatusNoContent) }, "deny"},
		{"delete the VM", func() { c.do("DELETE", "/v1/vms/"+vm, nil).must(t, http.StatusNoContent) }, "gone"},
		{"create the VM with a policy", func() {
			c.do("POST", "/v1/vms", map[string]any{"vm_id": vm, "egress_policy": allow}).must(t, http.StatusCreated)
		}, "gone"},
		{"start a session on it", newSession, "allow"},
		{"clear the new VM's policy", func() { c.do("DELETE", "/v1/egress/vm/"+vm, nil).must(t, http.StatusNoContent) }, "deny"},
	}
	for i := range 50 {
		step := steps[i%len(steps)]
		step.write()
		what := fmt.Sprintf("write %d (%s)", i, step.name)
		if got := proxied(t, proxyURL, "http://"+origin+"/"); got != step.want {
			t.Fatalf("%s: the next connection through the proxy was %s, want %s", what, got, step.want)
		}
		if step.want == "gone" {
			continue
		}
		res := c.do("POST", "/v1/egress/session/"+sid+"/check", map[string]any{"ip": originIP, "port": port, "transport": "tcp"}).must(t, http.StatusOK)
		if res["decision"] != step.want {
			t.Fatalf("%s: /check says %v, want %s", what, res["decision"], step.want)
		}
	}
}

func mustPort(t *testing.T, hostport string) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	return int(ap.Port())
}

// proxied makes one new connection through the explicit proxy and says how it went:
// "allow", "deny" or "gone" (407: the proxy knows no such session).
func proxied(t *testing.T, proxyURL, target string) string {
	t.Helper()
	u, err := url.Parse(proxyURL)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}}
	resp, err := hc.Get(target)
	if err != nil {
		t.Fatalf("GET %s through the proxy: %v", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	switch {
	case resp.StatusCode == http.StatusOK && string(body) == "ok":
		return "allow"
	case resp.StatusCode == http.StatusForbidden && resp.Header.Get("X-Egress-Decision") == "deny":
		return "deny"
	case resp.StatusCode == http.StatusProxyAuthRequired:
		return "gone"
	}
	t.Fatalf("GET %s through the proxy: %d %s", target, resp.StatusCode, strings.TrimSpace(string(body)))
	return ""
}

// TestLoopbackWarningRespectsPublicCIDRs: allowed_cidrs inside --public-cidrs opens a range
// that egressd treats as public, so the answer carries no hard-denial warning for it; a
// loopback range outside still gets one (issue 9, item 8).
func TestLoopbackWarningRespectsPublicCIDRs(t *testing.T) {
	in := egressdtest.Start(t, "--public-cidrs", "127.0.0.0/26")
	c := newClient(t, in, in.AdminKey)
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)
	for _, tc := range []struct {
		cidr string
		warn bool
	}{
		{originIP + "/32", false},
		{"127.0.0.0/26", false},
		{"127.0.0.100/32", true},
		{"127.0.0.0/24", true},
	} {
		for _, method := range []string{"POST", "GET"} {
			var got map[string]any
			if method == "POST" {
				got = c.do("POST", "/v1/egress/vm/v", map[string]any{"allowed_cidrs": []string{tc.cidr}}).must(t, http.StatusOK)
			} else {
				got = c.do("GET", "/v1/egress/vm/v", nil).must(t, http.StatusOK)
			}
			warned := strings.Contains(strings.Join(strs(got["warnings"]), "\n"), "loopback")
			if warned != tc.warn {
				t.Errorf("%s with allowed_cidrs %s: warnings %q, want a loopback warning: %v", method, tc.cidr, got["warnings"], tc.warn)
			}
		}
	}
	// The same through VM creation.
	vm := c.do("POST", "/v1/vms", map[string]any{"vm_id": "w", "egress_policy": map[string]any{"allowed_cidrs": []string{originIP}}}).must(t, http.StatusCreated)
	if ws := strs(vm["egress_policy"].(map[string]any)["warnings"]); len(ws) != 0 {
		t.Errorf("VM created with allowed_cidrs %s: warnings %q, want none", originIP, ws)
	}
}

// TestWaitParameter: wait=fleet on a node without a fleet waits for this node and says so;
// any other value is refused before anything is written.
func TestWaitParameter(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)

	for _, q := range []string{"?wait=all", "?wait=", "?wait=Fleet", "?wait=fleet&wait=local"} {
		c.do("POST", "/v1/egress/vm/v"+q, map[string]any{"allow_https": true}).mustError(t, http.StatusBadRequest, client.CodeBadRequest, "wait")
		c.do("DELETE", "/v1/vms/v"+q, nil).mustError(t, http.StatusBadRequest, client.CodeBadRequest, "wait")
	}
	c.do("GET", "/v1/egress/vm/v", nil).mustError(t, http.StatusNotFound, client.CodeNotSet, "")
	// API keys too: every node reads them from the store, so they need no wait, but a wait
	// that is not known is the caller's mistake there as anywhere.
	key := c.do("POST", "/v1/api-keys?wait=fleet", map[string]any{"tenant": "w"}).must(t, http.StatusCreated)
	keyID, _ := key["id"].(string)
	for _, q := range []string{"?wait=all", "?wait=", "?wait=Fleet", "?wait=fleet&wait=fleet"} {
		c.do("POST", "/v1/api-keys"+q, map[string]any{"tenant": "w"}).mustError(t, http.StatusBadRequest, client.CodeBadRequest, "wait")
		c.do("DELETE", "/v1/api-keys/"+keyID+q, nil).mustError(t, http.StatusBadRequest, client.CodeBadRequest, "wait")
	}
	if keys := c.do("GET", "/v1/api-keys", nil).must(t, http.StatusOK); len(keys["keys"].([]any)) != 2 {
		t.Errorf("keys after refused writes: %v, want the admin key and the one made with wait=fleet", keys["keys"])
	}
	c.do("DELETE", "/v1/api-keys/"+keyID+"?wait=fleet", nil).must(t, http.StatusNoContent)

	got := c.do("POST", "/v1/egress/vm/v?wait=fleet", map[string]any{"allow_https": true}).must(t, http.StatusOK)
	if by := strs(got["enforced_by"]); len(by) != 1 || by[0] == "" || got["lagging"] != nil {
		t.Errorf("wait=fleet on one node: enforced_by %v, lagging %v; want this node only", got["enforced_by"], got["lagging"])
	}
	if plain := c.do("POST", "/v1/egress/vm/v", map[string]any{"allow_https": true}).must(t, http.StatusOK); plain["enforced_by"] != nil {
		t.Errorf("enforced_by without wait=fleet: %v", plain["enforced_by"])
	}
	del := c.do("DELETE", "/v1/egress/vm/v?wait=fleet", nil).must(t, http.StatusOK)
	if len(strs(del["enforced_by"])) != 1 {
		t.Errorf("DELETE with wait=fleet: %s, want 200 with enforced_by", del)
	}
}
