package main

// Tests of placement on nodes: node list's table, vm create's node flags, and how the
// network states of a netns VM read, against a fake API that answers as egressd does for a
// fleet (which a single egressd without --transparent cannot: it places no netns VM).

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
)

func TestFormatAge(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		ago  time.Duration
		want string
	}{
		{0, "0s ago"},
		{-3 * time.Second, "0s ago"}, // the store's clock a little ahead of this machine's
		{1500 * time.Millisecond, "1s ago"},
		{59 * time.Second, "59s ago"},
		{time.Minute, "1m ago"},
		{59*time.Minute + 59*time.Second, "59m ago"},
		{time.Hour, "1h ago"},
		{47 * time.Hour, "47h ago"},
		{48 * time.Hour, "2d ago"},
		{400 * 24 * time.Hour, "400d ago"},
	}
	for _, tc := range cases {
		if got := formatAge(now.Add(-tc.ago), now); got != tc.want {
			t.Errorf("formatAge(now - %s) = %q, want %q", tc.ago, got, tc.want)
		}
	}
	if got := formatAge(time.Time{}, now); got != "" {
		t.Errorf("formatAge(zero) = %q, want empty (the table prints -)", got)
	}
}

func TestFormatLabels(t *testing.T) {
	cases := []struct {
		labels map[string]string
		want   string
	}{
		{nil, ""},
		{map[string]string{"zone": "eu-1"}, "zone=eu-1"},
		{map[string]string{"zone": "eu-1", "gpu": "true", "arch": ""}, "arch=,gpu=true,zone=eu-1"},
	}
	for _, tc := range cases {
		if got := formatLabels(tc.labels); got != tc.want {
			t.Errorf("formatLabels(%v) = %q, want %q", tc.labels, got, tc.want)
		}
	}
}

func TestNodeTable(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	nodes := []client.Node{
		{ID: "api-1", Roles: []string{"api"}, Address: "127.0.0.1:8470", LastHeartbeat: now.Add(-time.Second), Revision: 42, State: "up"},
		{ID: "gw-a", Roles: []string{"api", "gateway", "transparent"}, Address: "198.18.0.2:8470",
			Labels: map[string]string{"zone": "eu-1", "gpu": "true"}, SandboxCIDR: "100.96.0.0/20",
			LastHeartbeat: now.Add(-2 * time.Second), Revision: 42, VMs: 3, State: "up"},
		{ID: "gw-b", Roles: []string{"gateway", "transparent"}, SandboxCIDR: "100.96.16.0/20",
			LastHeartbeat: now.Add(-5 * time.Minute), Revision: 17, VMs: 1, State: "down"},
	}
	var b bytes.Buffer
	header, rows := nodeTable(nodes, now)
	if err := printTable(&b, header, rows); err != nil {
		t.Fatal(err)
	}
	want := `ID     ROLES                    ADDRESS          LABELS              SANDBOX CIDR    STATE  LAST HEARTBEAT  REVISION  VMS
api-1  api                      127.0.0.1:8470   -                   -               up     1s ago          42        0
gw-a   api,gateway,transparent  198.18.0.2:8470  gpu=true,zone=eu-1  100.96.0.0/20   up     2s ago          42        3
gw-b   gateway,transparent      -                -                   100.96.16.0/20  down   5m ago          17        1
`
	if b.String() != want {
		t.Errorf("node table:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestVMCreateNodeFlagErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--netns", "--node-selector", "zone"}, `invalid value "zone" for flag -node-selector: "zone" is not k=v (a label name, "=", its value), e.g. zone=eu-1`},
		{[]string{"--netns", "--node-selector", "=eu-1"}, `"=eu-1" is not k=v`},
		{[]string{"--netns", "--node-selector", "zone=eu-1,"}, `invalid value "zone=eu-1," for flag -node-selector: empty entry; give labels as k=v`},
		{[]string{"--netns", "--node-selector", "zone=eu-1", "--node-selector", "zone=us-2"}, `label "zone" is given twice (eu-1 and us-2)`},
		{[]string{"--node", "gw-a"}, "--node goes with --netns"},
		{[]string{"--node-selector", "zone=eu-1"}, "--node-selector goes with --netns"},
	}
	for _, tc := range cases {
		// A URL that nothing answers: each case must fail before any request.
		env := map[string]string{"EGRESSD_URL": "http://127.0.0.1:1", "EGRESSD_API_KEY": "k"}
		stdout, stderr, code := runHere(env, append([]string{"vm", "create"}, tc.args...)...)
		if code != exitError || stdout != "" || !strings.Contains(stderr, tc.want) ||
			!strings.Contains(stderr, "Usage: egressctl vm create") || strings.Contains(stderr, "cannot reach") {
			t.Errorf("vm create %q: exit %d\nstdout: %s\nstderr: %s\nwant stderr to say %q", tc.args, code, stdout, stderr, tc.want)
		}
	}

	var s selectorFlag
	for _, v := range []string{"zone=eu-1, gpu=true", "zone=eu-1", "empty="} {
		if err := s.Set(v); err != nil {
			t.Fatalf("Set(%q): %v", v, err)
		}
	}
	if got := s.String(); got != "empty=,gpu=true,zone=eu-1" {
		t.Errorf("selector = %q", got)
	}
}

