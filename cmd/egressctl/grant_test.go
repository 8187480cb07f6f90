package main

import (
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
)

// TestGrantCommands: add, list and revoke against a real egressd, human and JSON, on a
// session and a VM; the errors name what to fix.
func TestGrantCommands(t *testing.T) {
	c, _ := startCtl(t)
	sid := c.newSession("vm-g")
	c.ok("egress", "set", "--session", sid, "--https", "--domain", "a.example.test")

	r := c.run("grant", "add", "--session", sid, "--domain", "Example.COM", "--tcp", "github.com:22", "--cidr", "198.51.100.0/24", "--ttl", "10m", "--note", "clone the repo")
	if r.code != 0 {
		t.Fatalf("grant add: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	mustHaveLine(t, r.stdout, "scope:", "session", sid)
	mustHaveLine(t, r.stdout, "domains:", "example.com")
	mustHaveLine(t, r.stdout, "tcp:", "github.com:22")
	mustHaveLine(t, r.stdout, "note:", "clone", "the", "repo")
	if strings.Contains(r.stderr, "warning") {
		t.Errorf("a warning for a grant that adds what it says: %s", r.stderr)
	}

	var g client.Grant
	c.json(&g, "grant", "add", "--vm", "vm-g", "--tcp", "db.example.test:5432", "--ttl", "90")
	if !strings.HasPrefix(g.ID, "gr_") || g.Scope != "vm" || g.ScopeID != "vm-g" || !g.ExpiresAt.Equal(g.CreatedAt.Add(90*time.Second)) {
		t.Errorf("grant add -o json: %+v", g)
	}

	eff := c.ok("egress", "effective", "--session", sid)
	if !strings.Contains(eff, "session "+sessionGrantID(t, c, sid)+" until ") || !strings.Contains(eff, "tcp github.com:22") {
		t.Errorf("egress effective does not show the grant:\n%s", eff)
	}

	list := c.ok("grant", "list", "--session", sid)
	mustHaveLine(t, list, "ID", "ENTRIES", "EXPIRES", "NOTE")
	if !strings.Contains(list, "domain example.com, tcp github.com:22, cidr 198.51.100.0/24") {
		t.Errorf("grant list:\n%s", list)
	}
	var gl client.GrantList
	c.json(&gl, "grant", "list", "--vm", "vm-g")
	if len(gl.Grants) != 1 || gl.Grants[0].ID != g.ID {
		t.Errorf("grant list -o json: %+v", gl)
	}

	// Domains on a layer whose web flags are off: said on stderr, stored all the same.
	r = c.run("grant", "add", "--vm", "vm-g", "--domain", "x.example.test", "--ttl", "1m")
	if r.code != 0 || !strings.Contains(r.stderr, "warning:") {
		t.Errorf("grant add with flags off: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	if out := c.ok("grant", "revoke", "--vm", "vm-g", g.ID); !strings.Contains(out, "revoked grant "+g.ID) {
		t.Errorf("grant revoke: %s", out)
	}
	c.fails(1, "no grant", "grant", "revoke", "--vm", "vm-g", g.ID)

	c.fails(1, "exactly one of --session and --vm", "grant", "add", "--tcp", "a.test:1", "--ttl", "1m")
	c.fails(1, "exactly one of --session and --vm", "grant", "list", "--session", sid, "--vm", "vm-g")
	c.fails(1, "give --ttl", "grant", "add", "--vm", "vm-g", "--tcp", "a.test:1")
	c.fails(1, "at least one --domain", "grant", "add", "--vm", "vm-g", "--ttl", "1m")
	for _, bad := range []string{"0s", "25h", "1.5s", "soon", "-1"} {
		c.fails(1, "--ttl", "grant", "add", "--vm", "vm-g", "--tcp", "a.test:1", "--ttl", bad)
	}
	c.fails(1, "tcp[0]", "grant", "add", "--vm", "vm-g", "--tcp", "github.com", "--ttl", "1m")
	c.fails(1, "not found", "grant", "add", "--vm", "nope", "--tcp", "a.test:1", "--ttl", "1m")
}

func sessionGrantID(t *testing.T, c *ctl, sid string) string {
	t.Helper()
	var gl client.GrantList
	c.json(&gl, "grant", "list", "--session", sid)
	if len(gl.Grants) == 0 {
		t.Fatal("no grant")
	}
	return gl.Grants[0].ID
}
