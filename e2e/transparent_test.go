package e2e

import (
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
)

func TestTransparentHTTPSAndHTTP(t *testing.T) {
	l := newGWLab(t)
	vm := l.vm("web", &policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})

	// A client that knows nothing of proxies: DNS goes to the gateway (resolv.conf), TCP 443
	// is redirected to the transparent proxy, which reads the SNI and decides.
	out, code := l.curl(vm, "https://api.example.test/")
	if code != 0 || out != "hello from api.example.test\n" {
		t.Fatalf("HTTPS to an allowed name: exit %d, %q", code, out)
	}
	// HTTP is off: a 403 from the gateway.
	out, _ = l.curl(vm, "-o", "/dev/null", "-w", "%{http_code}", "http://api.example.test/")
	if out != "403" {
		t.Errorf("HTTP with allow_http off: %q, want 403", out)
	}
	// A name the policy does not allow does not even resolve.
	if out, code := l.curl(vm, "https://other.example.test/"); code == 0 {
		t.Errorf("HTTPS to a name not allowed: %q", out)
	}
	for _, q := range l.dns.Queries() {
		if strings.HasPrefix(q, "other.example.test") {
			t.Errorf("a refused name was forwarded upstream: %s", q)
		}
	}
}
