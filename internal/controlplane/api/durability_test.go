package api_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

func TestPersistenceAcrossRestart(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "keep"}).must(t, http.StatusCreated)
	sid := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "keep"}).must(t, http.StatusCreated)["session_id"].(string)
	set := c.do("POST", "/v1/egress/session/"+sid, map[string]any{"allow_https": true, "allowed_domains": []string{"a.example"}}).must(t, http.StatusOK)
	tenantKey := c.do("POST", "/v1/api-keys", map[string]any{"tenant": "t1"}).must(t, http.StatusCreated)["key"].(string)

	in.Restart()

	got := c.do("GET", "/v1/egress/session/"+sid, nil).must(t, http.StatusOK)
	if got["revision"] != set["revision"] || !equal(strs(got["allowed_domains"]), []string{"a.example"}) {
		t.Errorf("after restart: %v, want %v", got, set)
	}
	newClient(t, in, tenantKey).do("GET", "/v1/vms", nil).must(t, http.StatusOK)
	// No second admin key is made on restart.
	if keys := c.do("GET", "/v1/api-keys", nil).must(t, http.StatusOK)["keys"].([]any); len(keys) != 2 {
		t.Errorf("%d keys after restart, want 2", len(keys))
	}
	info, err := os.Stat(filepath.Join(in.DataDir, "admin.key"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("admin.key: %v, mode %v, want 0600", err, info.Mode().Perm())
	}
}

// TestKillDuringWrites kills egressd with SIGKILL in the middle of a burst of policy writes
// and checks that every write it had acknowledged is there after a restart.
func TestKillDuringWrites(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)
	const writers = 8
	for i := 0; i < writers; i++ {
		c.do("POST", "/v1/vms", map[string]any{"vm_id": fmt.Sprintf("w%d", i)}).must(t, http.StatusCreated)
	}

	var mu sync.Mutex
	acked := make([]int, writers) // the highest sequence number each writer had acknowledged
	var total int
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			hc := &http.Client{Timeout: 5 * time.Second}
			for seq := 1; seq <= 10000 && ctx.Err() == nil; seq++ {
				body := fmt.Sprintf(`{"allow_https": true, "allowed_domains": ["seq-%d.w%d.example"]}`, seq, w)
				req, _ := http.NewRequestWithContext(ctx, "POST", fmt.Sprintf("%s/v1/egress/vm/w%d", in.URL, w), strings.NewReader(body))
				req.Header.Set("X-API-Key", in.AdminKey)
				req.Header.Set("Content-Type", "application/json")
				resp, err := hc.Do(req)
				if err != nil {
					return // egressd is gone
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return
				}
				mu.Lock()
				acked[w] = seq
				total++
				mu.Unlock()
			}
		}(w)
	}
	// Kill once a good number of writes are acknowledged, while the writers are still going.
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		n := total
		mu.Unlock()
		if n >= 300 {
			break
		}
	}
	in.Kill()
	wg.Wait()
	mu.Lock()
	final := append([]int(nil), acked...)
	n := total
	mu.Unlock()
	if n < 300 {
		t.Fatalf("only %d writes acknowledged before the kill", n)
	}
	t.Logf("%d writes acknowledged before SIGKILL", n)

	in.Restart()
	for w, seq := range final {
		got := c.do("GET", fmt.Sprintf("/v1/egress/vm/w%d", w), nil).must(t, http.StatusOK)
		var stored int
		domains := strs(got["allowed_domains"])
		if len(domains) == 1 {
			fmt.Sscanf(domains[0], "seq-%d.", &stored)
		}
		// A write may have landed without its answer arriving, so the stored one may be newer.
		if stored < seq {
			t.Errorf("writer %d: acknowledged seq %d, stored %v", w, seq, domains)
		}
	}
}

// runEgressd runs egressd to completion (for start-up errors) and returns its output.
func runEgressd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, egressdtest.Binary(t, "egressd"), args...).CombinedOutput()
	return string(out), err
}
