package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// secretWeb is the fake API origin of the namespace interception test.
const secretWeb = "203.0.113.20"

// TestInterceptionTransparent: in the namespace lab, curl inside a sandbox that knows nothing
// of proxies, with only the placeholder, reaches the origin with the secret's value through
// the transparent gateway; the placeholder toward another intercepted host is refused; a
// path rule denies; plain HTTP with the placeholder is refused.
func TestInterceptionTransparent(t *testing.T) {
	l := newGWLab(t)
	ipCmd(t, "-n", l.inetNS, "addr", "add", secretWeb+"/32", "dev", "lo")
	var mu sync.Mutex
	var auths []string
	testnet.StartWebOn(t, testnet.In("/run/netns/"+l.inetNS), secretWeb, l.ca, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Host+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		io.WriteString(w, "origin "+r.Host+" "+r.URL.Path+"\n")
	}))
	for _, name := range []string{"api.secret.test", "other.secret.test"} {
		l.dns.Set(name, secretWeb)
	}
	ctx := context.Background()
	const value = "sk-ns-value-0123456789abcdefghij"
	sec, err := l.api.CreateSecret(ctx, client.CreateSecretRequest{Name: "ns_key", Value: value, Domains: []string{"api.secret.test"}})
	if err != nil {
		t.Fatal(err)
	}
	pem, err := l.api.CAPEM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ixCA := filepath.Join(t.TempDir(), "egressd-ca.pem")
	if err := os.WriteFile(ixCA, pem, 0o644); err != nil {
		t.Fatal(err)
	}
	vm := l.vm("ix", &policy.Policy{AllowHTTPS: true, AllowHTTP: true,
		AllowedDomains: []string{"api.secret.test", "other.secret.test"},
		HTTPRules: []policy.HTTPRule{
			{Domain: "api.secret.test", Paths: []string{"/v1/"}},
			{Domain: "other.secret.test"},
		}})
	curl := func(args ...string) string {
		t.Helper()
		out, code := l.run(vm, 20*time.Second, "curl", append([]string{"-sS", "--connect-timeout", "3", "--max-time", "10", "--cacert", ixCA,
			"-o", "/dev/null", "-w", "%{http_code}"}, args...)...)
		if code != 0 {
			t.Fatalf("curl %v: exit %d\n%s", args, code, out)
		}
		return out
	}
	bearer := "Authorization: Bearer " + sec.Placeholder
	for _, v := range []string{"--http1.1", "--http2"} {
		if got := curl(v, "-H", bearer, "https://api.secret.test/v1/models"); got != "200" {
			t.Fatalf("%s: %s", v, got)
		}
		mu.Lock()
		last := auths[len(auths)-1]
		mu.Unlock()
		if last != "api.secret.test /v1/models Bearer "+value {
			t.Fatalf("%s: the origin got %q", v, last)
		}
	}
	mu.Lock()
	before := len(auths)
	mu.Unlock()
	if got := curl("-H", bearer, "https://other.secret.test/v1/models"); got != "403" {
		t.Errorf("placeholder toward another host: %s", got)
	}
	if got := curl("https://api.secret.test/admin"); got != "403" {
		t.Errorf("a path outside the rule: %s", got)
	}
	if got := curl("-H", bearer, "http://api.secret.test/v1/models"); got != "403" {
		t.Errorf("placeholder over plain HTTP: %s", got)
	}
	mu.Lock()
	after := auths[before:]
	mu.Unlock()
	if len(after) != 0 {
		t.Errorf("the origin got refused requests: %q", after)
	}
	evs, err := l.api.Events(ctx, client.EventsFilter{VMID: vm.VMID, Kind: client.EventRequest, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range evs {
		reasons = append(reasons, e.Method+" "+e.Path+" "+e.Reason)
	}
	for _, want := range []string{"GET /v1/models http_rules", "GET /v1/models secret_not_for_host", "GET /admin path_not_allowed"} {
		if !strings.Contains(strings.Join(reasons, "\n"), want) {
			t.Errorf("no request event %q among %q", want, reasons)
		}
	}
	if strings.Contains(l.in.Log(), value) {
		t.Error("the log holds the value")
	}
}
