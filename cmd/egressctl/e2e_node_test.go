package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

// TestNodeListE2E: a single egressd registers itself as a node (its --node-id, its roles and
// labels), and egressctl lists it to an admin key and refuses a tenant's.
func TestNodeListE2E(t *testing.T) {
	in := egressdtest.Start(t, "--node-id", "ctl-node-1", "--node-label", "zone=lab,tier=test")
	c := newCtl(t, in.URL, in.AdminKey)

	var list client.NodeList
	c.json(&list, "node", "list")
	if len(list.Nodes) != 1 {
		t.Fatalf("node list -o json: %+v", list)
	}
	n := list.Nodes[0]
	if n.ID != "ctl-node-1" || !slices.Equal(n.Roles, []string{"api", "gateway"}) || n.State != "up" ||
		n.Labels["zone"] != "lab" || n.Labels["tier"] != "test" || n.LastHeartbeat.IsZero() || n.Address == "" {
		t.Fatalf("node list -o json: %+v", n)
	}

	for _, args := range [][]string{{"node", "list"}, {"nodes"}} {
		out := c.ok(args...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 {
			t.Fatalf("%q: want a header and one node:\n%s", args, out)
		}
		mustHaveLine(t, lines[0], "ID", "ROLES", "ADDRESS", "LABELS", "SANDBOX", "CIDR", "STATE", "LAST", "HEARTBEAT", "REVISION", "VMS")
		f := strings.Fields(lines[1])
		// ID ROLES ADDRESS LABELS SANDBOX-CIDR STATE AGE "ago" REVISION VMS
		if len(f) != 10 || f[0] != "ctl-node-1" || f[1] != "api,gateway" || f[2] != n.Address ||
			f[3] != "tier=test,zone=lab" || f[4] != "-" || f[5] != "up" || !strings.HasSuffix(f[6], "s") || f[7] != "ago" || f[9] != "0" {
			t.Fatalf("%q: the node's row is %q", args, f)
		}
	}

	var k client.APIKey
	c.json(&k, "key", "create", "--tenant", "acme")
	newCtl(t, in.URL, k.Key).fails(1, "(403 forbidden)", "nodes")
}
