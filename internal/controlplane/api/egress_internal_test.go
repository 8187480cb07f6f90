package api

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/policy"
)

// TestPolicyOutOldRecord: a policy stored before allowed_tcp and http_rules existed decodes
// with those lists nil; the API answers them as empty lists, never null, so that a client
// reading a list field never has to tell null from [].
func TestPolicyOutOldRecord(t *testing.T) {
	old := policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"a.example.test"}, AllowedCIDRs: []string{}, DeniedDomains: []string{}, Mode: policy.Enforce}
	data, err := json.Marshal(policyOut(store.PolicyRecord{Scope: store.ScopeVM, ID: "v", Policy: old}, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"allowed_tcp":[]`, `"http_rules":[]`, `"allowed_domains":["a.example.test"]`, `"allow_https":true`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("answer %s lacks %s", data, want)
		}
	}
	if strings.Contains(string(data), "null") {
		t.Errorf("answer has a null: %s", data)
	}
}
