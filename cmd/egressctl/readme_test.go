package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
)

// readmeSetupMarker precedes the README's block that the test provides itself (building the
// binaries, pointing EGRESSD_URL and EGRESSD_API_KEY at egressd): every other shell block of
// the worked example runs as written.
const readmeSetupMarker = "<!-- README test: "

// docSetupMarker is readmeSetupMarker in the docs' worked examples (docs/interception.md).
const docSetupMarker = "<!-- doc test: "

// shellBlock is one ```sh block of a Markdown text.
type shellBlock struct {
	code  string
	setup bool // preceded by readmeSetupMarker
}

// exampleScript is the worked example of a document (the ```sh blocks under "## A worked
// example") as one bash script that starts with preamble: sectionScript with at least four
// blocks besides the setup.
func exampleScript(t *testing.T, doc, preamble string) *strings.Builder {
	t.Helper()
	return sectionScript(t, doc, "## A worked example", preamble, 5)
}

// sectionScript is the ```sh blocks of the section of doc that starts at heading, as one bash
// script that starts with preamble. Its one setup block, which the test does itself, is left
// out; a section without it, or with fewer than minBlocks blocks in all, fails t.
func sectionScript(t *testing.T, doc, heading, preamble string, minBlocks int) *strings.Builder {
	t.Helper()
	blocks := shellBlocks(t, doc, heading)
	script := &strings.Builder{}
	script.WriteString(preamble)
	setups := 0
	for _, b := range blocks {
		if b.setup {
			setups++
			continue
		}
		script.WriteString(b.code)
	}
	if setups != 1 || len(blocks) < minBlocks {
		t.Fatalf("the example has %d blocks, %d of them marked as setup; want one setup block and the example", len(blocks), setups)
	}
	return script
}

// runExample runs a document's worked example (from exampleScript) with bash in dir, with
// egressctl on its PATH (bin/) and in's URL and admin key as EGRESSD_URL and
// EGRESSD_API_KEY, and nothing else of the developer's shell that would send the requests
// elsewhere (other EGRESSD_* variables, proxies). It returns what the script printed, and
// fails the test if the script failed or ran over two minutes.
func runExample(t *testing.T, in *egressdtest.Instance, dir, script string) string {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(egressdtest.Binary(t, "egressctl"), filepath.Join(dir, "bin", "egressctl")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "EGRESSD_URL=" + in.URL, "EGRESSD_API_KEY=" + in.AdminKey}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("the example failed: %v\n--- script:\n%s--- output:\n%s", err, script, out.String())
	}
	return out.String()
}

// shellBlocks returns the ```sh blocks of text between the heading start and the next "## ".
func shellBlocks(t *testing.T, text, start string) []shellBlock {
	t.Helper()
	i := strings.Index(text, "\n"+start+"\n")
	if i < 0 {
		t.Fatalf("no heading %q", start)
	}
	section := text[i+len(start)+2:]
	if j := strings.Index(section, "\n## "); j >= 0 {
		section = section[:j]
	}
	var blocks []shellBlock
	var cur *shellBlock
	setup := false
	for _, line := range strings.Split(section, "\n") {
		switch {
		case cur != nil && line == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.code += line + "\n"
		case line == "```sh":
			cur = &shellBlock{setup: setup}
			setup = false
		case strings.HasPrefix(line, readmeSetupMarker), strings.HasPrefix(line, docSetupMarker):
			setup = true
		}
	}
	if cur != nil {
		t.Fatalf("a shell block under %q is not closed", start)
	}
	return blocks
}

// checkComment is an `egress check` line with the decision the README says it gets.
var checkComment = regexp.MustCompile(`egress check .*#\s*(allow|deny)\b`)

// decisionLine is egressctl's answer to a check: "allow (layer ...)" or "deny  (layer ...)".
var decisionLine = regexp.MustCompile(`(?m)^(allow|deny) +\(layer `)

// decisions lists, in order, the decision each match of re (checkComment or decisionLine)
// in s names.
func decisions(re *regexp.Regexp, s string) []string {
	var out []string
	for _, m := range re.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// requireTools fails (CI) or skips unless every tool an example uses is on PATH; whose
// names the example in the message.
func requireTools(t *testing.T, whose string, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		_, err := exec.LookPath(tool)
		testnet.Require(t, err == nil, tool+" ("+whose+" uses it)")
	}
}

// TestREADMEWorkedExample runs the README's worked example top to bottom, as written, against
// a real egressd on loopback, so that the README cannot drift from what egressd and egressctl
// do: every command succeeds (bash -e), every `egress check` decides what its comment says, and
// the denial's reason shows where the README says it does. Only the setup block is the test's
// own: it builds the binaries and points EGRESSD_URL and EGRESSD_API_KEY at a fresh egressd on
// free ports.
func TestREADMEWorkedExample(t *testing.T) {
	requireTools(t, "the README's example", "bash", "curl", "python3")
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	script := exampleScript(t, string(readme), "set -e\n")
	want := decisions(checkComment, script.String())

	in := egressdtest.Start(t)
	dir := t.TempDir()
	out := runExample(t, in, dir, script.String())

	got := decisions(decisionLine, out)
	if len(want) < 4 || !slices.Equal(got, want) {
		t.Errorf("egress check decided %v; the README's comments say %v\n%s", got, want, out)
	}
	// The denied request's reason: in curl -v's headers, and in the events.
	if !regexp.MustCompile(`(?mi)^< X-Egress-Reason: \S`).MatchString(out) {
		t.Errorf("curl -v did not show X-Egress-Reason:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)\bdeny\s+connect\s+ses_\w+\s+example\.com:443\s+\S`).MatchString(out) {
		t.Errorf("egressctl events did not show the denial with its reason:\n%s", out)
	}
}
