package console_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/controlplane/console"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

// TestServedHeadersOnEveryAnswer: whatever method or odd path a page (or an attacker's link)
// asks under /ui/, the real egressd's answer carries the console's CSP, or is no page at all
// (a redirect or a non-HTML error with nosniff).
func TestServedHeadersOnEveryAnswer(t *testing.T) {
	in := egressdtest.Start(t)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, method := range []string{"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"} {
		for _, path := range []string{"/ui/", "/ui/app.js", "/ui/index.html", "/ui/nope", "/ui//app.js", "/ui/./app.js",
			"/ui/pages/", "/ui/%2e%2e/v1/vms", "/ui/sdk/", "/ui/<script>", "/ui/x%22%3E%3Cscript%3E"} {
			req, err := http.NewRequest(method, in.URL+path, strings.NewReader(""))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			csp := resp.Header.Get("Content-Security-Policy")
			ctype := resp.Header.Get("Content-Type")
			switch {
			case csp == console.ContentSecurityPolicy:
			case resp.StatusCode >= 300 && resp.StatusCode < 400:
			case !strings.Contains(ctype, "html") && resp.Header.Get("X-Content-Type-Options") == "nosniff":
			default:
				t.Errorf("%s %s: %d %q without the console's CSP: %.200s", method, path, resp.StatusCode, ctype, b)
			}
		}
	}
}
