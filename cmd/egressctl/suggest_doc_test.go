package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
)

// learnIP is where the example's names lead: inside --public-cidrs, with nothing listening
// (monitor mode lets the requests through; they fail there, after being recorded).
const learnIP = "127.0.0.44"

// TestPolicyDocLearnExample runs the example of docs/policy.md's "Learning a policy" section
// as written, against a real egressd on loopback with a fake DNS: every command succeeds
// (bash -e), the suggestion collapses the siblings, and every `egress check` decides what its
// comment says. Only the setup block is the test's own.
func TestPolicyDocLearnExample(t *testing.T) {
	requireTools(t, "the example", "bash", "python3", "curl", "sed")
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "policy.md"))
	if err != nil {
		t.Fatal(err)
	}
	script := sectionScript(t, string(doc), "## Learning a policy: monitor mode and suggestions", "set -e\n", 4)
	want := decisions(checkComment, script.String())

	dns := testnet.StartDNS(t, "127.0.0.1")
	for _, n := range []string{"a.svc.example.com", "b.svc.example.com", "cdn.img.example.com", "api.partner.test"} {
		dns.Set(n, learnIP)
	}
	in := egressdtest.Start(t, "--public-cidrs", "127.0.0.0/26", "--dns-upstream", dns.Addr)
	dir := t.TempDir()
	out := runExample(t, in, dir, script.String())
	got := decisions(decisionLine, out)
	if len(want) < 4 || !slices.Equal(got, want) {
		t.Errorf("egress check decided %v; the comments say %v\n%s", got, want, out)
	}
	for _, re := range []string{
		// Each request is two decisions in monitor mode: the request, and the connection it opened.
		`(?m)^ +allow_http +true +8$`,
		`(?m)^ +allowed_domains +\*\.example\.com \(a\.svc\.example\.com, b\.svc\.example\.com, cdn\.img\.example\.com\) +6$`,
		`(?m)^ +allowed_domains +api\.partner\.test +2$`,
		`(?m)^ +\+ allowed_domains \*\.example\.com$`,
		`(?m)^ +~ allow_http: false -> true$`,
		`(?m)^Applied: the session \S+ policy is now revision \d+\.$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("the output has no line matching %s:\n%s", re, out)
		}
	}
}
