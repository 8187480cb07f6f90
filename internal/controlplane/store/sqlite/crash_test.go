package sqlite

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/policy"
)

// crashDirEnv, when set, makes TestHelperProcess the writer of TestCrashKeepsAcknowledgedWrites.
const crashDirEnv = "EGRESSD_STORE_CRASH_DIR"

// TestCrashKeepsAcknowledgedWrites kills a writing process with SIGKILL and checks that every
// write it acknowledged is in the database afterwards. (Power loss cannot be simulated here;
// synchronous=FULL is what covers it, and TestOpenSettings checks that it is set.)
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process; skipped with -short")
	}
	const (
		killAfter = 200 // acknowledgements
		patience  = 60 * time.Second
	)
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var acks []string
	deadline := time.After(patience)
wait:
	for len(acks) < killAfter {
		select {
		case line, ok := <-lines:
			if !ok {
				break wait // the child died on its own: what it acknowledged must still be there
			}
			if strings.HasPrefix(line, "ack ") {
				acks = append(acks, line)
			}
		case <-deadline:
			break wait
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no deferred function, no Close
		t.Logf("kill: %v", err)
	}
	// Lines already in the pipe were printed after their writes returned: they count too.
	for line := range lines {
		if strings.HasPrefix(line, "ack ") {
			acks = append(acks, line)
		}
	}
	cmd.Wait()
	if len(acks) < killAfter {
		t.Errorf("only %d acknowledgements before the child stopped or %v passed; stderr:\n%s", len(acks), patience, stderr.String())
	}
	t.Logf("killed the writer after %d acknowledged writes", len(acks))

	s := openTest(t, dir)
	var result string
	if err := s.reader.QueryRowContext(t.Context(), `PRAGMA integrity_check`).Scan(&result); err != nil || result != "ok" {
		t.Errorf("integrity_check = %q, %v", result, err)
	}
	for _, ack := range acks {
		var kind, id string
		var rev int64
		if _, err := fmt.Sscanf(ack, "ack %s %s %d", &kind, &id, &rev); err != nil {
			t.Fatalf("bad acknowledgement %q: %v", ack, err)
		}
		var got int64
		switch kind {
		case "session":
			se, err := s.GetSession(t.Context(), crashTenant, id)
			if err != nil {
				t.Errorf("acknowledged session %s lost: %v", id, err)
				continue
			}
			got = se.Revision
		case "policy":
			r, err := s.GetPolicy(t.Context(), crashTenant, store.ScopeSession, id)
			if err != nil {
				t.Errorf("acknowledged policy of %s lost: %v", id, err)
				continue
			}
			got = r.Revision
		default:
			t.Fatalf("bad acknowledgement %q", ack)
		}
		if got != rev {
			t.Errorf("%s %s: revision %d, acknowledged %d", kind, id, got, rev)
		}
	}
}

const crashTenant = "crash"

// TestHelperProcess is the child of TestCrashKeepsAcknowledgedWrites: it writes sessions and
// policies in a loop and prints each acknowledged write, until it is killed. It is a no-op
// in a normal test run.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		return
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	ctx := t.Context()
	s, err := Open(ctx, dir)
	if err != nil {
		fail(err)
	}
	if _, err := s.CreateVM(ctx, store.VM{Tenant: crashTenant, ID: "vm"}); err != nil {
		fail(err)
	}
	// Bounded in count and time, in case the parent dies without killing us.
	stop := time.Now().Add(2 * time.Minute)
	for i := 0; i < 100_000 && time.Now().Before(stop); i++ {
		id := "se-" + strconv.Itoa(i)
		se, err := s.CreateSession(ctx, store.Session{Tenant: crashTenant, ID: id, VMID: "vm", TokenHash: sum(id)})
		if err != nil {
			fail(err)
		}
		fmt.Printf("ack session %s %d\n", id, se.Revision) // os.Stdout is unbuffered
		p := policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"host-" + strconv.Itoa(i) + ".example.com"}}
		r, err := s.PutPolicy(ctx, store.PolicyRecord{Tenant: crashTenant, Scope: store.ScopeSession, ID: id, Policy: p})
		if err != nil {
			fail(err)
		}
		fmt.Printf("ack policy %s %d\n", id, r.Revision)
	}
	s.Close()
	os.Exit(0)
}
