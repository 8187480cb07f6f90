package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/egressd/egressd/client"
)

// TestSecretCommands: create, list, get, rotate and delete against a real egressd, with the
// value on standard input or in a file; the value never shows in egressctl's output.
func TestSecretCommands(t *testing.T) {
	c, in := startCtl(t)
	const v1, v2, v3 = "sk-CTL-first-0a1b2c", "sk-CTL-second-3d4e5f", "sk-CTL-third-6a7b8c"
	var outputs []string
	keep := func(r result) result { outputs = append(outputs, r.stdout, r.stderr); return r }

	r := keep(c.runStdin(v1+"\n", "secret", "create", "openai", "--domain", "api.openai.test", "--domain", "*.openai.test"))
	if r.code != 0 {
		t.Fatalf("secret create: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	m := regexp.MustCompile(`(?m)^placeholder:\s+(egressd-secret-openai-[a-z2-7]{24})$`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("secret create printed no placeholder:\n%s", r.stdout)
	}
	ph := m[1]
	mustHaveLine(t, r.stdout, "domains:", "*.openai.test")

	list := keep(c.run("secret", "list"))
	mustHaveLine(t, list.stdout, "NAME", "DOMAINS", "PLACEHOLDER", "UPDATED")
	if !strings.Contains(list.stdout, "openai  ") || !strings.Contains(list.stdout, ph) {
		t.Errorf("secret list:\n%s", list.stdout)
	}
	var sl client.SecretList
	c.json(&sl, "secret", "list")
	if len(sl.Secrets) != 1 || sl.Secrets[0].Placeholder != ph || !slices.Equal(sl.Secrets[0].Domains, []string{"*.openai.test", "api.openai.test"}) {
		t.Errorf("secret list -o json: %+v", sl)
	}
	var got client.Secret
	c.json(&got, "secret", "get", "openai")
	if got.Placeholder != ph {
		t.Errorf("secret get: %+v", got)
	}

	// Rotation from a file (one line end dropped), then from standard input; the
	// placeholder stays.
	file := filepath.Join(t.TempDir(), "value")
	os.WriteFile(file, []byte(v2+"\r\n"), 0o600)
	r = keep(c.run("secret", "rotate", "openai", "--value-file", file))
	if r.code != 0 || !strings.Contains(r.stdout, ph) {
		t.Fatalf("secret rotate --value-file: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = keep(c.runStdin(v3, "secret", "rotate", "openai", "--domain", "api.openai.test", "-o", "json"))
	if r.code != 0 || !strings.Contains(r.stdout, ph) || strings.Contains(r.stdout, "*.openai.test") {
		t.Fatalf("secret rotate from stdin with --domain: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	var narrowed client.Secret
	c.json(&narrowed, "secret", "domains", "openai", "--domain", "x.openai.test")
	if narrowed.Placeholder != ph || !slices.Equal(narrowed.Domains, []string{"x.openai.test"}) {
		t.Errorf("secret domains: %+v", narrowed)
	}
	keep(c.fails(exitError, "give at least one --domain", "secret", "domains", "openai"))

	// Mistakes.
	keep(c.fails(exitError, "give at least one --domain", "secret", "create", "x"))
	keep(c.fails(exitError, "no value: pipe it on standard input", "secret", "create", "x", "--domain", "a.test"))
	keep(c.fails(exitError, "flag provided but not defined: -value", "secret", "create", "x", "--domain", "a.test", "--value", v1))
	keep(c.fails(exitError, "(409 conflict)", "secret", "create", "openai", "--domain", "a.test", "--value-file", file))
	keep(c.fails(exitError, "domains[0]", "secret", "create", "y", "--domain", "bad domain", "--value-file", file))
	keep(c.fails(exitError, "(404 not_found)", "secret", "rotate", "missing", "--value-file", file))
	keep(c.fails(exitError, "--value-file", "secret", "rotate", "openai", "--value-file", filepath.Join(t.TempDir(), "nope")))

	r = keep(c.run("secret", "delete", "openai"))
	if r.code != 0 || r.stdout != "deleted secret openai\n" {
		t.Errorf("secret delete: exit %d %q", r.code, r.stdout)
	}
	keep(c.fails(exitError, "(404 not_found)", "secret", "get", "openai"))

	for _, out := range append(outputs, in.Log()) {
		for _, v := range []string{v1, v2, v3} {
			if strings.Contains(out, v) {
				t.Errorf("a value was printed: %s", out)
			}
		}
	}
}

func TestCACommand(t *testing.T) {
	c, in := startCtl(t)
	resp, err := http.Get(in.URL + "/v1/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// No API key needed.
	noKey := newCtl(t, in.URL, "")
	if out := noKey.ok("ca"); out != string(want) || !strings.HasPrefix(out, "-----BEGIN CERTIFICATE-----") {
		t.Errorf("egressctl ca printed %q, want %q", out, want)
	}
	var j map[string]string
	c.json(&j, "ca")
	if j["pem"] != string(want) {
		t.Errorf("ca -o json: %v", j)
	}
}

func TestCABundle(t *testing.T) {
	dir := t.TempDir()
	system := filepath.Join(dir, "system.pem")
	os.WriteFile(system, []byte("-----BEGIN CERTIFICATE-----\nSYSTEM\n-----END CERTIFICATE-----"), 0o644)
	notPEM := filepath.Join(dir, "empty.pem")
	os.WriteFile(notPEM, nil, 0o644)
	ca := []byte("-----BEGIN CERTIFICATE-----\nEGRESSD\n-----END CERTIFICATE-----\n")

	path, used, err := writeCABundle(ca, []string{"", filepath.Join(dir, "missing"), notPEM, system, "/etc/ssl/certs/ca-certificates.crt"})
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(path)
	data, _ := os.ReadFile(path)
	if used != system || !strings.Contains(string(data), "SYSTEM\n-----END CERTIFICATE-----\n") || !strings.HasSuffix(string(data), string(ca)) {
		t.Errorf("bundle from %s:\n%s", used, data)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("bundle mode %v", fi.Mode())
	}
	alone, used, err := writeCABundle(ca, []string{filepath.Join(dir, "missing")})
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(alone)
	if data, _ := os.ReadFile(alone); used != "" || !strings.HasSuffix(string(data), string(ca)) {
		t.Errorf("no system bundle: used %q\n%s", used, data)
	}

	env := withCAEnv([]string{"PATH=/bin", "SSL_CERT_FILE=/old.pem", "CURL_CA_BUNDLE=/x", "HOME=/root"}, "/tmp/b.pem")
	want := []string{"PATH=/bin", "HOME=/root", "SSL_CERT_FILE=/tmp/b.pem", "REQUESTS_CA_BUNDLE=/tmp/b.pem",
		"NODE_EXTRA_CA_CERTS=/tmp/b.pem", "CURL_CA_BUNDLE=/tmp/b.pem", "GIT_SSL_CAINFO=/tmp/b.pem"}
	if !slices.Equal(env, want) {
		t.Errorf("withCAEnv = %q\nwant %q", env, want)
	}
}
