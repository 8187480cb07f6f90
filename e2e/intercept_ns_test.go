package e2e

import (
	"context"
	"fmt"
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

// TestInterceptionTransparent: in the namespace lab, curl (HTTP/1.1 and HTTP/2) and Python
// urllib inside a sandbox that knows nothing of proxies, with only the placeholder, reach the
// origin with the secret's value through the transparent gateway; the placeholder toward
// another intercepted host is refused; method and path rules allow and deny; plain HTTP with
// the placeholder is refused; another host on an intercepted connection gets 421; rotation
// applies to the next request; deleting the secret and removing the http_rule each cut an
// open intercepted connection.
func TestInterceptionTransparent(t *testing.T) { eachGWMode(t, testInterceptionTransparent) }

func testInterceptionTransparent(t *testing.T, m gwMode) {
	l := newGWLab(t, m.args...)
	ipCmd(t, "-n", l.inetNS, "addr", "add", secretWeb+"/32", "dev", "lo")
	var mu sync.Mutex
	var auths []string
	testnet.StartWebOn(t, testnet.In("/run/netns/"+l.inetNS), secretWeb, l.ca, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Host+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		if r.URL.Path == "/v1/slow" {
			slowBody(w)
			return
		}
		io.WriteString(w, "origin "+r.Host+" "+r.URL.Path+"\n")
	}))
	for _, name := range []string{"api.secret.test", "other.secret.test", "cut.secret.test", "rule.secret.test"} {
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
	rules := []policy.HTTPRule{
		{Domain: "api.secret.test", Methods: []string{"GET"}, Paths: []string{"/v1/"}},
		{Domain: "other.secret.test"},
	}
	vmPolicy := func(rules ...policy.HTTPRule) policy.Policy {
		return policy.Policy{AllowHTTPS: true, AllowHTTP: true,
			AllowedDomains: []string{"api.secret.test", "other.secret.test", "cut.secret.test", "rule.secret.test"},
			HTTPRules:      rules}
	}
	p := vmPolicy(append(rules, policy.HTTPRule{Domain: "rule.secret.test"})...)
	vm := l.vm("ix", &p)
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
	// Intercepted names keep going through the proxy with the fast path on.
	l.notCarried(t, vm, "api.secret.test", func() {
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
	})
	mu.Lock()
	before := len(auths)
	mu.Unlock()
	if got := curl("-H", bearer, "https://other.secret.test/v1/models"); got != "403" {
		t.Errorf("placeholder toward another host: %s", got)
	}
	if got := curl("https://api.secret.test/admin"); got != "403" {
		t.Errorf("a path outside the rule: %s", got)
	}
	if got := curl("-X", "POST", "https://api.secret.test/v1/models"); got != "403" {
		t.Errorf("a method outside the rule: %s", got)
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
	for _, want := range []string{"GET /v1/models http_rules", "GET /v1/models secret_not_for_host", "GET /admin path_not_allowed", "POST /v1/models method_not_allowed"} {
		if !strings.Contains(strings.Join(reasons, "\n"), want) {
			t.Errorf("no request event %q among %q", want, reasons)
		}
	}
	nsLive(t, l, vm, ixCA, sec.Placeholder, value, func() { l.setVM("ix", vmPolicy(rules...)) }, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), auths...)
	})
	if strings.Contains(l.in.Log(), value) {
		t.Error("the log holds the value")
	}
}

// slowBody writes 300 KiB over 6 s, unless the connection is cut first: the long download
// that a live change must end.
func slowBody(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain")
	chunk := strings.Repeat("s", 1024)
	for i := 0; i < 300; i++ {
		if _, err := io.WriteString(w, chunk); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		time.Sleep(20 * time.Millisecond)
	}
}

