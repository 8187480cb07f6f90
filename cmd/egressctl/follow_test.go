package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/egressdtest"
)

// TestEventsFollowSurvivesARestart runs `egressctl events --follow` while egressd stops and
// starts again on the same data and ports: the follow says on stderr that it reconnects, the
// decisions made after the restart arrive, and none is printed twice.
func TestEventsFollowSurvivesARestart(t *testing.T) {
	in := egressdtest.Start(t)
	ctx := context.Background()
	api, _ := client.New(in.URL, in.AdminKey)
	if _, err := api.CreateVM(ctx, client.CreateVMRequest{VMID: "follow-vm"}); err != nil {
		t.Fatal(err)
	}
	s, err := api.CreateSession(ctx, client.CreateSessionRequest{VMID: "follow-vm"})
	if err != nil {
		t.Fatal(err)
	}
	// A decision to follow: an HTTPS request through the session's proxy, denied (no policy
	// is set, and the default denies everything), with the host telling them apart.
	proxyURL, _ := url.Parse(s.ProxyURL)
	through := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	deny := func(host string) {
		t.Helper()
		resp, err := through.Get("https://" + host + "/")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("GET https://%s/ through the proxy: %s, want a refused CONNECT", host, resp.Status)
		}
	}

	var stdout, stderr lockedBuffer
	cmd := exec.Command(egressdtest.Binary(t, "egressctl"), "events", "--follow", "--session", s.SessionID, "--kind", "connect", "-o", "json")
	cmd.Env = newCtl(t, in.URL, in.AdminKey).env
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer cmd.Process.Kill()

	deny("before-1.test")
	deny("before-2.test")
	waitLines(t, &stdout, 2)
	// Down long enough for a reconnect attempt to fail on a closed port, then up again.
	in.Stop()
	waitFor(t, &stderr, "(attempt 2; ")
	in.Restart()
	deny("after-1.test")
	deny("after-2.test")
	waitLines(t, &stdout, 4)

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("after SIGINT: %v, want exit 0; stderr %s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("egressctl events --follow did not end on SIGINT")
	}
	// Everything printed by then: the four decisions, in order, each once.
	var hosts []string
	for _, line := range strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n") {
		var e client.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		hosts = append(hosts, e.Host)
	}
	if want := []string{"before-1.test", "before-2.test", "after-1.test", "after-2.test"}; !slices.Equal(hosts, want) {
		t.Errorf("followed %v, want %v", hosts, want)
	}
	if e := stderr.String(); !strings.Contains(e, "the stream was lost") || !strings.Contains(e, "reconnected; resuming after event") {
		t.Errorf("stderr does not tell of the reconnect:\n%s", e)
	}
}

// waitFor waits (up to 10 s) until b has want.
func waitFor(t *testing.T, b *lockedBuffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if strings.Contains(b.String(), want) {
			return
		}
	}
	t.Fatalf("never said %q: %s", want, b.String())
}
