package api_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/policy"
)

func goClient(t *testing.T, in *egressdtest.Instance, key string) *client.Client {
	t.Helper()
	c, err := client.New(in.URL, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sandbox makes a VM and a session on it whose own policy allows nothing, and returns the
// session.
func sandbox(t *testing.T, c *client.Client, vmID string) *client.Session {
	t.Helper()
	ctx := context.Background()
	if _, err := c.CreateVM(ctx, client.CreateVMRequest{VMID: vmID}); err != nil {
		t.Fatal(err)
	}
	s, err := c.CreateSession(ctx, client.CreateSessionRequest{VMID: vmID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetSessionPolicy(ctx, s.SessionID, policy.Policy{}); err != nil {
		t.Fatal(err)
	}
	return s
}

// waitClosed waits (bounded) until the peer closes conn or cuts it.
func waitClosed(t *testing.T, conn net.Conn, what string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	buf := make([]byte, 64)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s: the tunnel is still open", what)
		}
		return // EOF or reset: cut
	}
}

// connectRefused reports whether the proxy refuses a CONNECT to target now.
func connectRefused(t *testing.T, proxyURL, target string) string {
	t.Helper()
	u := strings.TrimPrefix(proxyURL, "http://")
	at := strings.LastIndexByte(u, '@')
	creds, host := u[:at], u[at+1:]
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := http.NewRequest(http.MethodConnect, "http://"+target, nil)
	req.Host = target
	user, pass, _ := strings.Cut(creds, ":")
	req.SetBasicAuth(user, pass)
	req.Header.Set("Proxy-Authorization", req.Header.Get("Authorization"))
	req.Header.Del("Authorization")
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, _ := io.ReadAtLeast(conn, buf, 12)
	status := string(buf[:n])
	if strings.HasPrefix(status, "HTTP/1.1 200") {
		return ""
	}
	return status
}

// TestGrantExpiryCutsTunnel: a grant on a session that allows nothing opens a tunnel
// through the explicit proxy (real loopback), the event names the grant, and at expiry
// the tunnel is cut and a new CONNECT refused.
func TestGrantExpiryCutsTunnel(t *testing.T) {
	in := egressdtest.Start(t, egressdtest.TunnelArgs()...)
	c := goClient(t, in, in.AdminKey)
	ctx := context.Background()
	s := sandbox(t, c, "v")
	target := egressdtest.Echo(t, "127.0.0.2")
	if status := connectRefused(t, s.ProxyURL, target); status == "" {
		t.Fatal("the proxy allows the target before any grant")
	}
	g, err := c.CreateGrant(ctx, client.GrantSession, s.SessionID, client.GrantRequest{CIDRs: []string{"127.0.0.2"}, TTLSeconds: 3, Note: "debugging"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(g.ID, "gr_") || g.CIDRs[0] != "127.0.0.2/32" || g.Note != "debugging" || !g.ExpiresAt.Equal(g.CreatedAt.Add(3*time.Second)) {
		t.Fatalf("grant = %+v", g)
	}
	// Enforced when answered: no retry needed.
	if status := connectRefused(t, s.ProxyURL, target); status != "" {
		t.Fatalf("refused right after the grant was answered: %s", status)
	}
	tunnel := egressdtest.Connect(t, s.ProxyURL, target)
	if time.Now().After(g.ExpiresAt) {
		t.Skip("the machine is too slow for a 3 s grant to outlive the setup")
	}
	t0 := time.Now()
	waitClosed(t, tunnel, "expiry")
	t.Logf("cut %v after the expiry (waited %v)", time.Since(g.ExpiresAt), time.Since(t0))
	if status := connectRefused(t, s.ProxyURL, target); status == "" {
		t.Error("a CONNECT is allowed after the grant expired")
	}
	list, err := c.ListGrants(ctx, client.GrantSession, s.SessionID)
	if err != nil || len(list) != 0 {
		t.Errorf("grants after expiry: %+v, %v", list, err)
	}
	evs, err := c.Events(ctx, client.EventsFilter{SessionID: s.SessionID, Decision: "allow"})
	if err != nil {
		t.Fatal(err)
	}
	named := false
	for _, e := range evs {
		if e.Rule == "grant "+g.ID+": allowed_cidrs 127.0.0.2/32" {
			named = true
		}
	}
	if !named {
		t.Errorf("no allow event names the grant: %+v", evs)
	}
}

// TestGrantsAPI: validation names the field, tenant isolation, list and revoke, on both
// scopes.
func TestGrantsAPI(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)
	gc := goClient(t, in, in.AdminKey)
	s := sandbox(t, gc, "v")
	for _, base := range []string{"/v1/egress/session/" + s.SessionID + "/grants", "/v1/egress/vm/v/grants"} {
		for _, tc := range []struct {
			body  any
			code  string
			field string
		}{
			{map[string]any{"tcp": []string{"github.com:22"}}, client.CodeBadRequest, "ttl_seconds"},
			{map[string]any{"tcp": []string{"github.com:22"}, "ttl_seconds": 0}, client.CodeBadRequest, "ttl_seconds"},
			{map[string]any{"tcp": []string{"github.com:22"}, "ttl_seconds": 86401}, client.CodeBadRequest, "ttl_seconds"},
			{map[string]any{"tcp": []string{"github.com:22"}, "ttl_seconds": -5}, client.CodeBadRequest, "ttl_seconds"},
			{map[string]any{"ttl_seconds": 60}, client.CodeBadRequest, ""},
			{map[string]any{"domains": []string{}, "ttl_seconds": 60}, client.CodeBadRequest, ""},
			{map[string]any{"domains": []string{"ok.test", "bad domain"}, "ttl_seconds": 60}, client.CodeBadRequest, "domains[1]"},
			{map[string]any{"tcp": []string{"github.com"}, "ttl_seconds": 60}, client.CodeBadRequest, "tcp[0]"},
			{map[string]any{"tcp": []string{"203.0.113.1:22"}, "ttl_seconds": 60}, client.CodeBadRequest, "tcp[0]"},
			{map[string]any{"cidrs": []string{"198.51.100.1/24"}, "ttl_seconds": 60}, client.CodeBadRequest, "cidrs[0]"},
			{map[string]any{"cidrs": []string{"198.51.100.0/24"}, "ttl_seconds": 60, "note": "a\nb"}, client.CodeBadRequest, "note"},
			{map[string]any{"cidrs": []string{"198.51.100.0/24"}, "ttl_seconds": 60, "note": strings.Repeat("x", 1025)}, client.CodeBadRequest, "note"},
			{map[string]any{"cidrs": []string{"198.51.100.0/24"}, "ttl": 60}, client.CodeBadRequest, "ttl"},
			{`{"cidrs": ["198.51.100.0/24"], "ttl_seconds": 60, "ttl_seconds": 61}`, client.CodeBadRequest, "ttl_seconds"},
			{`{"cidrs": null, "ttl_seconds": 60}`, client.CodeBadRequest, ""}, // null is left out: the grant is empty
		} {
			c.do("POST", base, tc.body).mustError(t, http.StatusBadRequest, tc.code, tc.field)
		}
		if l := strs(c.do("GET", base, nil).must(t, http.StatusOK)["grants"]); len(l) != 0 {
			t.Errorf("%s: a refused grant was stored: %v", base, l)
		}
		g := c.do("POST", base, map[string]any{"domains": []string{"Example.COM"}, "tcp": []string{"GitHub.com:22"}, "ttl_seconds": 600}).must(t, http.StatusOK)
		id, _ := g["id"].(string)
		if strs(g["domains"])[0] != "example.com" || strs(g["tcp"])[0] != "github.com:22" || len(strs(g["cidrs"])) != 0 || g["expires_at"] == nil {
			t.Errorf("%s: answer %v", base, g)
		}
		if ws := strs(g["warnings"]); len(ws) == 0 {
			t.Errorf("%s: no warning for domains on a layer whose web flags are off, or without a policy: %v", base, g)
		}
		list := c.do("GET", base, nil).must(t, http.StatusOK)["grants"].([]any)
		if len(list) != 1 || list[0].(map[string]any)["id"] != id {
			t.Errorf("%s: list %v", base, list)
		}
		// Another tenant sees none of it.
		key, err := gc.CreateAPIKey(context.Background(), client.CreateAPIKeyRequest{Tenant: "other-" + strings.ReplaceAll(base[11:14], "/", "")})
		if err != nil {
			t.Fatal(err)
		}
		other := newClient(t, in, key.Key)
		other.do("GET", base, nil).mustError(t, http.StatusNotFound, client.CodeNotFound, "")
		other.do("POST", base, map[string]any{"tcp": []string{"a.test:1"}, "ttl_seconds": 60}).mustError(t, http.StatusNotFound, client.CodeNotFound, "")
		other.do("DELETE", base+"/"+id, nil).mustError(t, http.StatusNotFound, client.CodeNotFound, "")
		if r := c.do("DELETE", base+"/"+id, nil); r.status != http.StatusNoContent {
			t.Errorf("%s: revoke: %d %s", base, r.status, r.raw)
		}
		c.do("DELETE", base+"/"+id, nil).mustError(t, http.StatusNotFound, client.CodeNotFound, "")
		c.do("DELETE", base+"/gr_nope", nil).mustError(t, http.StatusNotFound, client.CodeNotFound, "")
	}
	c.do("POST", "/v1/egress/session/nope/grants", map[string]any{"tcp": []string{"a.test:1"}, "ttl_seconds": 60}).mustError(t, http.StatusNotFound, client.CodeNotFound, "")
	c.do("GET", "/v1/egress/vm/nope/grants", nil).mustError(t, http.StatusNotFound, client.CodeNotFound, "")
	// wait=fleet on one node answers which node enforces it.
	g := c.do("POST", "/v1/egress/vm/v/grants?wait=fleet", map[string]any{"tcp": []string{"a.test:1"}, "ttl_seconds": 60}).must(t, http.StatusOK)
	if len(strs(g["enforced_by"])) != 1 {
		t.Errorf("wait=fleet: %v", g)
	}
	c.do("POST", "/v1/egress/vm/v/grants?wait=never", map[string]any{"tcp": []string{"a.test:1"}, "ttl_seconds": 60}).mustError(t, http.StatusBadRequest, client.CodeBadRequest, "wait")
}

// TestGrantsAcrossRestart: after a restart, an unexpired grant still allows and an expired
// one does not; the session grant cannot loosen the VM layer.
func TestGrantsAcrossRestart(t *testing.T) {
	in := egressdtest.Start(t, egressdtest.TunnelArgs()...)
	c := goClient(t, in, in.AdminKey)
	ctx := context.Background()
	s := sandbox(t, c, "v")
	long, short := egressdtest.Echo(t, "127.0.0.2"), egressdtest.Echo(t, "127.0.0.3")
	if _, err := c.CreateGrant(ctx, client.GrantSession, s.SessionID, client.GrantRequest{CIDRs: []string{"127.0.0.2"}, TTLSeconds: 3600}); err != nil {
		t.Fatal(err)
	}
	sg, err := c.CreateGrant(ctx, client.GrantSession, s.SessionID, client.GrantRequest{CIDRs: []string{"127.0.0.3"}, TTLSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	in.Stop()
	for time.Now().Before(sg.ExpiresAt.Add(50 * time.Millisecond)) {
		time.Sleep(20 * time.Millisecond) // bounded: the grant lives 1 s
	}
	in.Restart()
	if status := connectRefused(t, s.ProxyURL, long); status != "" {
		t.Errorf("the unexpired grant is gone after a restart: %s", status)
	}
	if status := connectRefused(t, s.ProxyURL, short); status == "" {
		t.Error("the expired grant allows after a restart")
	}
	list, err := c.ListGrants(ctx, client.GrantSession, s.SessionID)
	if err != nil || len(list) != 1 || list[0].CIDRs[0] != "127.0.0.2/32" {
		t.Errorf("grants after a restart: %+v, %v", list, err)
	}
	// A VM policy that does not allow the target: the session grant does not loosen it.
	if _, err := c.SetVMPolicy(ctx, "v", policy.Policy{AllowHTTPS: true}); err != nil {
		t.Fatal(err)
	}
	if status := connectRefused(t, s.ProxyURL, long); status == "" {
		t.Error("a session grant let through what the VM policy denies")
	}
	// Granting on the layer that denied lets it through.
	if _, err := c.CreateGrant(ctx, client.GrantVM, "v", client.GrantRequest{CIDRs: []string{"127.0.0.2"}, TTLSeconds: 60}); err != nil {
		t.Fatal(err)
	}
	if status := connectRefused(t, s.ProxyURL, long); status != "" {
		t.Errorf("refused with a grant on both layers: %s", status)
	}
}

// TestGrantsInCheckAndEffective: /check answers what the gateway does with a grant (the rule
// names it), and /effective lists the layer's grants with their entries in the values.
func TestGrantsInCheckAndEffective(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)
	s := sandbox(t, goClient(t, in, in.AdminKey), "v")
	base := "/v1/egress/session/" + s.SessionID
	check := func() map[string]any {
		return c.do("POST", base+"/check", map[string]any{"host": "github.com", "port": 22}).must(t, http.StatusOK)
	}
	if d := check(); d["decision"] != "deny" {
		t.Fatalf("before the grant: %v", d)
	}
	g := c.do("POST", base+"/grants", map[string]any{"tcp": []string{"github.com:22"}, "ttl_seconds": 600}).must(t, http.StatusOK)
	id := g["id"].(string)
	if d := check(); d["decision"] != "allow" || d["rule"] != "grant "+id+": allowed_tcp github.com:22" || d["layer"] != "session" {
		t.Errorf("check with the grant: %v", d)
	}
	eff := c.do("GET", base+"/effective", nil).must(t, http.StatusOK)
	if got := strs(eff["allowed_tcp"].(map[string]any)["value"]); !equal(got, []string{"github.com:22"}) {
		t.Errorf("effective allowed_tcp: %v", got)
	}
	layers := eff["layers"].([]any)
	grants, _ := layers[0].(map[string]any)["grants"].([]any)
	if len(grants) != 1 || grants[0].(map[string]any)["id"] != id {
		t.Errorf("effective layers: %v", layers)
	}
	c.do("DELETE", base+"/grants/"+id, nil)
	if d := check(); d["decision"] != "deny" {
		t.Errorf("after revoking: %v", d)
	}
}
