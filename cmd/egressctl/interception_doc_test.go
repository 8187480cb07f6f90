package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
)

// docOriginIP is the fake origin of docs/interception.md's example: its own address inside
// the /26 that the test's egressd takes as public.
const docOriginIP = "127.0.0.36"

// docValue is the secret's value in docs/interception.md's example.
const docValue = "sk-example-0123456789abcdef"

// TestInterceptionDocExample runs docs/interception.md's worked example as written, against
// a real egressd that intercepts, whose fake origin serves api.example.test and
// other.example.test: every command succeeds (bash -e), the origin gets the secret's value
// for the placeholder over HTTP/1.1 and HTTP/2, the refusals carry the reasons the doc says,
// and the value is nowhere in what the example prints.
func TestInterceptionDocExample(t *testing.T) {
	testnet.RequireRoot(t) // the fake origin listens on port 443
	requireTools(t, "the example", "bash", "curl", "python3", "awk", "grep")
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "interception.md"))
	if err != nil {
		t.Fatal(err)
	}
	script := exampleScript(t, string(doc), "set -e -o pipefail\n")

	var mu sync.Mutex
	var seen []string // what the origin got: method, path, and whether the value came
	ca := testnet.NewCA(t)
	testnet.StartWeb(t, docOriginIP, ca, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get("Authorization") == "Bearer "+docValue
		mu.Lock()
		seen = append(seen, r.Method+" "+r.Host+r.URL.Path)
		mu.Unlock()
		if !got {
			http.Error(w, "origin: no key", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "origin: "+r.Method+" "+r.URL.Path+" with the secret's value\n")
	}))
	dns := testnet.StartDNS(t, "127.0.0.1")
	dns.Set("api.example.test", docOriginIP)
	dns.Set("other.example.test", docOriginIP)
	dir := t.TempDir()
	in := egressdtest.Start(t, "--public-cidrs", "127.0.0.0/26", "--dns-upstream", dns.Addr,
		"--upstream-ca-file", ca.WriteFile(t, t.TempDir()))
	out := runExample(t, in, dir, script.String())
	o := out
	for _, want := range []string{
		"origin: GET /v1/models with the secret's value\nHTTP/1.1\n",
		"origin: GET /v1/models with the secret's value\nHTTP/2\n",
	} {
		if !strings.Contains(o, want) {
			t.Errorf("the output lacks %q:\n%s", want, o)
		}
	}
	for _, reason := range []string{"method_not_allowed", "path_not_allowed", "secret_not_for_host"} {
		if !regexp.MustCompile(`(?mi)^x-egress-reason: ` + reason + `\b`).MatchString(o) {
			t.Errorf("no X-Egress-Reason: %s in the output:\n%s", reason, o)
		}
	}
	if n := len(regexp.MustCompile(`(?m)\brequest\b.*api\.example\.test`).FindAllString(o, -1)); n < 4 {
		t.Errorf("egressctl events shows %d request events for api.example.test, want 4:\n%s", n, o)
	}
	if strings.Contains(o, docValue) && strings.Count(o, docValue) > strings.Count(script.String(), docValue) {
		t.Errorf("the value is in the output:\n%s", o)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(seen, ",") != "GET api.example.test/v1/models,GET api.example.test/v1/models" {
		t.Errorf("the origin got %v, want the two allowed requests only", seen)
	}
}
