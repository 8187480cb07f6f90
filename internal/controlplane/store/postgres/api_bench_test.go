package postgres_test

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
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/postgres"
	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
)

// BenchmarkAPIWrites measures API writes per second on each store, side by side: each op is
// one POST /v1/egress/vm/{id} (a policy replacement: one transaction, one durable commit)
// answered by the real server over loopback HTTP, with 4×GOMAXPROCS clients at once. The
// same as internal/api's BenchmarkAPI "set", on both stores.
func BenchmarkAPIWrites(b *testing.B) {
	for _, tc := range []struct {
		name string
		open func(b *testing.B) store.Store
	}{
		{"sqlite", func(b *testing.B) store.Store {
			st, err := sqlite.Open(context.Background(), b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			return st
		}},
		{"postgres", func(b *testing.B) store.Store {
			st, err := postgres.Open(context.Background(), pgtest.NewDatabase(b))
			if err != nil {
				b.Fatal(err)
			}
			return st
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			st := tc.open(b)
			b.Cleanup(func() { st.Close() })
			benchWrites(b, st)
		})
	}
}

func benchWrites(b *testing.B, st store.Store) {
	dir := b.TempDir()
	if _, err := api.BootstrapAdminKey(context.Background(), st, dir); err != nil {
		b.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "admin.key"))
	if err != nil {
		b.Fatal(err)
	}
	key := strings.TrimSpace(string(raw))
	srv := httptest.NewServer(api.New(api.Config{Store: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	b.Cleanup(srv.Close)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	const vms = 16
	for i := range vms {
		do(b, hc, "POST", srv.URL+"/v1/vms", key, fmt.Sprintf(`{"vm_id": "v%d"}`, i), http.StatusCreated)
	}
	body := `{"allow_https": true, "allow_package_managers": true, "allowed_domains": ["api.example.com", "*.corp.example"], "allowed_cidrs": ["10.0.0.0/8"]}`
	var n atomic.Int64
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1) % vms
			do(b, hc, "POST", fmt.Sprintf("%s/v1/egress/vm/v%d", srv.URL, i), key, body, http.StatusOK)
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}

func do(b *testing.B, hc *http.Client, method, url, key, body string, want int) {
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("X-API-Key", key)
	req.Header.Set("Content-Type", "application/json")
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