// nsLive shows, from inside the sandbox of TestInterceptionTransparent, what the explicit
// proxy test shows: Python urllib with only the placeholder; 421 for another host on an
// intercepted connection (an HTTP/1.1 Host, an HTTP/2 :authority); rotation applying to the
// next request; deleting the secret and removing the http_rule each cutting an open
// intercepted connection. removeRule takes rule.secret.test's http_rule out of the VM's
// policy; origin is what the origin received ("host path authorization").
func nsLive(t *testing.T, l *gwLab, vm *client.VM, ixCA, ph, value string,
	removeRule func(), origin func() []string) {
	ctx := context.Background()
	const value2 = "sk-ns-rotated-fedcba9876543210zyx"
	last := func() string {
		got := origin()
		if len(got) == 0 {
			return ""
		}
		return got[len(got)-1]
	}
	t.Run("Python urllib", func(t *testing.T) {
		const script = `
import os, urllib.request
req = urllib.request.Request("https://api.secret.test/v1/py", headers={"Authorization": "Bearer " + os.environ["API_KEY"]})
print(urllib.request.urlopen(req, timeout=10).read().decode(), end="")
`
		// SSL_CERT_FILE: the sandbox trusts egressd's CA, not the fake internet's.
		out, code := l.run(vm, 20*time.Second, "env", "SSL_CERT_FILE="+ixCA, "API_KEY="+ph, "python3", "-c", script)
		if code != 0 || !strings.Contains(out, "origin api.secret.test /v1/py") {
			t.Fatalf("python: exit %d\n%s", code, out)
		}
		if got := last(); got != "api.secret.test /v1/py Bearer "+value {
			t.Fatalf("the origin got %q", got)
		}
	})
	t.Run("another host on the connection", func(t *testing.T) {
		before := len(origin())
		for v, want := range map[string]string{"--http1.1": "421 1.1", "--http2": "421 2"} {
			// curl sends -H Host as the HTTP/1.1 Host and as the HTTP/2 :authority; the
			// TLS name stays api.secret.test.
			out, code := l.run(vm, 20*time.Second, "curl", "-sS", "--connect-timeout", "3", "--max-time", "10", "--cacert", ixCA,
				"-o", "/dev/null", "-w", "%{http_code} %{http_version}", v, "-H", "Host: other.secret.test",
				"-H", "Authorization: Bearer "+ph, "https://api.secret.test/v1/x")
			if code != 0 || out != want {
				t.Errorf("%s: exit %d %q, want %q", v, code, out, want)
			}
		}
		if got := origin(); len(got) != before {
			t.Errorf("the origin got %q", got[before:])
		}
	})
	t.Run("rotation applies to the next request", func(t *testing.T) {
		if _, err := l.api.RotateSecret(ctx, "ns_key", value2); err != nil {
			t.Fatal(err)
		}
		out, code := l.run(vm, 20*time.Second, "curl", "-sS", "--connect-timeout", "3", "--max-time", "10", "--cacert", ixCA,
			"-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer "+ph, "https://api.secret.test/v1/rotated")
		if code != 0 || out != "200" {
			t.Fatalf("exit %d %q", code, out)
		}
		if got := last(); got != "api.secret.test /v1/rotated Bearer "+value2 {
			t.Fatalf("the origin got %q, want the new value", got)
		}
	})
	t.Run("deleting the secret cuts the connection", func(t *testing.T) {
		if _, err := l.api.CreateSecret(ctx, client.CreateSecretRequest{Name: "ns_cutter", Value: "ns-cut-value-0123456789", Domains: []string{"cut.secret.test"}}); err != nil {
			t.Fatal(err)
		}
		nsCutDuringSlow(t, l, vm, ixCA, "https://cut.secret.test/v1/slow", func() {
			if err := l.api.DeleteSecret(ctx, "ns_cutter"); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("removing the rule cuts the connection", func(t *testing.T) {
		nsCutDuringSlow(t, l, vm, ixCA, "https://rule.secret.test/v1/slow", removeRule)
	})
	if log := l.in.Log(); strings.Contains(log, value2) || strings.Contains(log, "ns-cut-value-0123456789") {
		t.Error("the log holds a value")
	}
}

// slowPy downloads argv[1] inside the sandbox, says "started" after the first 4 KiB, and
// prints how many bytes it got in all and how the download ended.
const slowPy = `
import sys, urllib.request
r = urllib.request.urlopen(sys.argv[1], timeout=10)
n = len(r.read(4096))
print("started", flush=True)
try:
    while True:
        b = r.read(8192)
        if not b:
            break
        n += len(b)
    print("end", n)
except Exception as e:
    print("cut", n, type(e).__name__)
`

// nsCutDuringSlow is ixLab.cutDuringSlow from inside a sandbox: a long download through an
// intercepted connection, change while it flows, and the download must end well before it
// would have.
func nsCutDuringSlow(t *testing.T, l *gwLab, vm *client.VM, ixCA, rawURL string, change func()) {
	t.Helper()
	r, stderr := l.startPy(t, vm, 20*time.Second, []string{"SSL_CERT_FILE=" + ixCA}, slowPy, rawURL)
	start := time.Now()
	change()
	rest, _ := io.ReadAll(r)
	took := time.Since(start)
	var how string
	var n int
	fmt.Sscanf(string(rest), "%s %d", &how, &n)
	if how == "end" && n >= 300*1024 || how == "" {
		t.Fatalf("the download was not cut (%q after %s)\n%s", rest, took, stderr.String())
	}
	if took > 3*time.Second {
		t.Errorf("cut after %s (%q)", took, rest)
	}
}
