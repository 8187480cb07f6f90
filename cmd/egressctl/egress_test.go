package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/egressd/egressd/client"
)

// TestEgressGetSetRoundTrip: what `egress get -o json` prints is taken back by `egress set -f -`
// through a shell pipe, as written in the help: the read-only fields it printed (scope, id,
// revision, updated_at, warnings) are dropped, and the rules come back unchanged, on the same
// session or on a VM.
func TestEgressGetSetRoundTrip(t *testing.T) {
	c, _ := startCtl(t)
	s := c.newSession("vm-rt")
	// Domains without a web flag: accepted, with a warning to drop on the way back.
	var before client.Policy
	c.json(&before, "egress", "set", "--session", s, "--domain", "a.example.test", "--cidr", "198.51.100.0/24",
		"--deny-domain", "b.example.test", "--monitor")
	if len(before.Warnings) == 0 {
		t.Fatalf("the policy has no warning to drop: %+v", before)
	}

	pipe := func(from, to string) {
		t.Helper()
		// The pipe of the help: egressctl's directory first on PATH, as an installed binary is.
		cmd := exec.Command("sh", "-c", "egressctl -o json egress get "+from+" | egressctl egress set "+to+" -f -")
		cmd.Env = append(c.env, "PATH="+filepath.Dir(c.bin)+":/usr/bin:/bin")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("get %s | set %s: %v\n%s", from, to, err, out)
		}
	}
	pipe("--session "+s, "--session "+s)
	var after client.Policy
	c.json(&after, "egress", "get", "--session", s)
	if after.Revision <= before.Revision || rules(t, after) != rules(t, before) {
		t.Errorf("after the round trip: %s (revision %d), want %s (revision > %d)", rules(t, after), after.Revision, rules(t, before), before.Revision)
	}

	// A session's policy copied onto a VM: the scope it was printed with does not matter.
	pipe("--session "+s, "--vm vm-rt")
	var vm client.Policy
	c.json(&vm, "egress", "get", "--vm", "vm-rt")
	if vm.Scope != client.ScopeVM || rules(t, vm) != rules(t, before) {
		t.Errorf("copied onto the VM: %s %s, want %s", vm.Scope, rules(t, vm), rules(t, before))
	}
}

// rules is a stored policy's rules as JSON, without what the store adds.
func rules(t *testing.T, p client.Policy) string {
	t.Helper()
	data, err := json.Marshal(p.Policy)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
