package api_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
)

// jsonBlocks returns the ```json blocks of a Markdown section (from the line start to the
// next heading of the same or a higher level).
func jsonBlocks(t *testing.T, doc, start string) []string {
	t.Helper()
	i := strings.Index(doc, "\n"+start+"\n")
	if i < 0 {
		t.Fatalf("no heading %q", start)
	}
	// The section ends at the next heading of its level or a higher one.
	level := len(strings.Fields(start)[0])
	section := doc[i+len(start)+2:]
	for off := 0; ; {
		j := strings.Index(section[off:], "\n#")
		if j < 0 {
			break
		}
		head := strings.Fields(section[off+j+1:])[0]
		if strings.Trim(head, "#") == "" && len(head) <= level {
			section = section[:off+j]
			break
		}
		off += j + 1
	}
	var blocks []string
	for {
		i := strings.Index(section, "```json\n")
		if i < 0 {
			return blocks
		}
		section = section[i+len("```json\n"):]
		j := strings.Index(section, "```")
		if j < 0 {
			t.Fatalf("a json block under %q is not closed", start)
		}
		blocks = append(blocks, section[:j])
		section = section[j:]
	}
}

// TestAPIDocAllowedTCP: docs/api.md's allowed_tcp examples are what egressd answers. Every
// check body of the check section is accepted; the error and the allow answer it quotes are
// the answers, field for field.
func TestAPIDocAllowedTCP(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	// A body with "resolve" must not send a query off the machine, whatever the policy.
	d := testnet.StartDNS(t, "127.0.0.1")
	in := egressdtest.Start(t, "--dns-upstream", d.Addr)
	c := newClient(t, in, in.AdminKey)
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)
	sid := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)["session_id"].(string)
	c.do("POST", "/v1/egress/session/"+sid, map[string]any{"allow_https": true, "allowed_tcp": []string{"github.com:22"}}).must(t, http.StatusOK)

	checks := jsonBlocks(t, doc, "### check")
	if len(checks) < 2 {
		t.Fatalf("the check section has %d json blocks", len(checks))
	}
	var bodies int
	for _, line := range strings.Split(strings.TrimSpace(checks[0]), "\n") {
		bodies++
		r := c.do("POST", "/v1/egress/session/"+sid+"/check", line)
		if r.status != http.StatusOK {
			t.Errorf("the documented check body %s: %d %s", line, r.status, r.raw)
		}
	}
	if bodies < 5 || !strings.Contains(checks[0], `"port": 22`) {
		t.Errorf("the check bodies do not show allowed_tcp's form:\n%s", checks[0])
	}
	// The allow answer it quotes.
	var want map[string]any
	if err := json.Unmarshal([]byte(checks[1]), &want); err != nil {
		t.Fatalf("the documented answer %s: %v", checks[1], err)
	}
	got := c.do("POST", "/v1/egress/session/"+sid+"/check", map[string]any{"host": "github.com", "port": 22}).must(t, http.StatusOK)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("check github.com:22 answers %v; docs/api.md says %v", got, want)
	}

	// The error it quotes, for the policy it describes (the bad entry second).
	var wantErr map[string]any
	var errBlock string
	for _, b := range jsonBlocks(t, doc, "## Policies") {
		if strings.Contains(b, "allowed_tcp[") {
			errBlock = b
		}
	}
	if err := json.Unmarshal([]byte(errBlock), &wantErr); err != nil {
		t.Fatalf("the documented error %q: %v", errBlock, err)
	}
	r := c.do("POST", "/v1/egress/session/"+sid, map[string]any{"allowed_tcp": []string{"github.com:22", "140.82.112.3:22"}})
	if r.status != http.StatusBadRequest || !reflect.DeepEqual(r.body, wantErr) {
		t.Errorf("the policy answers %d %s; docs/api.md says %v", r.status, r.raw, wantErr)
	}
}
