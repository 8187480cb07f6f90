package console_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/controlplane/console"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

// The real egressd serves the console at /ui/ with its headers, sends /ui to /ui/, and keeps
// answering the API's own 404 shape elsewhere.
func TestServedByEgressd(t *testing.T) {
	in := egressdtest.Start(t)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		path   string
		status int
		check  func(*http.Response, string) string
	}{
		{"/ui/", 200, func(r *http.Response, body string) string {
			if r.Header.Get("Content-Security-Policy") != console.ContentSecurityPolicy || r.Header.Get("X-Content-Type-Options") != "nosniff" {
				return "security headers missing"
			}
			if !strings.Contains(body, `src="app.js"`) {
				return "not the console's page"
			}
			return ""
		}},
		{"/ui", http.StatusTemporaryRedirect, func(r *http.Response, _ string) string {
			if r.Header.Get("Location") != "/ui/" {
				return "Location " + r.Header.Get("Location")
			}
			return ""
		}},
		{"/ui/sdk/index.js", 200, nil},
		{"/ui/no-such-file.js", 404, nil},
		{"/v1/no-such-endpoint", 404, func(r *http.Response, body string) string {
			if r.Header.Get("Content-Security-Policy") != "" || !strings.Contains(body, `"code"`) {
				return "the API's 404 changed: " + body
			}
			return ""
		}},
	} {
		resp, err := noRedirect.Get(in.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("GET %s: %d, want %d", tc.path, resp.StatusCode, tc.status)
			continue
		}
		if tc.check != nil {
			if msg := tc.check(resp, string(b)); msg != "" {
				t.Errorf("GET %s: %s", tc.path, msg)
			}
		}
	}
	// The start line says where the console is.
	if want := "console=http://" + in.APIAddr + "/ui/"; !strings.Contains(in.Log(), want) {
		t.Errorf("egressd's start log lacks %s", want)
	}
	// The console needs no key, and gives none: the page is the same for everyone.
	resp, err := http.Get(in.URL + "/ui/app.js")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), in.AdminKey) {
		t.Error("the console's script carries the admin key")
	}
}
