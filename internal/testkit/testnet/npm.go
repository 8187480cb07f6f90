package testnet

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// NPM serves one package as an npm registry at host would: its metadata (GET /<pkg>) and
// its tarball (the metadata's dist.tarball, with the digests npm checks), so that both
// `npm view` and `npm install` work. Every other host goes to next.
func NPM(host, pkg, version string, next http.Handler) http.Handler {
	tgz := npmTarball(pkg, version)
	sha1sum := sha1.Sum(tgz) // npm's legacy "shasum": SHA-1 by its definition, not our choice
	sha512sum := sha512.Sum512(tgz)
	tarPath := "/" + pkg + "/-/" + pkg + "-" + version + ".tgz"
	doc := map[string]any{
		"name":      pkg,
		"dist-tags": map[string]string{"latest": version},
		"versions": map[string]any{version: map[string]any{
			"name":    pkg,
			"version": version,
			"dist": map[string]string{
				"tarball":   "https://" + host + tarPath,
				"shasum":    hex.EncodeToString(sha1sum[:]),
				"integrity": "sha512-" + base64.StdEncoding.EncodeToString(sha512sum[:]),
			},
		}},
	}
	body, _ := json.Marshal(doc)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Host, host) {
			next.ServeHTTP(w, r)
			return
		}
		switch r.URL.Path {
		case "/" + pkg:
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		case tarPath:
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(tgz)
		default:
			http.NotFound(w, r)
		}
	})
}

// npmTarball is a minimal package as npm packs one: package/package.json and an index.js,
// gzipped tar.
func npmTarball(pkg, version string) []byte {
	manifest, _ := json.Marshal(map[string]string{"name": pkg, "version": version, "main": "index.js"})
	files := []struct{ name, body string }{
		{"package/package.json", string(manifest)},
		{"package/index.js", "module.exports = 'hello from a fake registry';\n"},
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range files {
		tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), ModTime: time.Unix(499162500, 0), Typeflag: tar.TypeReg})
		tw.Write([]byte(f.body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}
