package api

// Tests of GET /v1/egress/{session,vm}/{id}/suggestion against the real server in-process,
// with the embedded store and a real events.Hub fed by hub.Record (startEventsEnv).

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// getSuggestion GETs path with key and decodes a 200 answer strictly; any other status is
// returned with the body's error code.
func (env *eventsEnv) getSuggestion(key, path string) (int, string, *client.Suggestion) {
	env.t.Helper()
	req, err := http.NewRequest("GET", env.url+path, nil)
	if err != nil {
		env.t.Fatal(err)
	}
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		env.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		return resp.StatusCode, e.Error.Code, nil
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	var out client.Suggestion
	if err := dec.Decode(&out); err != nil {
		env.t.Fatalf("GET %s: %v\n%s", path, err, body)
	}
	// Lists are lists, never null: scripts iterate them.
	var raw map[string]any
	_ = json.Unmarshal(body, &raw)
	for _, f := range []string{"flags", "allowed_domains", "allowed_tcp", "not_allowable", "other_layers", "notes"} {
		if _, ok := raw[f].([]any); !ok {
			env.t.Fatalf("GET %s: %s is not a list in %s", path, f, body)
		}
	}
	return resp.StatusCode, "", &out
}

func TestSuggestionAPI(t *testing.T) {
	env := startEventsEnv(t, true)
	ctx := context.Background()
	a, err := client.New(env.url, env.keyA)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := a.CreateVM(ctx, client.CreateVMRequest{VMID: "vm-1"})
	if err != nil {
		t.Fatal(err)
	}
	se, err := a.CreateSession(ctx, client.CreateSessionRequest{VMID: vm.VMID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetSessionPolicy(ctx, se.SessionID, policy.Policy{AllowedDomains: []string{"a.example.test"}}); err != nil {
		t.Fatal(err)
	}
	rec := func(tenant, layer, decision string, wouldDeny bool, reason policy.Reason, host string, port int) uint64 {
		env.hub.Record(events.Record{Kind: events.KindConnect, Tenant: tenant, VMID: vm.VMID, SessionID: se.SessionID,
			Decision: decision, WouldDeny: wouldDeny, Layer: layer, Reason: reason, Host: host, Port: port, Transport: "tcp"})
		return env.hub.Query(events.Filter{Tenant: tenant, Limit: 1})[0].Seq
	}
	rec("a", "session", "deny", false, policy.ReasonHTTPSOff, "a.example.test", 443)
	mark := rec("a", "session", "allow", false, policy.ReasonAllowedDomains, "ok.example.test", 443)
	rec("a", "session", "allow", true, policy.ReasonHTTPSOff, "a.example.test", 443)
	rec("a", "session", "deny", false, policy.ReasonPort, "git.example.test", 22)
	rec("a", "default", "deny", false, policy.ReasonHTTPSOff, "vm.example.test", 443)
	rec("a", "hard", "deny", false, policy.ReasonHardDeny, "", 80)
	// Another tenant's records about the same IDs are never read.
	rec("b", "session", "deny", false, policy.ReasonPort, "other-tenant.example.test", 22)

	path := "/v1/egress/session/" + se.SessionID + "/suggestion"
	_, _, got := env.getSuggestion(env.keyA, path)
	if got.Scope != "session" || got.ID != se.SessionID || got.VMID != vm.VMID || !got.PolicySet || got.Revision == 0 || got.Decisions != 5 || !got.Changed {
		t.Fatalf("suggestion: %+v", got)
	}
	if want := []client.SuggestedEntry{{Entry: "allow_https", Covers: 3}}; !reflect.DeepEqual(got.Flags, want) {
		t.Errorf("flags %+v, want %+v", got.Flags, want)
	}
	if want := []client.SuggestedEntry{{Entry: "vm.example.test", Covers: 1}}; !reflect.DeepEqual(got.AllowedDomains, want) {
		t.Errorf("allowed_domains %+v, want %+v", got.AllowedDomains, want)
	}
	if want := []client.SuggestedEntry{{Entry: "git.example.test:22", Covers: 1}}; !reflect.DeepEqual(got.AllowedTCP, want) {
		t.Errorf("allowed_tcp %+v, want %+v", got.AllowedTCP, want)
	}
	if len(got.NotAllowable) != 1 || got.NotAllowable[0].Reason != policy.ReasonHardDeny {
		t.Errorf("not_allowable %+v", got.NotAllowable)
	}
	if p := got.Policy; p == nil || !p.AllowHTTPS || !reflect.DeepEqual(p.AllowedTCP, []string{"git.example.test:22"}) ||
		!reflect.DeepEqual(p.AllowedDomains, []string{"a.example.test", "vm.example.test"}) {
		t.Errorf("merged policy %+v", got.Policy)
	}

	// since: a seq, or a time.
	_, _, later := env.getSuggestion(env.keyA, path+"?since="+strconv.FormatUint(mark, 10))
	if later.Decisions != 4 || len(later.AllowedDomains) != 1 {
		t.Errorf("since=%d: %+v", mark, later)
	}
	_, _, none := env.getSuggestion(env.keyA, path+"?since=2999-01-01T00:00:00Z")
	if none.Decisions != 0 || none.Changed || none.Policy == nil {
		t.Errorf("since the future: %+v", none)
	}

	// The VM has no policy and its session has one: the session's denials are not the VM's;
	// the default's are (the session ran under it before its policy was set).
	_, _, vs := env.getSuggestion(env.keyA, "/v1/egress/vm/"+vm.VMID+"/suggestion")
	if vs.Scope != "vm" || vs.VMID != "" || vs.PolicySet || !reflect.DeepEqual(vs.OtherLayers, []client.LayerCount{{Layer: "session", Covers: 3}}) ||
		!reflect.DeepEqual(vs.AllowedDomains, []client.SuggestedEntry{{Entry: "vm.example.test", Covers: 1}}) {
		t.Errorf("VM suggestion: %+v", vs)
	}

	for _, tc := range []struct {
		key, path  string
		status     int
		code       string
		reasonWhat string
	}{
		{env.keyB, path, 404, client.CodeNotFound, "another tenant's session"},
		{env.keyB, "/v1/egress/vm/" + vm.VMID + "/suggestion", 404, client.CodeNotFound, "another tenant's VM"},
		{env.keyA, "/v1/egress/session/nope/suggestion", 404, client.CodeNotFound, "no such session"},
		{env.keyA, path + "?limit=5", 400, client.CodeBadRequest, "an unknown parameter"},
		{env.keyA, path + "?since=yesterday", 400, client.CodeBadRequest, "a bad since"},
		{env.keyA, path + "?since=1&since=2", 400, client.CodeBadRequest, "since twice"},
		{"", path, 401, client.CodeUnauthorized, "no key"},
	} {
		if status, code, _ := env.getSuggestion(tc.key, tc.path); status != tc.status || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.reasonWhat, status, code, tc.status, tc.code)
		}
	}
	req, _ := http.NewRequest("POST", env.url+path, nil)
	req.Header.Set("X-API-Key", env.keyA)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST suggestion: %v %v", resp.Status, err)
	} else {
		resp.Body.Close()
	}

	// The SDK reads the same answer.
	sdk, err := a.SessionSuggestion(ctx, se.SessionID, client.SuggestionOptions{SinceSeq: mark})
	if err != nil || !reflect.DeepEqual(sdk, later) {
		t.Errorf("SDK: %+v, %v; want %+v", sdk, err, later)
	}
	if _, err := a.VMSuggestion(ctx, "no-such-vm", client.SuggestionOptions{}); client.ErrorCode(err) != client.CodeNotFound {
		t.Errorf("SDK, unknown VM: %v", err)
	}
}

