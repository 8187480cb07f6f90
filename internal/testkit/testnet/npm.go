package testnet

import (
	"encoding/json"
	"net/http"
	"strings"
)

// NPM serves the metadata of one package as an npm registry at host would (GET /<pkg>),
// and passes every other host to next.
func NPM(host, pkg, version string, next http.Handler) http.Handler {
	doc := map[string]any{
		"name":      pkg,
		"dist-tags": map[string]string{"latest": version},
		"versions": map[string]any{version: map[string]any{
			"name":    pkg,
			"version": version,
			"dist":    map[string]string{"tarball": "https://" + host + "/" + pkg + "/-/" + pkg + "-" + version + ".tgz"},
		}},
	}
	body, _ := json.Marshal(doc)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Host, host) {
			next.ServeHTTP(w, r)
			return
		}
		if r.URL.Path != "/"+pkg {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
}
