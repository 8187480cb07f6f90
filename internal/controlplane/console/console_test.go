package console

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, target string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestServesFilesWithTheirTypes(t *testing.T) {
	h := Handler()
	for _, tc := range []struct {
		path, ctype, body string
	}{
		{"/ui/", "text/html; charset=utf-8", `<script type="module" src="app.js">`},
		{"/ui/index.html", "text/html; charset=utf-8", "<title>egressd</title>"},
		{"/ui/app.js", "text/javascript; charset=utf-8", `from "./sdk/index.js"`},
		{"/ui/sdk/index.js", "text/javascript; charset=utf-8", "export { Client"},
		{"/ui/pages/session.js", "text/javascript; charset=utf-8", "export function render"},
		{"/ui/style.css", "text/css; charset=utf-8", "@media"},
		{"/ui/favicon.svg", "image/svg+xml", "<svg"},
	} {
		rec := get(t, h, "GET", tc.path)
		if rec.Code != http.StatusOK {
			t.Errorf("%s: %d", tc.path, rec.Code)
			continue
		}
		if got := rec.Header().Get("Content-Type"); got != tc.ctype {
			t.Errorf("%s: Content-Type %q, want %q", tc.path, got, tc.ctype)
		}
		if !strings.Contains(rec.Body.String(), tc.body) {
			t.Errorf("%s: body lacks %q", tc.path, tc.body)
		}
	}
}

// Every answer, a 404 and a 405 included, carries the headers that keep the page from being
// framed, sniffed or made to run code it did not ship.
func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	h := Handler()
	for _, tc := range []struct{ method, path string }{
		{"GET", "/ui/"}, {"GET", "/ui/app.js"}, {"GET", "/ui/nope.js"}, {"GET", "/ui/sdk/"},
		{"POST", "/ui/"}, {"HEAD", "/ui/style.css"}, {"GET", "/ui/../v1/vms"},
	} {
		rec := get(t, h, tc.method, tc.path)
		hd := rec.Header()
		if hd.Get("Content-Security-Policy") != ContentSecurityPolicy {
			t.Errorf("%s %s: CSP %q", tc.method, tc.path, hd.Get("Content-Security-Policy"))
		}
		for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
			if hd.Get(k) != v {
				t.Errorf("%s %s: %s %q, want %q", tc.method, tc.path, k, hd.Get(k), v)
			}
		}
	}
}

// The CSP itself: each directive that keeps inline code, eval, other origins and framing
// out, checked one by one so that a loosened policy fails by name.
func TestContentSecurityPolicyIsStrict(t *testing.T) {
	dirs := map[string]string{}
	for _, d := range strings.Split(ContentSecurityPolicy, ";") {
		f := strings.Fields(d)
		if len(f) > 0 {
			dirs[f[0]] = strings.Join(f[1:], " ")
		}
	}
	want := map[string]string{
		"default-src":               "'self'",
		"script-src":                "'self'",
		"style-src":                 "'self'",
		"connect-src":               "'self'",
		"object-src":                "'none'",
		"base-uri":                  "'none'",
		"form-action":               "'none'",
		"frame-ancestors":           "'none'",
		"require-trusted-types-for": "'script'",
		"trusted-types":             "'none'",
	}
	for k, v := range want {
		if dirs[k] != v {
			t.Errorf("CSP %s = %q, want %q", k, dirs[k], v)
		}
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "unsafe-hashes", "wasm-unsafe-eval", "*", "http:", "https:", "strict-dynamic"} {
		for k, v := range dirs {
			for _, src := range strings.Fields(v) {
				if strings.Trim(src, "'") == bad {
					t.Errorf("CSP %s allows %s", k, src)
				}
			}
		}
	}
}

func TestNotFoundAndNoListing(t *testing.T) {
	h := Handler()
	for _, p := range []string{
		"/ui/nope", "/ui/sdk", "/ui/sdk/", "/ui/pages/", "/ui/assets/index.html", "/ui/../console.go",
		"/ui/%2e%2e/console.go", "/ui/sdk/../../console.go", "/ui//etc/passwd", "/ui/sync-sdk.sh", "/ui/console.go",
		"/ui/index.html/", "/ui/INDEX.HTML", "/ui/app.js%00", "/v1/vms", "/",
	} {
		if rec := get(t, h, "GET", p); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, rec.Code)
		}
	}
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		rec := get(t, h, m, "/ui/")
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /ui/: %d Allow %q", m, rec.Code, rec.Header().Get("Allow"))
		}
	}
}

func TestRevalidatedWithETag(t *testing.T) {
	h := Handler()
	rec := get(t, h, "GET", "/ui/app.js")
	etag := rec.Header().Get("ETag")
	if etag == "" || rec.Header().Get("Cache-Control") != "no-cache" {
		t.Fatalf("ETag %q Cache-Control %q", etag, rec.Header().Get("Cache-Control"))
	}
	if rec := get(t, h, "GET", "/ui/app.js", "If-None-Match", etag); rec.Code != http.StatusNotModified {
		t.Errorf("If-None-Match with the ETag: %d, want 304", rec.Code)
	}
	if other := get(t, h, "GET", "/ui/style.css").Header().Get("ETag"); other == etag {
		t.Error("two files share an ETag")
	}
}

