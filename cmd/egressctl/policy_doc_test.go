package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

// TestPolicyDocTCPExample runs the example of docs/policy.md's allowed_tcp section as
// written, against a real egressd on loopback: every command succeeds (bash -e) and every
// `egress check` decides what its comment says. Only the setup block is the test's own.
func TestPolicyDocTCPExample(t *testing.T) {
	requireTools(t, "the example", "bash", "python3")
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "policy.md"))
	if err != nil {
		t.Fatal(err)
	}
	script := sectionScript(t, string(doc), "## TCP by name: `allowed_tcp`", "set -e\n", 3)
	want := decisions(checkComment, script.String())

	in := egressdtest.Start(t)
	dir := t.TempDir()
	out := runExample(t, in, dir, script.String())
	got := decisions(decisionLine, out)
	if len(want) < 6 || !slices.Equal(got, want) {
		t.Errorf("egress check decided %v; the comments say %v\n%s", got, want, out)
	}
	for _, re := range []string{
		`(?m)^allow +\(layer session, reason allowed_tcp, rule allowed_tcp github\.com:22\)`,
		`(?m)^deny +\(layer session, reason denied_domain`,
		`(?m)^allowed_tcp: +\*\.db\.example\.com:5432 +\(from session, vm\)`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("the output has no line matching %s:\n%s", re, out)
		}
	}
}
