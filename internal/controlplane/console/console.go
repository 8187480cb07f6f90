// Package console is egressd's web console (DESIGN §7): a few static files, embedded in the
// binary and served at /ui/, that talk to the API with the JavaScript SDK (sdk/js) from the
// browser. There is no server-side state and no server-side rendering: the page asks for an
// API key, keeps it in the tab's sessionStorage, and sends it with each API call, exactly
// like any other client of the API.
//
// Everything is same-origin and nothing comes from elsewhere (no CDN: the console works on a
// machine without outside network). Every answer carries a strict content security policy
// (ContentSecurityPolicy): scripts and styles only from the console's own files, no inline
// scripts or style attributes, no eval, no framing, and Trusted Types so that no string is
// ever parsed as HTML. Host names in decision records are chosen by sandboxes, that is by
// untrusted code; the CSP is the second wall behind the console's rule of building the page
// with textContent only.
//
// The SDK's compiled files are copied into assets/sdk by `go generate` (sync-sdk.sh), and
// committed, so that `go build` needs no Node; sdk_test.go checks the copy against a fresh
// build of sdk/js.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:generate sh sync-sdk.sh

//go:embed assets
var assets embed.FS

// Prefix is where the console is served.
const Prefix = "/ui/"

// ContentSecurityPolicy is sent with every answer of the console. 'self' is the API's own
// origin; connect-src 'self' lets the page reach only the API that served it.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; " +
	"require-trusted-types-for 'script'; trusted-types 'none'"

// file is one embedded file, read once at start.
type file struct {
	body  []byte
	ctype string
	etag  string
}

// contentTypes are the types of the files the console has; any other extension is not served
// (a file added without a type here is a test failure, not a guess by the browser).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".txt":  "text/plain; charset=utf-8",
}

// Handler serves the console under Prefix (mount it on "/ui/" for every method: it answers 405 itself, with its headers): /ui/ is the page, other
// paths are its files; anything else is 404, directories included.
func Handler() http.Handler {
	files, err := load()
	if err != nil {
		// The files are compiled in: this cannot fail at run time unless the build is broken.
		panic("console: " + err.Error())
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), usb=(), payment=()")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name, ok := strings.CutPrefix(r.URL.Path, Prefix)
		if !ok {
			http.NotFound(w, r)
			return
		}
		if name == "" {
			name = "index.html"
		}
		f, ok := files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h.Set("Content-Type", f.ctype)
		// Revalidated each time (cheap: an ETag), so that an upgraded egressd is never
		// served with the previous console's scripts.
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	})
}

// load reads every embedded file into a map keyed by its path under assets/.
func load() (map[string]file, error) {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	files := map[string]file{}
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ctype, ok := contentTypes[path.Ext(p)]
		if !ok {
			return nil // e.g. a README next to the files: not part of the page
		}
		body, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		files[p] = file{body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	return files, err
}

// Files lists the served paths (under Prefix), for tests.
func Files() []string {
	files, err := load()
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(files))
	for p := range files {
		out = append(out, p)
	}
	return out
}
