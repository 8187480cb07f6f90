package testnet

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
)

// PyPI serves a simple index (PEP 503) of one package as "pypi.org" would, with its wheel
// served from "files.pythonhosted.org" as the real index does, so that pip crosses two
// hosts of the package-manager preset. The link to the wheel has the scheme the index was
// asked with (an index over plain HTTP links to the wheel over plain HTTP). Both answers
// are written as a hand-written server does, the header apart from the body and the body
// in pieces (see WriteInPieces), and pip checks the wheel's digest. Other hosts get the
// default Handler.
func PyPI(pkg, version string) http.Handler {
	wheel, name := Wheel(pkg, version)
	sum := sha256.Sum256(wheel)
	fallback := Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := strings.ToLower(r.Host)
		scheme := "https"
		if r.TLS == nil {
			scheme = "http"
		}
		switch {
		case host == "pypi.org" && (r.URL.Path == "/simple/"+pkg+"/" || r.URL.Path == "/simple/"+pkg):
			w.Header().Set("Content-Type", "text/html")
			WriteInPieces(w, []byte(fmt.Sprintf("<!DOCTYPE html><html><body>\n<a href=\"%s://files.pythonhosted.org/packages/%s#sha256=%s\">%s</a>\n</body></html>\n",
				scheme, name, hex.EncodeToString(sum[:]), name)))
		case host == "files.pythonhosted.org" && r.URL.Path == "/packages/"+name:
			w.Header().Set("Content-Type", "application/octet-stream")
			WriteInPieces(w, wheel)
		case host == "pypi.org" || host == "files.pythonhosted.org":
			http.NotFound(w, r)
		default:
			fallback.ServeHTTP(w, r)
		}
	})
}

// Wheel builds a minimal, valid pure-Python wheel for pkg and returns it with its file name.
func Wheel(pkg, version string) ([]byte, string) {
	dist := strings.ReplaceAll(pkg, "-", "_")
	name := fmt.Sprintf("%s-%s-py3-none-any.whl", dist, version)
	info := fmt.Sprintf("%s-%s.dist-info/", dist, version)
	files := []struct{ name, body string }{
		{dist + "/__init__.py", "GREETING = 'hello from a fake index'\n"},
		{info + "METADATA", fmt.Sprintf("Metadata-Version: 2.1\nName: %s\nVersion: %s\n", pkg, version)},
		{info + "WHEEL", "Wheel-Version: 1.0\nGenerator: egressd-testnet\nRoot-Is-Purelib: true\nTag: py3-none-any\n"},
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	var record strings.Builder
	for _, f := range files {
		w, _ := zw.Create(f.name)
		w.Write([]byte(f.body))
		sum := sha256.Sum256([]byte(f.body))
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", f.name, base64.RawURLEncoding.EncodeToString(sum[:]), len(f.body))
	}
	fmt.Fprintf(&record, "%sRECORD,,\n", info)
	w, _ := zw.Create(info + "RECORD")
	w.Write([]byte(record.String()))
	zw.Close()
	return buf.Bytes(), name
}
