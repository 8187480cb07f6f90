package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/egressd/egressd/internal/controlplane/api"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
)

// TestReadyHook: /readyz answers 503 with the hook's reason while Config.Ready fails (a
// gateway whose view is stale), and 200 again once it passes.
func TestReadyHook(t *testing.T) {
	st, err := sqlite.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var stale atomic.Bool
	srv := httptest.NewServer(api.New(api.Config{
		Store:  st,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Ready: func(context.Context) error {
			if stale.Load() {
				return errors.New("view: stale")
			}
			return nil
		},
	}))
	t.Cleanup(srv.Close)

	readyz := func() (int, map[string]string) {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	if code, body := readyz(); code != http.StatusOK {
		t.Errorf("readyz = %d %v, want 200", code, body)
	}
	stale.Store(true)
	if code, body := readyz(); code != http.StatusServiceUnavailable || body["reason"] != "view: stale" {
		t.Errorf("readyz with a failing hook = %d %v, want 503 with its reason", code, body)
	}
	stale.Store(false)
	if code, body := readyz(); code != http.StatusOK {
		t.Errorf("readyz after the hook recovered = %d %v, want 200", code, body)
	}
}
