package fleettest

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

// TestNodeIDHeldByOneProcess: a second egressd with a running node's --node-id is refused at
// start, with an error that says why; once the first stops cleanly, a new process takes the
// ID over at once.
func TestNodeIDHeldByOneProcess(t *testing.T) {
	db := pgtest.NewDatabase(t)
	first := startNode(t, "gw-1", "--role", "gateway", "--store", db)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, egressdtest.Binary(t, "egressd"), "--role", "gateway", "--store", db, "--node-id", "gw-1",
		"--api-listen", egressdtest.FreePort(t), "--proxy-listen", egressdtest.FreePort(t), "--data-dir", t.TempDir(),
		"--secrets-key-file", egressdtest.SecretsKeyFile(t))
	out, err := cmd.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("a second process with a running node's ID: err %v (timed out: %v)\n%s", err, ctx.Err() != nil, out)
	}
	if !strings.Contains(string(out), `node ID "gw-1" is held by another running egressd`) {
		t.Fatalf("the refusal does not say why:\n%s", out)
	}

	first.Stop()
	if code := first.Wait(15 * time.Second); code != 0 {
		t.Fatalf("the first node exited %d", code)
	}
	began := time.Now()
	startNode(t, "gw-1", "--role", "gateway", "--store", db)
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("taking over the ID of a node that stopped cleanly took %s", took)
	}
}