// assetText is every served text file, by path.
func assetText(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	sub, _ := fs.Sub(assets, "assets")
	err := fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The files the CSP would refuse to run, found before a browser does: inline scripts and
// styles, handler attributes, eval and its cousins, HTML parsed from strings, other origins.
func TestAssetsNeedNothingTheCSPForbids(t *testing.T) {
	files := assetText(t)
	if len(files) < 10 {
		t.Fatalf("only %d embedded files", len(files))
	}
	html := files["index.html"]
	for _, re := range []string{`\sstyle\s*=`, `\son[a-z]+\s*=`, `<style`, `javascript:`} {
		if regexp.MustCompile(`(?i)` + re).MatchString(html) {
			t.Errorf("index.html matches %s", re)
		}
	}
	for _, m := range regexp.MustCompile(`(?i)<script\b[^>]*>`).FindAllString(html, -1) {
		if !strings.Contains(m, `src="`) {
			t.Errorf("index.html has an inline script: %s", m)
		}
	}
	for _, m := range regexp.MustCompile(`(?i)(?:src|href)="([^"]+)"`).FindAllStringSubmatch(html, -1) {
		ref := m[1]
		if strings.HasPrefix(ref, "#") {
			continue // a route of the page itself
		}
		if strings.Contains(ref, "//") || strings.HasPrefix(ref, "/") {
			t.Errorf("index.html loads %s from elsewhere", ref)
		} else if _, ok := files[ref]; !ok {
			t.Errorf("index.html refers to %s, which is not embedded", ref)
		}
	}
	forbidden := []*regexp.Regexp{
		regexp.MustCompile(`\beval\s*\(`),
		regexp.MustCompile(`\bnew\s+Function\s*\(`),
		regexp.MustCompile(`\bsetTimeout\s*\(\s*["'\x60]`),
		regexp.MustCompile(`\.(?:innerHTML|outerHTML)\s*=`),
		regexp.MustCompile(`insertAdjacentHTML|document\.write|createContextualFragment|DOMParser`),
		regexp.MustCompile(`setAttribute\(\s*["']style["']`),
		regexp.MustCompile(`\.style\.cssText|\.cssText\s*=`),
		regexp.MustCompile(`https?://(?:[^w]|w[^w]|ww[^w]|www[^.])`), // another origin (the SVG namespace aside)
		regexp.MustCompile(`localStorage|document\.cookie`),
	}
	for name, text := range files {
		if path.Ext(name) != ".js" || strings.HasPrefix(name, "sdk/") {
			continue
		}
		for _, re := range forbidden {
			if loc := re.FindStringIndex(text); loc != nil {
				t.Errorf("%s: %q (%s)", name, text[loc[0]:loc[1]], re)
			}
		}
		for _, m := range regexp.MustCompile(`from\s+"([^"]+)"`).FindAllStringSubmatch(text, -1) {
			target := path.Join(path.Dir(name), m[1])
			if !strings.HasPrefix(m[1], "./") && !strings.HasPrefix(m[1], "../") {
				t.Errorf("%s imports %s, not a file of the console", name, m[1])
			} else if _, ok := files[target]; !ok {
				t.Errorf("%s imports %s, which is not embedded", name, m[1])
			}
		}
	}
	// The SDK's copy: no eval either (it is the same CSP).
	for name, text := range files {
		if strings.HasPrefix(name, "sdk/") && (regexp.MustCompile(`\beval\s*\(|new\s+Function\s*\(`).MatchString(text)) {
			t.Errorf("%s uses eval", name)
		}
	}
}

// Every embedded file is served: a file with an extension the handler has no type for would
// silently be missing from the page.
func TestEveryAssetServed(t *testing.T) {
	served := map[string]bool{}
	for _, p := range Files() {
		served[p] = true
	}
	for name := range assetText(t) {
		if !served[name] && path.Ext(name) != "" {
			t.Errorf("%s is embedded but not served (no content type for %s)", name, path.Ext(name))
		}
	}
}

// docs/console.md shows every screenshot the browser test writes, and names none that is
// missing.
func TestDocsShowEveryScreenshot(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/console.md")
	if err != nil {
		t.Fatal(err)
	}
	linked := map[string]bool{}
	for _, m := range regexp.MustCompile(`\]\((console/[^)]+\.png)\)`).FindAllStringSubmatch(string(doc), -1) {
		linked[m[1]] = true
		if _, err := os.Stat("../../../docs/" + m[1]); err != nil {
			t.Errorf("docs/console.md shows %s, which is not there", m[1])
		}
	}
	for _, name := range []string{"signin", "vms", "session", "events", "secrets", "nodes", "session-phone"} {
		if !linked["console/"+name+".png"] {
			t.Errorf("docs/console.md does not show console/%s.png", name)
		}
	}
	// The browser test takes exactly those.
	src, err := os.ReadFile("browser_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`screenshot\("([^"]+)"\)`).FindAllStringSubmatch(string(src), -1) {
		if !linked["console/"+m[1]+".png"] {
			t.Errorf("the browser test takes %s.png, which docs/console.md does not show", m[1])
		}
	}
}
