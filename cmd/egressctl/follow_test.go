package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
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

	f := startFollower(t, newCtl(t, in.URL, in.AdminKey).env, "--session", s.SessionID, "--kind", "connect", "-o", "json")
	deny("before-1.test")
	deny("before-2.test")
	waitLines(t, &f.stdout, 2)
	// Down long enough for a reconnect attempt to fail on a closed port, then up again.
	in.Stop()
	waitFor(t, &f.stderr, "(attempt 2; ")
	in.Restart()
	deny("after-1.test")
	deny("after-2.test")
	waitLines(t, &f.stdout, 4)
	f.interrupt(t)

	// Everything printed by then: the four decisions, in order, each once.
	var hosts []string
	for _, line := range strings.Split(strings.TrimSuffix(f.stdout.String(), "\n"), "\n") {
		var e client.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		hosts = append(hosts, e.Host)
	}
	if want := []string{"before-1.test", "before-2.test", "after-1.test", "after-2.test"}; !slices.Equal(hosts, want) {
		t.Errorf("followed %v, want %v", hosts, want)
	}
	if e := f.stderr.String(); !strings.Contains(e, "the stream was lost") || !strings.Contains(e, "reconnected; resuming after event") {
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
