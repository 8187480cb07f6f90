package api_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/egressd/egressd/internal/controlplane/api"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
)

// benchServer runs the API in-process over real HTTP on loopback and the real embedded store.
func benchServer(b *testing.B) (url, key string) {
	b.Helper()
	st, key := bootstrappedStore(b)
	srv := httptest.NewServer(api.New(api.Config{Store: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	b.Cleanup(srv.Close)
	return srv.URL, key
}

// bootstrappedStore opens a new embedded store with its first admin key, as egressd's first
// start makes it, and returns the key.
func bootstrappedStore(tb testing.TB) (*sqlite.Store, string) {
	tb.Helper()
	dir := tb.TempDir()
	st, err := sqlite.Open(context.Background(), dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	if _, err := api.BootstrapAdminKey(context.Background(), st, dir); err != nil {
		tb.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "admin.key"))
	if err != nil {
		tb.Fatal(err)
	}
	return st, strings.TrimSpace(string(raw))
}

func benchDo(b *testing.B, hc *http.Client, method, url, key, body string, want int) {
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("X-API-Key", key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		b.Fatalf("%s %s: %d", method, url, resp.StatusCode)
	}
}

// BenchmarkAPI measures API round trips per second on the embedded store: each op is one
// HTTP request answered by the real server, with several clients at once.
func BenchmarkAPI(b *testing.B) {
	url, key := benchServer(b)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	const vms = 16
	for i := 0; i < vms; i++ {
		benchDo(b, hc, "POST", url+"/v1/vms", key, fmt.Sprintf(`{"vm_id": "v%d"}`, i), http.StatusCreated)
		benchDo(b, hc, "POST", fmt.Sprintf("%s/v1/egress/vm/v%d", url, i), key, `{"allow_https": true}`, http.StatusOK)
	}
	body := `{"allow_https": true, "allow_package_managers": true, "allowed_domains": ["api.example.com", "*.corp.example"], "allowed_cidrs": ["10.0.0.0/8"]}`
	for _, tc := range []struct {
		name, method, body string
	}{
		{"set", "POST", body},
		{"get", "GET", ""},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var n atomic.Int64
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1) % vms
					benchDo(b, hc, tc.method, fmt.Sprintf("%s/v1/egress/vm/v%d", url, i), key, tc.body, http.StatusOK)
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}
