package main

// In-process tests of the command line itself: parsing, help and messages that need no server.

import (
	"bytes"
	"context"
	"flag"
	"slices"
	"strings"
	"testing"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/policy"
)

// runHere runs egressctl in this process with an environment of its own.
func runHere(env map[string]string, args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(""), &out, &errOut, func(k string) string { return env[k] })
	return out.String(), errOut.String(), code
}

func TestParseInterspersed(t *testing.T) {
	cases := []struct {
		args      []string
		wantPos   []string
		wantVM    string
		wantHTTPS bool
	}{
		{[]string{"a", "--vm", "v", "b"}, []string{"a", "b"}, "v", false},
		{[]string{"--https", "a", "--vm=v"}, []string{"a"}, "v", true},
		{[]string{"v1", "--", "ls", "--vm", "x"}, []string{"v1", "ls", "--vm", "x"}, "", false},
		{[]string{"--", "--https"}, []string{"--https"}, "", false},
		{nil, nil, "", false},
	}
	for _, tc := range cases {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		vm := fs.String("vm", "", "")
		https := fs.Bool("https", false, "")
		pos, err := parseInterspersed(fs, tc.args)
		if err != nil || !slices.Equal(pos, tc.wantPos) || *vm != tc.wantVM || *https != tc.wantHTTPS {
			t.Errorf("%q: pos %q vm %q https %v err %v; want %q %q %v", tc.args, pos, *vm, *https, err, tc.wantPos, tc.wantVM, tc.wantHTTPS)
		}
	}
}

func TestHelpAndUsageExitCodes(t *testing.T) {
	cases := []struct {
		args       []string
		code       int
		stdout     string // a part of it; "" for empty
		stderr     string
		emptyStdio string // "stdout" or "stderr": which must stay empty
	}{
		{[]string{"--help"}, 0, "Exit status:", "", "stderr"},
		{[]string{"help"}, 0, "Commands:", "", "stderr"},
		{[]string{"help", "egress", "set"}, 0, "Usage: egressctl egress set", "", "stderr"},
		{[]string{"vm", "--help"}, 0, "vm create", "", "stderr"},
		{[]string{"node", "--help"}, 0, "node list", "", "stderr"},
		{[]string{"help", "nodes"}, 0, "Usage: egressctl node list\n       egressctl nodes\n", "", "stderr"},
		{[]string{"nodes", "extra"}, 1, "", `unexpected argument "extra"`, "stdout"},
		{[]string{}, 1, "", "Commands:", "stdout"},
		{[]string{"vm"}, 1, "", "vm create", "stdout"},
		{[]string{"frobnicate"}, 1, "", `unknown command "frobnicate"`, "stdout"},
		{[]string{"--bogus"}, 1, "", "flag provided but not defined", "stdout"},
		{[]string{"vm", "get", "a", "b"}, 1, "", `unexpected argument "b"`, "stdout"},
		{[]string{"egress", "set", "--session", "s", "--domain", "a.test,"}, 1, "", "empty entry", "stdout"},
		{[]string{"egress", "check", "--session", "s", "--port", "443", "https://a.test/"}, 1, "", "a URL carries its own port", "stdout"},
		{[]string{"egress", "check", "--session", "s", "--dns", "a.test", "--transport", "udp"}, 1, "", "--transport goes with --ip", "stdout"},
		{[]string{"exec", "vm-1"}, 1, "", "give a VM and the command", "stdout"},
	}
	for _, tc := range cases {
		stdout, stderr, code := runHere(nil, tc.args...)
		if code != tc.code || !strings.Contains(stdout, tc.stdout) || !strings.Contains(stderr, tc.stderr) {
			t.Errorf("%q: exit %d\nstdout: %s\nstderr: %s", tc.args, code, stdout, stderr)
		}
		if (tc.emptyStdio == "stdout" && stdout != "") || (tc.emptyStdio == "stderr" && stderr != "") {
			t.Errorf("%q: %s should be empty\nstdout: %s\nstderr: %s", tc.args, tc.emptyStdio, stdout, stderr)
		}
	}
}

