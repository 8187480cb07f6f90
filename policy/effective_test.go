package policy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestExplainGolden pins the JSON shape of GET /v1/egress/session/{id}/effective on a
// typical case: a session that wants the package managers and HTTPS to two services, on a VM
// that allows HTTPS to a wider set of hosts, one private range and a monitor-mode experiment;
// both layers have http_rules.
func TestExplainGolden(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	e := Explain(testPreset(t),
		NamedPolicy{Layer: LayerVM, Revision: 7, UpdatedAt: at, Policy: Policy{
			AllowHTTPS:     true,
			AllowedDomains: []string{"*.example.test", "pypi.org"},
			AllowedCIDRs:   []string{"10.0.0.0/8"},
			DeniedDomains:  []string{"bad.example.test"},
			HTTPRules:      []HTTPRule{{Domain: "*.example.test", Methods: []string{"GET"}}},
		}},
		NamedPolicy{Layer: LayerSession, Revision: 3, UpdatedAt: at.Add(time.Hour), Policy: Policy{
			AllowPackageManagers: true,
			AllowHTTPS:           true,
			AllowHTTP:            true,
			AllowedDomains:       []string{"api.example.test", "*.svc.example.test", "other.test"},
			AllowedCIDRs:         []string{"10.1.0.0/16", "192.0.2.0/24"},
			HTTPRules:            []HTTPRule{{Domain: "API.example.test", Methods: []string{"POST", "GET"}, Paths: []string{"/v1/", "/%7Eme"}}},
		}},
	)
	got, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "effective.golden.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestExplainGolden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Explain JSON differs from %s (run with -update if the change is meant):\n%s", path, got)
	}
}