func TestSuggestionWithoutEvents(t *testing.T) {
	env := startEventsEnv(t, false)
	a, _ := client.New(env.url, env.keyA)
	ctx := context.Background()
	vm, err := a.CreateVM(ctx, client.CreateVMRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if status, code, _ := env.getSuggestion(env.keyA, "/v1/egress/vm/"+vm.VMID+"/suggestion"); status != 503 || code != client.CodeUnavailable {
		t.Fatalf("without events: %d %s", status, code)
	}
}

// TestSuggestionSharedRecords: a session's suggestion reads its VM's records that name no
// session (transparent mode), never those of another session or another VM.
func TestSuggestionSharedRecords(t *testing.T) {
	env := startEventsEnv(t, true)
	ctx := context.Background()
	a, _ := client.New(env.url, env.keyA)
	for _, id := range []string{"vm-t", "vm-other"} {
		if _, err := a.CreateVM(ctx, client.CreateVMRequest{VMID: id}); err != nil {
			t.Fatal(err)
		}
	}
	se, err := a.CreateSession(ctx, client.CreateSessionRequest{VMID: "vm-t"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetSessionPolicy(ctx, se.SessionID, policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"ok.test"}}); err != nil {
		t.Fatal(err)
	}
	rec := func(vm, session, host string) {
		env.hub.Record(events.Record{Kind: events.KindConnect, Tenant: "a", VMID: vm, SessionID: session, Decision: events.Deny,
			Layer: "session", Reason: policy.ReasonHostNotListed, Host: host, Port: 443, Transport: "tcp"})
	}
	rec("vm-t", "", "shared.test")
	rec("vm-t", "ses_someone_else", "theirs.test")
	rec("vm-other", "", "other-vm.test")
	rec("vm-t", se.SessionID, "mine.test")
	_, _, got := env.getSuggestion(env.keyA, "/v1/egress/session/"+se.SessionID+"/suggestion")
	want := []client.SuggestedEntry{{Entry: "mine.test", Covers: 1}, {Entry: "shared.test", Covers: 1}}
	if got.Decisions != 2 || !reflect.DeepEqual(got.AllowedDomains, want) {
		t.Fatalf("suggestion %+v, want allowed_domains %+v", got, want)
	}
}