// --help prints current values as defaults; the key must not be one of them.
func TestHelpDoesNotShowTheKey(t *testing.T) {
	env := map[string]string{"EGRESSD_API_KEY": "egk_topsecret", "EGRESSD_URL": "http://127.0.0.1:1"}
	for _, args := range [][]string{{"--help"}, {"vm", "list", "--help"}, {"vm", "list", "--bogus"}} {
		stdout, stderr, _ := runHere(env, args...)
		if strings.Contains(stdout+stderr, "topsecret") {
			t.Errorf("%q shows the key:\n%s%s", args, stdout, stderr)
		}
	}
}

func TestFormatDecision(t *testing.T) {
	cases := []struct {
		decision, layer, reason, rule string
		wouldDeny                     bool
		want                          string
	}{
		{"deny", "vm", "host_not_allowed", "not in allowed_domains", false, "deny  (layer vm, reason host_not_allowed, rule not in allowed_domains)"},
		{"allow", "session", "in allowed_domains", "api.openai.com", false, "allow (layer session, reason in allowed_domains, rule api.openai.com)"},
		{"allow", "session", "monitor", "", true, "allow (layer session, reason monitor, would deny)"},
		{"deny", "", "", "", false, "deny"},
	}
	for _, tc := range cases {
		if got := formatDecision(tc.decision, tc.layer, tc.reason, tc.rule, tc.wouldDeny); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

func TestSummarizePolicy(t *testing.T) {
	cases := []struct {
		p    *client.Policy
		want string
	}{
		{nil, "none"},
		{&client.Policy{}, "deny all"},
		{&client.Policy{Policy: policy.Policy{Mode: policy.Monitor}}, "monitor, deny all"},
		{&client.Policy{Policy: policy.Policy{AllowHTTPS: true, AllowPackageManagers: true, AllowedDomains: []string{"a", "b"}}}, "https, package managers, 2 domains"},
		{&client.Policy{Policy: policy.Policy{AllowedCIDRs: []string{"10.0.0.0/8"}}}, "1 cidr"},
		// A policy of allowed_tcp alone allows something: never "deny all".
		{&client.Policy{Policy: policy.Policy{AllowedTCP: []string{"github.com:22"}}}, "1 tcp endpoint"},
		{&client.Policy{Policy: policy.Policy{Mode: policy.Monitor, AllowedTCP: []string{"a.test:22", "b.test:22"}}}, "monitor, 2 tcp endpoints"},
	}
	for _, tc := range cases {
		if got := summarizePolicy(tc.p); got != tc.want {
			t.Errorf("summarizePolicy(%+v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}

func TestPolicyFieldsSayWhatAnEmptyListMeans(t *testing.T) {
	var b bytes.Buffer
	printFields(&b, rulesFields(policy.Policy{AllowHTTPS: true})...)
	if !hasLine(b.String(), "allowed_domains:", "(any", "public", "host)") {
		t.Errorf("HTTPS with no domains should read as any public host:\n%s", b.String())
	}
	b.Reset()
	printFields(&b, rulesFields(policy.Policy{})...)
	if !hasLine(b.String(), "allowed_domains:", "(none)") {
		t.Errorf("no web flags and no domains should read as none:\n%s", b.String())
	}

	// The same in an effective policy: a VM policy of CIDR ranges alone opens no host.
	cidrsOnly := &client.Effective{Explanation: policy.Explanation{
		AllowedDomains: policy.EffectiveDomains{Hosts: policy.HostsAny},
		AllowedCIDRs:   policy.EffectiveList{Value: []string{"198.51.100.0/24"}, From: []policy.Layer{policy.LayerVM}},
	}}
	b.Reset()
	printFields(&b, effectiveFields(cidrsOnly)...)
	if !hasLine(b.String(), "allowed_domains:", "(none:", "HTTP", "and", "HTTPS", "are", "off)") {
		t.Errorf("an effective policy without web flags should open no host:\n%s", b.String())
	}
	cidrsOnly.AllowHTTPS.Value = true
	b.Reset()
	printFields(&b, effectiveFields(cidrsOnly)...)
	if !hasLine(b.String(), "allowed_domains:", "(any", "public", "host)") {
		t.Errorf("HTTPS with no domains should read as any public host:\n%s", b.String())
	}
}