func TestExplain(t *testing.T) {
	anyHTTPS := Policy{AllowHTTPS: true}
	tests := []struct {
		name   string
		layers []NamedPolicy
		check  func(t *testing.T, e Explanation)
	}{
		{"no layer", nil, func(t *testing.T, e Explanation) {
			expect(t, e.AllowHTTPS.Value == false && e.AllowedDomains.Hosts == HostsNone && e.Mode.Value == Enforce, "denies everything: %+v", e)
			expectNote(t, e, "everything is denied")
		}},
		{"default", []NamedPolicy{{Layer: LayerDefault, Policy: anyHTTPS}}, func(t *testing.T, e Explanation) {
			expect(t, e.AllowHTTPS.Value && slices.Equal(e.AllowHTTPS.From, []Layer{LayerDefault}), "allow_https from default: %+v", e.AllowHTTPS)
			expect(t, e.AllowedDomains.Hosts == HostsAny, "any host: %+v", e.AllowedDomains)
			expectNote(t, e, "default policy applies")
			expectNote(t, e, "any public host")
		}},
		{"flag off in one layer", []NamedPolicy{{Layer: LayerSession, Policy: anyHTTPS}, {Layer: LayerVM, Policy: Policy{AllowHTTP: true}}}, func(t *testing.T, e Explanation) {
			expect(t, !e.AllowHTTPS.Value && slices.Equal(e.AllowHTTPS.From, []Layer{LayerVM}), "allow_https off from vm: %+v", e.AllowHTTPS)
			expect(t, !e.AllowHTTP.Value && slices.Equal(e.AllowHTTP.From, []Layer{LayerSession}), "allow_http off from session: %+v", e.AllowHTTP)
			expectNote(t, e, "Nothing is allowed")
		}},
		{"disjoint domains say none", []NamedPolicy{
			{Layer: LayerSession, Policy: Policy{AllowHTTPS: true, AllowedDomains: []string{"a.test"}}},
			{Layer: LayerVM, Policy: Policy{AllowHTTPS: true, AllowedDomains: []string{"b.test"}}},
		}, func(t *testing.T, e Explanation) {
			expect(t, e.AllowedDomains.Hosts == HostsNone && len(e.AllowedDomains.Value) == 0 && e.AllowedDomains.Value != nil, "none: %+v", e.AllowedDomains)
			expect(t, slices.Equal(e.AllowedDomains.From, []Layer{LayerSession, LayerVM}), "from both: %+v", e.AllowedDomains)
			expectNote(t, e, "have no host in common")
		}},
		{"wildcards intersect", []NamedPolicy{
			{Layer: LayerSession, Policy: Policy{AllowHTTPS: true, AllowedDomains: []string{"*.a.com", "z.test"}}},
			{Layer: LayerVM, Policy: Policy{AllowHTTPS: true, AllowedDomains: []string{"x.a.com", "*.b.a.com"}}},
		}, func(t *testing.T, e Explanation) {
			expect(t, slices.Equal(e.AllowedDomains.Value, []string{"*.b.a.com", "x.a.com"}), "intersection: %q", e.AllowedDomains.Value)
		}},
		{"one list constrains", []NamedPolicy{
			{Layer: LayerSession, Policy: anyHTTPS},
			{Layer: LayerVM, Policy: Policy{AllowHTTPS: true, AllowedDomains: []string{"x.a.com"}}},
		}, func(t *testing.T, e Explanation) {
			expect(t, e.AllowedDomains.Hosts == HostsListed && slices.Equal(e.AllowedDomains.From, []Layer{LayerVM}), "from vm: %+v", e.AllowedDomains)
		}},
		{"cidrs intersect", []NamedPolicy{
			{Layer: LayerSession, Policy: Policy{AllowedCIDRs: []string{"10.0.0.0/8"}}},
			{Layer: LayerVM, Policy: Policy{AllowedCIDRs: []string{"10.1.0.0/16", "192.0.2.0/24"}}},
		}, func(t *testing.T, e Explanation) {
			expect(t, slices.Equal(e.AllowedCIDRs.Value, []string{"10.1.0.0/16"}), "cidrs: %q", e.AllowedCIDRs.Value)
		}},
		{"cidrs disjoint", []NamedPolicy{
			{Layer: LayerSession, Policy: Policy{AllowedCIDRs: []string{"10.0.0.0/8"}}},
			{Layer: LayerVM, Policy: Policy{AllowedCIDRs: []string{"192.0.2.0/24"}}},
		}, func(t *testing.T, e Explanation) {
			expect(t, len(e.AllowedCIDRs.Value) == 0, "cidrs: %q", e.AllowedCIDRs.Value)
			expectNote(t, e, "have no range in common")
		}},
		{"cidrs empty in one layer", []NamedPolicy{
			{Layer: LayerSession, Policy: Policy{AllowedCIDRs: []string{"10.0.0.0/8"}}},
			{Layer: LayerVM, Policy: anyHTTPS},
		}, func(t *testing.T, e Explanation) {
			expect(t, len(e.AllowedCIDRs.Value) == 0 && slices.Equal(e.AllowedCIDRs.From, []Layer{LayerVM}), "cidrs: %+v", e.AllowedCIDRs)
		}},
		{"denied union", []NamedPolicy{
			{Layer: LayerSession, Policy: Policy{AllowHTTPS: true, DeniedDomains: []string{"x.a.test"}}},
			{Layer: LayerVM, Policy: Policy{AllowHTTPS: true, DeniedDomains: []string{"*.a.test", "b.test"}}},
		}, func(t *testing.T, e Explanation) {
			expect(t, slices.Equal(e.DeniedDomains.Value, []string{"*.a.test", "b.test"}), "denied: %q", e.DeniedDomains.Value)
			expectNote(t, e, "denied_domains win")
		}},
		{"preset limited by other layer", []NamedPolicy{
			{Layer: LayerSession, Policy: Policy{AllowPackageManagers: true}},
			{Layer: LayerVM, Policy: Policy{AllowHTTPS: true, AllowedDomains: []string{"x.test"}}},
		}, func(t *testing.T, e Explanation) {
			expect(t, !e.AllowPackageManagers.Value && slices.Equal(e.AllowPackageManagers.From, []Layer{LayerVM}), "pm: %+v", e.AllowPackageManagers)
			expect(t, e.PackageManagers == nil, "no managers listed: %q", e.PackageManagers)
			expectNote(t, e, "allow_package_managers is on in session but off in vm")
		}},
		{"monitor vm", []NamedPolicy{
			{Layer: LayerSession, Policy: anyHTTPS},
			{Layer: LayerVM, Policy: Policy{Mode: Monitor}},
		}, func(t *testing.T, e Explanation) {
			expect(t, e.Mode.Value == Enforce && slices.Equal(e.Mode.From, []Layer{LayerSession}), "mode: %+v", e.Mode)
			expect(t, e.AllowHTTPS.Value, "the monitor layer restricts nothing: %+v", e.AllowHTTPS)
			expectNote(t, e, "The vm layer is in monitor mode")
		}},
		{"all monitor", []NamedPolicy{{Layer: LayerSession, Policy: Policy{Mode: Monitor}}}, func(t *testing.T, e Explanation) {
			expect(t, e.Mode.Value == Monitor, "mode: %+v", e.Mode)
			expectNote(t, e, "Every layer is in monitor mode")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := Explain(testPreset(t), tt.layers...)
			tt.check(t, e)
			expectNote(t, e, "Hard denials always apply")
			if _, err := json.Marshal(e); err != nil {
				t.Error(err)
			}
		})
	}
}

func expect(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if !ok {
		t.Errorf(format, args...)
	}
}

func expectNote(t *testing.T, e Explanation, part string) {
	t.Helper()
	for _, n := range e.Notes {
		if strings.Contains(n, part) {
			return
		}
	}
	t.Errorf("no note contains %q; notes:\n%s", part, strings.Join(e.Notes, "\n"))
}
