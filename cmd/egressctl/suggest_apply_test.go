package main

// --apply against a stand-in API: it must not set a policy that changed (or was cleared, or
// set) since the suggestion was read, and it must not write for a suggestion with no change.

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/policy"
)

func TestSuggestApplyRefusesAStaleSuggestion(t *testing.T) {
	merged := policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"a.test"}}.WithDefaults()
	for _, tc := range []struct {
		name       string
		suggestion client.Suggestion
		current    func(w http.ResponseWriter) // the answer of GET .../session/s-1
		code       int
		stderr     string
		wantPOST   bool
	}{{
		name:       "changed since",
		suggestion: client.Suggestion{Scope: "session", ID: "s-1", PolicySet: true, Revision: 3, Changed: true, Policy: &merged},
		current:    policyAnswer(4),
		code:       1, stderr: "changed since the suggestion was read (revision 3, now 4)",
	}, {
		name:       "cleared since",
		suggestion: client.Suggestion{Scope: "session", ID: "s-1", PolicySet: true, Revision: 3, Changed: true, Policy: &merged},
		current: func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(404)
			w.Write([]byte(`{"error": {"code": "policy_not_set", "message": "session \"s-1\" has no egress policy set"}}`))
		},
		code: 1, stderr: "was cleared since",
	}, {
		name:       "set since",
		suggestion: client.Suggestion{Scope: "session", ID: "s-1", PolicySet: false, Changed: true, Policy: &merged},
		current:    policyAnswer(9),
		code:       1, stderr: "changed since the suggestion was read (revision 0, now 9)",
	}, {
		name:       "nothing to change",
		suggestion: client.Suggestion{Scope: "session", ID: "s-1", PolicySet: true, Revision: 3, Policy: &merged},
		current:    policyAnswer(3),
		code:       0,
	}, {
		name:       "unchanged: applied",
		suggestion: client.Suggestion{Scope: "session", ID: "s-1", PolicySet: true, Revision: 3, Changed: true, Policy: &merged},
		current:    policyAnswer(3),
		code:       0, wantPOST: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var posts atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case r.Method == "GET" && r.URL.Path == "/v1/egress/session/s-1/suggestion":
					w.Header().Set("Content-Type", "application/json")
					json.NewEncoder(w).Encode(tc.suggestion)
				case r.Method == "GET" && r.URL.Path == "/v1/egress/session/s-1":
					tc.current(w)
				case r.Method == "POST" && r.URL.Path == "/v1/egress/session/s-1":
					posts.Add(1)
					policyAnswer(10)(w)
				default:
					http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, 500)
				}
			}))
			defer srv.Close()
			_, stderr, code := runHere(map[string]string{"EGRESSD_URL": srv.URL, "EGRESSD_API_KEY": "k"},
				"suggest", "--session", "s-1", "--apply", "--yes")
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("exit %d, want %d; stderr %q, want %q", code, tc.code, stderr, tc.stderr)
			}
			if got := posts.Load() > 0; got != tc.wantPOST {
				t.Fatalf("POSTed: %v, want %v", got, tc.wantPOST)
			}
		})
	}
}

func policyAnswer(revision int64) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(client.Policy{Policy: policy.DenyAll(), Scope: "session", ID: "s-1", Revision: revision})
	}
}

// TestSuggestUsage: a wrong command line is refused before any request, saying what is wrong.
func TestSuggestUsage(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"suggest"}, "give exactly one of --session and --vm"},
		{[]string{"suggest", "--session", "s", "--vm", "v"}, "give exactly one of --session and --vm"},
		{[]string{"suggest", "--session", "s", "--since", "yesterday"}, `--since "yesterday"`},
		{[]string{"suggest", "--session", "s", "--yes"}, "--yes goes with --apply"},
		{[]string{"suggest", "--session", "s", "extra"}, `unexpected argument "extra"`},
	} {
		// No server at all: the refusal must come before any request.
		_, stderr, code := runHere(map[string]string{"EGRESSD_URL": "http://127.0.0.1:1"}, tc.args...)
		if code != exitError || !strings.Contains(stderr, tc.stderr) || !strings.Contains(stderr, "Usage: egressctl suggest") {
			t.Errorf("%q: exit %d, stderr %q; want %d with %q", tc.args, code, stderr, exitError, tc.stderr)
		}
	}
	out, _, code := runHere(nil, "suggest", "--help")
	if code != 0 || !strings.Contains(out, "--apply") || !strings.Contains(out, "monitor") {
		t.Errorf("suggest --help: exit %d\n%s", code, out)
	}
}
