package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/policy"
)

// TestDecisionEvents: every decision and every closed connection is a record, in the events
// API (scoped to the tenant), in the audit file and in the metrics.
func TestDecisionEvents(t *testing.T) {
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	l := newLab(t, "--audit-log", audit)
	l.setSession(policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})
	ctx := context.Background()

	// Follow the stream from before the traffic, as a platform's log shipper would.
	followCtx, stopFollow := context.WithTimeout(ctx, 20*time.Second)
	defer stopFollow()
	followed := make(chan client.Event, 16)
	go l.api.FollowEvents(followCtx, client.EventsFilter{SessionID: l.sess.SessionID, Decision: "deny", Limit: -1}, func(e client.Event) error {
		followed <- e
		return nil
	})
	time.Sleep(200 * time.Millisecond) // let the stream open

	if out, _, code := l.curl(l.sess.ProxyURL, "https://api.example.test/bytes?n=5000"); code != 0 || len(out) != 5000 {
		t.Fatalf("allowed request: exit %d, %d bytes", code, len(out))
	}
	l.curl(l.sess.ProxyURL, "https://other.example.test/")

	select {
	case e := <-followed:
		if e.Host != "other.example.test" || e.Decision != "deny" {
			t.Errorf("followed event: %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the denial did not arrive on the followed stream")
	}

	var list []client.Event
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var err error
		if list, err = l.api.Events(ctx, client.EventsFilter{SessionID: l.sess.SessionID}); err != nil {
			t.Fatal(err)
		}
		if hasClose(list) {
			break
		}
	}
	var allowConnect, deny, closeRec *client.Event
	for i := range list {
		e := &list[i]
		switch {
		case e.Kind == "connect" && e.Decision == "allow" && e.Host == "api.example.test":
			allowConnect = e
		case e.Kind == "connect" && e.Decision == "deny" && e.Host == "other.example.test":
			deny = e
		case e.Kind == "close" && e.Host == "api.example.test":
			closeRec = e
		}
	}
	if allowConnect == nil || allowConnect.Port != 443 || allowConnect.IP != webIP || allowConnect.VMID != l.vm || allowConnect.Layer != "session" {
		t.Errorf("allowed connect record: %+v", allowConnect)
	}
	if deny == nil || deny.Reason != string(policy.ReasonHostNotListed) || deny.Rule == "" {
		t.Errorf("deny record: %+v", deny)
	}
	if closeRec == nil || closeRec.BytesDown < 5000 || closeRec.BytesUp == 0 || closeRec.DurationMS <= 0 {
		t.Errorf("close record: %+v", closeRec)
	}
	if denies, _ := l.api.Events(ctx, client.EventsFilter{SessionID: l.sess.SessionID, Decision: "deny"}); len(denies) != 1 {
		t.Errorf("deny filter: %d records, want 1", len(denies))
	}

	// Another tenant sees nothing, even asking for this session by ID.
	k, err := l.api.CreateAPIKey(ctx, client.CreateAPIKeyRequest{Tenant: "other"})
	if err != nil {
		t.Fatal(err)
	}
	otherAPI, _ := client.New(l.in.URL, k.Key)
	if got, err := otherAPI.Events(ctx, client.EventsFilter{SessionID: l.sess.SessionID}); err != nil || len(got) != 0 {
		t.Errorf("another tenant's view: %d records, %v", len(got), err)
	}

	// Metrics count the denial by reason and layer.
	resp, err := http.Get(l.in.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `egressd_decisions_total{decision="deny",kind="connect",layer="session",reason="host_not_allowed"} 1`; !strings.Contains(string(body), want) {
		t.Errorf("metrics lack %s", want)
	}

	// The audit file has the same records, one JSON object a line, readable by egressd only.
	l.in.Stop()
	info, err := os.Stat(audit)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("audit file mode %v, want 0600", info.Mode().Perm())
	}
	f, _ := os.Open(audit)
	defer f.Close()
	sc := bufio.NewScanner(f)
	kinds := map[string]int{}
	for sc.Scan() {
		var e client.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line is not JSON: %v: %s", err, sc.Text())
		}
		kinds[e.Kind+" "+e.Decision]++
	}
	if kinds["connect allow"] == 0 || kinds["connect deny"] == 0 || kinds["close "] == 0 && kinds["close allow"] == 0 {
		t.Errorf("audit file records: %v", kinds)
	}
}

func hasClose(list []client.Event) bool {
	for _, e := range list {
		if e.Kind == "close" {
			return true
		}
	}
	return false
}