// fleetAPI is a fake egressd of a fleet: it answers what each test sets per "METHOD path",
// and records the request bodies.
type fleetAPI struct {
	*httptest.Server
	mu      sync.Mutex
	answers map[string]fakeAnswer
	bodies  map[string]string
}

type fakeAnswer struct {
	status int
	body   string
}

func newFleetAPI(t *testing.T) *fleetAPI {
	t.Helper()
	f := &fleetAPI{answers: map[string]fakeAnswer{}, bodies: map[string]string{}}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		key := r.Method + " " + r.URL.Path
		f.mu.Lock()
		f.bodies[key] = string(body)
		a, ok := f.answers[key]
		f.mu.Unlock()
		if !ok {
			a = fakeAnswer{404, `{"error":{"code":"not_found","message":"no such thing"}}`}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		io.WriteString(w, a.body)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fleetAPI) answer(key string, status int, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[key] = fakeAnswer{status, body}
}

func (f *fleetAPI) body(key string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[key]
}

func (f *fleetAPI) run(args ...string) (stdout, stderr string, code int) {
	return runHere(map[string]string{"EGRESSD_URL": f.URL, "EGRESSD_API_KEY": "k"}, args...)
}

const (
	pendingVM  = `{"vm_id":"agent-1","network":{"mode":"netns","node":"gw-b","state":"pending"},"sessions":0,"created_at":"2026-01-02T03:04:05Z"}`
	readyVM    = `{"vm_id":"agent-2","network":{"mode":"netns","node":"gw-a","state":"ready","netns":"egressd-agent-2","path":"/run/netns/egressd-agent-2","address":"100.96.0.6","gateway":"100.96.0.5"},"sessions":1,"created_at":"2026-01-02T03:04:05Z"}`
	deletingVM = `{"vm_id":"agent-1","network":{"mode":"netns","node":"gw-b","state":"deleting"},"sessions":0,"created_at":"2026-01-02T03:04:05Z"}`
)

func TestVMCreateOnANode(t *testing.T) {
	f := newFleetAPI(t)

	// 201: ready, with the node and the attachment; nothing more to say.
	f.answer("POST /v1/vms", http.StatusCreated, readyVM)
	stdout, stderr, code := f.run("vm", "create", "--id", "agent-2", "--netns", "--node", "gw-a")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if got, want := f.body("POST /v1/vms"), `{"vm_id":"agent-2","network":{"mode":"netns","node":"gw-a"}}`; got != want {
		t.Errorf("sent %s, want %s", got, want)
	}
	want := `vm_id:     agent-2
network:   netns
node:      gw-a
state:     ready
netns:     egressd-agent-2
path:      /run/netns/egressd-agent-2
address:   100.96.0.6
gateway:   100.96.0.5
sessions:  1
created:   2026-01-02T03:04:05Z
policy:    none
`
	if stdout != want {
		t.Errorf("vm create (ready):\n%s\nwant:\n%s", stdout, want)
	}

	// 202: pending; the selector is sent as a map, and stderr says how to watch.
	f.answer("POST /v1/vms", http.StatusAccepted, pendingVM)
	stdout, stderr, code = f.run("vm", "create", "--id", "agent-1", "--netns", "--node-selector", "zone=eu-1,gpu=true", "--node-selector", "arch=x86_64")
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if got, want := f.body("POST /v1/vms"), `{"vm_id":"agent-1","network":{"mode":"netns","node_selector":{"arch":"x86_64","gpu":"true","zone":"eu-1"}}}`; got != want {
		t.Errorf("sent %s, want %s", got, want)
	}
	mustHaveLine(t, stdout, "node:", "gw-b")
	mustHaveLine(t, stdout, "state:", "pending")
	if strings.Contains(stdout, "netns:") {
		t.Errorf("a pending VM shows a namespace:\n%s", stdout)
	}
	if want := "Node gw-b has not made the VM's network yet (state pending). Watch it with 'egressctl vm get agent-1': the state becomes ready, or failed with the reason.\n"; stderr != want {
		t.Errorf("stderr %q\nwant    %q", stderr, want)
	}

	// -o json: the API's JSON, and no note.
	stdout, stderr, code = f.run("vm", "create", "--netns", "-o", "json")
	var vm client.VM
	if err := json.Unmarshal([]byte(stdout), &vm); code != 0 || err != nil || stderr != "" || vm.Network.State != "pending" {
		t.Errorf("-o json: exit %d, %v\nstdout: %s\nstderr: %s", code, err, stdout, stderr)
	}
}

func TestVMListAndGetShowNodeAndState(t *testing.T) {
	f := newFleetAPI(t)
	f.answer("GET /v1/vms", http.StatusOK, `{"vms":[
		{"vm_id":"plain","network":{"mode":"none"},"sessions":2,"created_at":"2026-01-02T03:04:05Z"},
		{"vm_id":"old-netns","network":{"mode":"netns","netns":"egressd-old","path":"/run/netns/egressd-old"},"sessions":0,"created_at":"2026-01-02T03:04:05Z"},
		{"vm_id":"agent-1","network":{"mode":"netns","node":"gw-b","state":"node_down","netns":"egressd-agent-1","path":"/run/netns/egressd-agent-1"},"sessions":0,"created_at":"2026-01-02T03:04:05Z"}]}`)
	stdout, stderr, code := f.run("vm", "list")
	want := `VM         NETWORK  NODE  STATE      SESSIONS  CREATED
plain      none     -     -          2         2026-01-02T03:04:05Z
old-netns  netns    -     ready      0         2026-01-02T03:04:05Z
agent-1    netns    gw-b  node_down  0         2026-01-02T03:04:05Z
`
	if code != 0 || stdout != want {
		t.Errorf("vm list: exit %d\n%s\nwant:\n%s\nstderr: %s", code, stdout, want, stderr)
	}

	f.answer("GET /v1/vms/agent-3", http.StatusOK,
		`{"vm_id":"agent-3","network":{"mode":"netns","node":"gw-a","state":"failed","error":"no free address in 100.96.0.0/30"},"sessions":0,"created_at":"2026-01-02T03:04:05Z"}`)
	stdout, _, code = f.run("vm", "get", "agent-3")
	if code != 0 {
		t.Fatalf("vm get: exit %d", code)
	}
	mustHaveLine(t, stdout, "node:", "gw-a")
	mustHaveLine(t, stdout, "state:", "failed")
	mustHaveLine(t, stdout, strings.Fields("error: no free address in 100.96.0.0/30")...)

	// A VM without a namespace shows neither node nor state.
	f.answer("GET /v1/vms/plain", http.StatusOK, `{"vm_id":"plain","network":{"mode":"none"},"sessions":0,"created_at":"2026-01-02T03:04:05Z"}`)
	stdout, _, _ = f.run("vm", "get", "plain")
	if strings.Contains(stdout, "node:") || strings.Contains(stdout, "state:") {
		t.Errorf("vm get of a VM without a namespace:\n%s", stdout)
	}
}

func TestVMDeleteStillDeleting(t *testing.T) {
	f := newFleetAPI(t)

	// 202, and the VM reads back in state deleting: say so, exit 0.
	f.answer("DELETE /v1/vms/agent-1", http.StatusAccepted, deletingVM)
	f.answer("GET /v1/vms/agent-1", http.StatusOK, deletingVM)
	stdout, stderr, code := f.run("vm", "delete", "agent-1")
	want := "VM agent-1 is being deleted: node gw-b has not removed its network yet. It does when it can (if it is down, once it is back: see 'egressctl node list'); 'egressctl vm get agent-1' answers not found once it is gone.\n"
	if code != 0 || stdout != want || stderr != "" {
		t.Errorf("vm delete (202): exit %d\nstdout: %q\nwant:   %q\nstderr: %s", code, stdout, want, stderr)
	}
	stdout, _, code = f.run("vm", "delete", "agent-1", "-o", "json")
	var vm client.VM
	if err := json.Unmarshal([]byte(stdout), &vm); code != 0 || err != nil || vm.Network.State != "deleting" {
		t.Errorf("vm delete -o json (202): exit %d, %v: %s", code, err, stdout)
	}

	// 202, but the node finished before the read: it is gone.
	f.answer("GET /v1/vms/agent-1", http.StatusNotFound, `{"error":{"code":"not_found","message":"VM \"agent-1\" not found"}}`)
	if stdout, stderr, code := f.run("vm", "delete", "agent-1"); code != 0 || stdout != "deleted VM agent-1\n" {
		t.Errorf("vm delete (gone): exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}

	// 204.
	f.answer("DELETE /v1/vms/plain", http.StatusNoContent, "")
	if stdout, stderr, code := f.run("vm", "delete", "plain"); code != 0 || stdout != "deleted VM plain\n" {
		t.Errorf("vm delete (204): exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if stdout, _, code := f.run("vm", "delete", "plain", "-o", "json"); code != 0 || stdout != "" {
		t.Errorf("vm delete -o json (204): exit %d, printed %q", code, stdout)
	}

	// The read back fails: the delete was still accepted.
	f.answer("DELETE /v1/vms/agent-9", http.StatusAccepted, deletingVM)
	f.answer("GET /v1/vms/agent-9", http.StatusInternalServerError, `{"error":{"code":"internal","message":"internal error"}}`)
	if stdout, stderr, code := f.run("vm", "delete", "agent-9"); code != 0 || stdout != "" ||
		!strings.Contains(stderr, "deleting it was accepted, but reading it back failed") {
		t.Errorf("vm delete (read back fails): exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
}

func TestExecWithoutANamespaceSaysWhy(t *testing.T) {
	f := newFleetAPI(t)
	f.answer("GET /v1/vms/agent-1", http.StatusOK, pendingVM)
	_, stderr, code := f.run("exec", "agent-1", "--", "true")
	if code != exitError || !strings.Contains(stderr, "VM agent-1 has no network namespace to run in (state pending on node gw-b). Node gw-b has not made") {
		t.Errorf("exec on a pending VM: exit %d\nstderr: %s", code, stderr)
	}
}

func TestNodeListAgainstAFakeFleet(t *testing.T) {
	f := newFleetAPI(t)
	body := `{"nodes":[{"id":"gw-a","roles":["gateway","transparent"],"labels":{"zone":"eu-1"},"sandbox_cidr":"100.96.0.0/20","last_heartbeat":"2026-01-02T03:04:05Z","revision":42,"vm_count":3,"state":"down"}]}`
	f.answer("GET /v1/nodes", http.StatusOK, body)
	for _, args := range [][]string{{"node", "list"}, {"nodes"}} {
		stdout, stderr, code := f.run(args...)
		if code != 0 {
			t.Fatalf("%q: exit %d\n%s", args, code, stderr)
		}
		mustHaveLine(t, strings.SplitN(stdout, "\n", 2)[0], "ID", "ROLES", "ADDRESS", "LABELS", "SANDBOX", "CIDR", "STATE", "LAST", "HEARTBEAT", "REVISION", "VMS")
		if !hasLine(stdout, "gw-a", "gateway,transparent", "-", "zone=eu-1", "100.96.0.0/20", "down", strings.Fields(formatAge(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), time.Now()))[0], "ago", "42", "3") {
			t.Errorf("%q:\n%s", args, stdout)
		}
	}
	stdout, _, _ := f.run("nodes", "-o", "json")
	var list client.NodeList
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&list); err != nil || len(list.Nodes) != 1 || list.Nodes[0].SandboxCIDR != "100.96.0.0/20" {
		t.Errorf("nodes -o json: %v\n%s", err, stdout)
	}

	// A tenant key: the API's 403, as for key list.
	f.answer("GET /v1/nodes", http.StatusForbidden, `{"error":{"code":"forbidden","message":"this needs an admin key"}}`)
	if _, stderr, code := f.run("nodes"); code != exitError || !strings.Contains(stderr, "(403 forbidden)") {
		t.Errorf("nodes with a tenant key: exit %d\n%s", code, stderr)
	}
}
