package main

// These tests drive the built egressctl binary against a real egressd on loopback, as a
// person or a script would: they assert the text people read, the JSON scripts parse, and the
// exit codes both branch on.

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

func TestMain(m *testing.M) { egressdtest.Main(m) }

// ctl runs egressctl against one egressd with one API key.
type ctl struct {
	t   *testing.T
	bin string
	env []string
}

type result struct {
	stdout, stderr string
	code           int
}

func newCtl(t *testing.T, url, key string) *ctl {
	t.Helper()
	env := []string{"EGRESSD_URL=" + url}
	if key != "" {
		env = append(env, "EGRESSD_API_KEY="+key)
	}
	// Keep the rest of the environment (HOME, GOCOVERDIR...) but none of the developer's
	// EGRESSD_* settings, which would point the binary elsewhere.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EGRESSD_") {
			env = append(env, kv)
		}
	}
	return &ctl{t: t, bin: egressdtest.Binary(t, "egressctl"), env: env}
}

// startCtl starts a fresh egressd and returns egressctl with its admin key.
func startCtl(t *testing.T) (*ctl, *egressdtest.Instance) {
	t.Helper()
	in := egressdtest.Start(t)
	return newCtl(t, in.URL, in.AdminKey), in
}

func (c *ctl) run(args ...string) result {
	c.t.Helper()
	return c.runStdin("", args...)
}

func (c *ctl) runStdin(stdin string, args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = c.env
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("egressctl %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// ok runs a command that must succeed and returns its standard output.
func (c *ctl) ok(args ...string) string {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("egressctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// json runs a command with -o json that must succeed and decodes its output into v,
// strictly: a field the wire types do not know is an error, so drift shows up here.
func (c *ctl) json(v any, args ...string) {
	c.t.Helper()
	out := c.ok(append(args, "-o", "json")...)
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		c.t.Fatalf("egressctl %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// fails runs a command that must fail with the exit code and say want on stderr.
func (c *ctl) fails(code int, want string, args ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.code != code {
		c.t.Fatalf("egressctl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		c.t.Fatalf("egressctl %s: stderr %q does not say %q", strings.Join(args, " "), r.stderr, want)
	}
	return r
}

// hasLine reports whether text has a line whose fields are exactly want, spacing aside:
// hasLine(out, "allow_https:", "true").
func hasLine(text string, want ...string) bool {
	for _, line := range strings.Split(text, "\n") {
		if slices.Equal(strings.Fields(line), want) {
			return true
		}
	}
	return false
}

func mustHaveLine(t *testing.T, text string, want ...string) {
	t.Helper()
	if !hasLine(text, want...) {
		t.Fatalf("no line %q in:\n%s", strings.Join(want, " "), text)
	}
}

func TestVMAndSessionLifecycle(t *testing.T) {
	c, _ := startCtl(t)

	out := c.ok("vm", "create", "--id", "vm-life")
	mustHaveLine(t, out, "vm_id:", "vm-life")
	mustHaveLine(t, out, "network:", "none")
	mustHaveLine(t, out, "sessions:", "0")
	mustHaveLine(t, out, "policy:", "none")

	var picked client.VM
	c.json(&picked, "vm", "create")
	if picked.VMID == "" || picked.Network.Mode != "none" {
		t.Fatalf("vm create without --id: %+v", picked)
	}
	c.fails(1, "(409 conflict)", "vm", "create", "--id", "vm-life")

	var list client.VMList
	c.json(&list, "vm", "list")
	var ids []string
	for _, vm := range list.VMs {
		ids = append(ids, vm.VMID)
	}
	slices.Sort(ids)
	if want := []string{picked.VMID, "vm-life"}; !slices.Equal(ids, sorted(want)) {
		t.Fatalf("vm list: %v, want %v", ids, want)
	}
	out = c.ok("vm", "list")
	mustHaveLine(t, strings.SplitN(out, "\n", 2)[0], "VM", "NETWORK", "NODE", "STATE", "SESSIONS", "CREATED")
	if !strings.Contains(out, "vm-life") || !strings.Contains(out, picked.VMID) {
		t.Fatalf("vm list text lacks a VM:\n%s", out)
	}

	var s1, s2 client.Session
	c.json(&s1, "session", "create", "--vm", "vm-life")
	if s1.SessionID == "" || s1.VMID != "vm-life" || !strings.HasPrefix(s1.ProxyURL, "http://") {
		t.Fatalf("session create: %+v", s1)
	}
	r := c.run("session", "create", "--vm", "vm-life")
	if r.code != 0 || !strings.Contains(r.stderr, "not shown again") || !strings.Contains(r.stdout, "proxy_url:") {
		t.Fatalf("session create (text): exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	s2.SessionID = strings.Fields(strings.SplitN(r.stdout, "\n", 2)[0])[1] // "session_id:  ses_..."
	c.fails(1, "--vm is required", "session", "create")
	c.fails(1, "(404 not_found)", "session", "create", "--vm", "no-such-vm")

	var vm client.VM
	c.json(&vm, "vm", "get", "vm-life")
	if vm.Sessions != 2 {
		t.Fatalf("vm get: %d sessions, want 2", vm.Sessions)
	}

	var sessions client.SessionList
	c.json(&sessions, "session", "list", "--vm", "vm-life")
	if len(sessions.Sessions) != 2 {
		t.Fatalf("session list --vm vm-life: %+v", sessions)
	}
	// An empty list is [], as the API writes it, so that scripts can iterate it.
	if out := c.ok("session", "list", "--vm", picked.VMID, "-o", "json"); !strings.Contains(out, `"sessions": []`) {
		t.Fatalf("empty session list: %s", out)
	}

	out = c.ok("session", "get", s1.SessionID)
	mustHaveLine(t, out, "session_id:", s1.SessionID)
	mustHaveLine(t, out, "vm_id:", "vm-life")
	if strings.Contains(out, "proxy_url") {
		t.Fatalf("session get shows a proxy URL:\n%s", out)
	}

	if out := c.ok("session", "delete", s1.SessionID); !strings.Contains(out, s1.SessionID) {
		t.Fatalf("session delete says %q", out)
	}
	c.fails(1, "(404 not_found)", "session", "get", s1.SessionID)

	// Deleting the VM ends its sessions.
	c.ok("vm", "delete", "vm-life")
	c.fails(1, "(404 not_found)", "vm", "get", "vm-life")
	c.fails(1, "(404 not_found)", "session", "get", s2.SessionID)
	if out := c.ok("vm", "delete", picked.VMID, "-o", "json"); out != "" {
		t.Fatalf("vm delete -o json printed %q; a 204 has no body", out)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// newSession creates a VM and a session on it, returning their IDs.
func (c *ctl) newSession(vmID string) string {
	c.t.Helper()
	c.ok("vm", "create", "--id", vmID)
	var s client.Session
	c.json(&s, "session", "create", "--vm", vmID)
	return s.SessionID
}

func TestEgressSetGetClear(t *testing.T) {
	c, _ := startCtl(t)
	s := c.newSession("vm-a")

	// The first example of the brief, word for word.
	out := c.ok("egress", "set", "--session", s, "--https", "--domain", "api.openai.com", "--package-managers")
	mustHaveLine(t, out, "scope:", "session", s)
	mustHaveLine(t, out, "allow_https:", "true")
	mustHaveLine(t, out, "allow_http:", "false")
	mustHaveLine(t, out, "allow_package_managers:", "true")
	mustHaveLine(t, out, "allowed_domains:", "api.openai.com")
	mustHaveLine(t, out, "mode:", "enforce")

	var p client.Policy
	c.json(&p, "egress", "get", "--session", s)
	if p.Scope != "session" || p.ID != s || p.Revision == 0 || p.UpdatedAt.IsZero() ||
		!p.AllowHTTPS || p.AllowHTTP || !p.AllowPackageManagers ||
		!slices.Equal(p.AllowedDomains, []string{"api.openai.com"}) || p.Mode != "enforce" {
		t.Fatalf("egress get --session: %+v", p)
	}
	firstRevision := p.Revision

	// Setting replaces the whole policy: what is not given is off.
	c.json(&p, "egress", "set", "--session", s, "--http")
	if !p.AllowHTTP || p.AllowHTTPS || p.AllowPackageManagers || len(p.AllowedDomains) != 0 || p.Revision <= firstRevision {
		t.Fatalf("replacing set: %+v", p)
	}

	// The second example: a VM without a policy, then with one.
	c.fails(1, "policy_not_set", "egress", "get", "--vm", "vm-a")
	c.ok("egress", "set", "--vm", "vm-a", "--cidr", "10.0.0.0/8") // "internal network only", as data
	out = c.ok("egress", "get", "--vm", "vm-a")
	mustHaveLine(t, out, "scope:", "vm", "vm-a")
	mustHaveLine(t, out, "allowed_cidrs:", "10.0.0.0/8")
	mustHaveLine(t, out, "allowed_domains:", "(none)")
	mustHaveLine(t, c.ok("vm", "get", "vm-a"), "policy:", "1", "cidr")

	// Clearing: then there is nothing to get, for either scope.
	if out := c.ok("egress", "clear", "--session", s); !strings.Contains(out, s) {
		t.Fatalf("egress clear says %q", out)
	}
	c.fails(1, "policy_not_set", "egress", "get", "--session", s)
	c.ok("egress", "clear", "--vm", "vm-a")
	c.fails(1, "policy_not_set", "egress", "get", "--vm", "vm-a")

	// Exactly one target.
	c.fails(1, "exactly one of --session and --vm", "egress", "get")
	c.fails(1, "exactly one of --session and --vm", "egress", "set", "--session", s, "--vm", "vm-a", "--https")
}

// The hosted product's three presets, as a user of egressctl would set them.
func TestEgressPresets(t *testing.T) {
	c, _ := startCtl(t)
	s := c.newSession("vm-presets")

	t.Run("AI agent sandbox", func(t *testing.T) {
		var p client.Policy
		c.json(&p, "egress", "set", "--session", s, "--https", "--package-managers",
			"--domain", "api.openai.com", "--domain", "API.Anthropic.com.")
		if !p.AllowHTTPS || p.AllowHTTP || !p.AllowPackageManagers {
			t.Fatalf("flags: %+v", p)
		}
		// Stored normalised: lower case, no trailing dot, sorted.
		if want := []string{"api.anthropic.com", "api.openai.com"}; !slices.Equal(p.AllowedDomains, want) {
			t.Fatalf("allowed_domains %v, want %v", p.AllowedDomains, want)
		}
	})

	t.Run("fully isolated", func(t *testing.T) {
		var p client.Policy
		c.json(&p, "egress", "set", "--session", s)
		if p.AllowHTTP || p.AllowHTTPS || p.AllowPackageManagers || len(p.AllowedDomains)+len(p.AllowedCIDRs)+len(p.DeniedDomains) != 0 || p.Mode != "enforce" {
			t.Fatalf("deny-all policy: %+v", p)
		}
		mustHaveLine(t, c.ok("egress", "get", "--session", s), "allowed_domains:", "(none)")
	})

	t.Run("internal network only", func(t *testing.T) {
		// 10.0.0.0/8 is data here: nothing in this test connects anywhere.
		var p client.Policy
		c.json(&p, "egress", "set", "--vm", "vm-presets", "--cidr", "10.0.0.0/8")
		if !slices.Equal(p.AllowedCIDRs, []string{"10.0.0.0/8"}) || p.AllowHTTPS || p.AllowHTTP {
			t.Fatalf("internal-only policy: %+v", p)
		}
	})
}

func TestEgressSetFromFile(t *testing.T) {
	c, _ := startCtl(t)
	s := c.newSession("vm-file")
	dir := t.TempDir()

	file := filepath.Join(dir, "policy.json")
	os.WriteFile(file, []byte(`{"allow_http": true, "allowed_domains": ["a.example.test"], "denied_domains": ["bad.example.test"]}`), 0o600)
	var p client.Policy
	// Flags add to the file; a comma separates several entries in one flag.
	c.json(&p, "egress", "set", "--session", s, "-f", file, "--domain", "b.example.test,*.c.example.test", "--monitor")
	if !p.AllowHTTP || p.AllowHTTPS || p.Mode != "monitor" ||
		!slices.Equal(p.AllowedDomains, []string{"*.c.example.test", "a.example.test", "b.example.test"}) ||
		!slices.Equal(p.DeniedDomains, []string{"bad.example.test"}) {
		t.Fatalf("policy from file and flags: %+v", p)
	}

	// Standard input.
	r := c.runStdin(`{"allow_https": true}`, "egress", "set", "--session", s, "-f", "-", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"allow_https": true`) {
		t.Fatalf("-f -: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// A typo in the file fails here, before anything is sent.
	os.WriteFile(file, []byte(`{"allow_https": true, "allowed_domain": ["x.test"]}`), 0o600)
	c.fails(1, `unknown field "allowed_domain"`, "egress", "set", "--session", s, "-f", file)
	os.WriteFile(file, []byte(`{"allow_https": true} {}`), 0o600)
	c.fails(1, "send exactly one object and nothing after it", "egress", "set", "--session", s, "-f", file)
	c.json(&p, "egress", "get", "--session", s)
	if !p.AllowHTTPS || p.AllowHTTP {
		t.Fatalf("a refused file changed the policy: %+v", p)
	}

	// An empty entry would make an empty list (any host) out of a script's unset variable.
	c.fails(1, "empty entry", "egress", "set", "--session", s, "--https", "--domain", "")
}

func TestEgressErrors(t *testing.T) {
	c, in := startCtl(t)
	s := c.newSession("vm-err")

	// A bad CIDR: the message names the field and says how to fix it.
	r := c.fails(1, "allowed_cidrs[1]", "egress", "set", "--vm", "vm-err", "--cidr", "192.0.2.0/24", "--cidr", "10.0.0.1/8")
	for _, want := range []string{"10.0.0.1/8 has host bits set", "10.0.0.0/8", "(400 invalid_policy)"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("bad CIDR: stderr %q lacks %q", r.stderr, want)
		}
	}
	c.fails(1, "allowed_domains[0]", "egress", "set", "--session", s, "--https", "--domain", "*")

	// Unknown objects are 404s, for every kind.
	c.fails(1, "(404 not_found)", "vm", "get", "nope")
	c.fails(1, "(404 not_found)", "egress", "get", "--vm", "nope")
	c.fails(1, "(404 not_found)", "egress", "set", "--session", "nope", "--https")
	c.fails(1, "(404 not_found)", "egress", "effective", "--session", "nope")

	// No key, and a wrong one.
	nokey := newCtl(t, in.URL, "")
	r = nokey.fails(1, "(401 unauthorized)", "vm", "list")
	if !strings.Contains(r.stderr, "EGRESSD_API_KEY") {
		t.Errorf("no key: stderr %q does not say how to give one", r.stderr)
	}
	c.fails(1, "(401 unauthorized)", "vm", "list", "--api-key", "egk_wrong")

	// --url on the command line wins over EGRESSD_URL; nothing listens at this one.
	dead := "http://" + egressdtest.FreePort(t)
	c.fails(1, "cannot reach egressd at "+dead, "vm", "list", "--url", dead)
	c.fails(1, "must be an absolute http:// or https:// URL", "vm", "list", "--url", "127.0.0.1:8470")

	// Usage errors.
	c.fails(1, "missing VM", "vm", "get")
	c.fails(1, `unexpected argument "extra"`, "vm", "get", "a", "extra")
	c.fails(1, "flag provided but not defined", "vm", "list", "--bogus")
	c.fails(1, `unknown command "vm frobnicate"`, "vm", "frobnicate")
	c.fails(1, `-o "yaml"`, "vm", "list", "-o", "yaml")
}

func TestEffective(t *testing.T) {
	c, _ := startCtl(t)
	s := c.newSession("vm-eff")

	// Neither layer set: the default, which denies everything.
	var e client.Effective
	c.json(&e, "egress", "effective", "--session", s)
	if e.SessionID != s || e.VMID != "vm-eff" || e.AllowHTTPS.Value || e.AllowHTTP.Value || e.AllowPackageManagers.Value {
		t.Fatalf("effective with no policy: %+v", e)
	}

	c.ok("egress", "set", "--vm", "vm-eff", "--https", "--domain", "a.example.test", "--domain", "b.example.test")
	c.ok("egress", "set", "--session", s, "--https", "--http", "--domain", "a.example.test")
	c.json(&e, "egress", "effective", "--session", s)
	if !e.AllowHTTPS.Value || e.AllowHTTP.Value || !slices.Equal(e.AllowedDomains.Value, []string{"a.example.test"}) {
		t.Fatalf("effective of session AND VM: %+v", e)
	}
	if len(e.Layers) != 2 || e.Layers[0].Layer != "session" || e.Layers[1].Layer != "vm" {
		t.Fatalf("layers: %+v", e.Layers)
	}

	out := c.ok("egress", "effective", "--session", s)
	mustHaveLine(t, out, "session_id:", s)
	mustHaveLine(t, out, "allow_https:", "true", "(from", "session,", "vm)")
	mustHaveLine(t, out, "allow_http:", "false", "(from", "vm)") // the VM turns it off
	if !strings.Contains(out, "a.example.test") || strings.Contains(out, "b.example.test") {
		t.Fatalf("effective domains should be the intersection:\n%s", out)
	}
}

func TestCheck(t *testing.T) {
	c, _ := startCtl(t)
	s := c.newSession("vm-check")
	c.ok("egress", "set", "--session", s, "--https", "--domain", "api.openai.com", "--package-managers")

	// The third example: PyPI is in the package-manager preset.
	r := c.run("egress", "check", "--session", s, "https://pypi.org/simple/")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "allow (layer session") {
		t.Fatalf("check pypi: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// A denial exits 3, so that scripts can branch on it, and says which layer denied.
	r = c.run("egress", "check", "--session", s, "https://evil.example.test/")
	if r.code != exitDenied || !strings.HasPrefix(r.stdout, "deny  (layer session") || r.stderr != "" {
		t.Fatalf("check evil: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var res client.CheckResult
	r = c.run("egress", "check", "--session", s, "--host", "evil.example.test", "--port", "443", "-o", "json")
	if r.code != exitDenied {
		t.Fatalf("check --host -o json: exit %d\n%s", r.code, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Decision != "deny" || res.Layer != "session" || res.Reason == "" {
		t.Fatalf("check --host -o json: %v %+v\n%s", err, res, r.stdout)
	}
	c.json(&res, "egress", "check", "--session", s, "--host", "api.openai.com", "--port", "443")
	if res.Decision != "allow" || res.Rule == "" {
		t.Fatalf("check api.openai.com:443: %+v", res)
	}
	// Plain HTTP is off in this policy.
	if r := c.run("egress", "check", "--session", s, "http://api.openai.com/"); r.code != exitDenied {
		t.Fatalf("check http://api.openai.com/: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Addresses: the metadata endpoint is a hard deny whatever the policy says.
	c.ok("egress", "set", "--vm", "vm-check", "--cidr", "169.254.0.0/16", "--https")
	r = c.run("egress", "check", "--session", s, "--ip", "169.254.169.254", "--port", "80")
	if r.code != exitDenied || !strings.HasPrefix(r.stdout, "deny  (layer hard") {
		t.Fatalf("check metadata: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// DNS: a name no rule allows is refused; an allowed one is answered.
	if r := c.run("egress", "check", "--session", s, "--dns", "exfil.example.test"); r.code != exitDenied {
		t.Fatalf("check --dns exfil: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	c.json(&res, "egress", "check", "--session", s, "--dns", "api.openai.com", "--qtype", "AAAA")
	if res.Decision != "allow" {
		t.Fatalf("check --dns api.openai.com AAAA: %+v", res)
	}

	// Monitor mode lets traffic through: allow, exit 0, and says it would deny.
	c.ok("egress", "clear", "--vm", "vm-check")
	c.ok("egress", "set", "--session", s, "--monitor")
	r = c.run("egress", "check", "--session", s, "https://evil.example.test/")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "allow") || !strings.Contains(r.stdout, "would deny") {
		t.Fatalf("check in monitor mode: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// A malformed check is an error (1), never a decision.
	c.fails(1, "give a URL, --host, --ip or --dns", "egress", "check", "--session", s)
	c.fails(1, "only one of", "egress", "check", "--session", s, "https://a.test/", "--host", "b.test", "--port", "443")
	c.fails(1, "need --port", "egress", "check", "--session", s, "--host", "b.test")
	c.fails(1, "--session is required", "egress", "check", "https://a.test/")
	c.fails(1, "(404 not_found)", "egress", "check", "--session", "nope", "https://a.test/")
}

func TestPackageManagers(t *testing.T) {
	c, _ := startCtl(t)
	var pm client.PackageManagers
	c.json(&pm, "egress", "package-managers")
	if !slices.Contains(pm.Managers["pip"], "pypi.org") {
		t.Fatalf("preset without pypi.org: %v", pm.Managers)
	}
	out := c.ok("egress", "package-managers")
	mustHaveLine(t, strings.SplitN(out, "\n", 2)[0], "MANAGER", "HOSTS")
	if !strings.Contains(out, "pypi.org") || !strings.Contains(out, "npm") {
		t.Fatalf("package-managers text:\n%s", out)
	}
}

func TestAPIKeys(t *testing.T) {
	c, in := startCtl(t)

	var k client.APIKey
	c.json(&k, "key", "create", "--tenant", "acme")
	if k.ID == "" || k.Tenant != "acme" || k.Admin || k.Key == "" {
		t.Fatalf("key create: %+v", k)
	}
	r := c.run("key", "create", "--tenant", "ops", "--admin")
	if r.code != 0 || !strings.Contains(r.stderr, "not shown again") {
		t.Fatalf("key create --admin: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	mustHaveLine(t, r.stdout, "admin:", "true")
	mustHaveLine(t, r.stdout, "tenant:", "ops")

	var list client.APIKeyList
	c.json(&list, "key", "list")
	tenants := map[string]bool{}
	for _, key := range list.Keys {
		tenants[key.Tenant] = true
		if key.Key != "" {
			t.Fatalf("key list shows a secret: %+v", key)
		}
	}
	if !tenants["acme"] || !tenants["ops"] || len(list.Keys) != 3 { // and the bootstrap admin key
		t.Fatalf("key list: %+v", list.Keys)
	}

	// The new key works, sees only its tenant's objects, and cannot manage keys.
	acme := newCtl(t, in.URL, k.Key)
	acme.ok("vm", "create", "--id", "acme-vm")
	c.fails(1, "(404 not_found)", "vm", "get", "acme-vm")
	acme.fails(1, "(403 forbidden)", "key", "list")

	c.ok("key", "delete", k.ID)
	acme.fails(1, "(401 unauthorized)", "vm", "list")
	c.fails(1, "(404 not_found)", "key", "delete", k.ID)
	c.fails(1, "--tenant is required", "key", "create")
}

func TestHealthAndHelp(t *testing.T) {
	c, in := startCtl(t)
	if out := c.ok("health"); out != "ok\n" {
		t.Fatalf("health: %q", out)
	}
	// Health needs no key.
	if out := newCtl(t, in.URL, "").ok("health", "-o", "json"); !strings.Contains(out, `"status": "ok"`) {
		t.Fatalf("health -o json: %q", out)
	}

	// exec needs a VM with a sandbox network, and says how to make one.
	c.ok("vm", "create", "--id", "plain")
	c.fails(exitError, "has no sandbox network", "exec", "plain", "--", "true")

	// Every command has --help, on stdout, exit 0, with its usage line.
	for _, cmd := range commands {
		args := append(strings.Fields(cmd.name), "--help")
		r := c.run(args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "Usage: egressctl "+cmd.name) || r.stderr != "" {
			t.Errorf("%s --help: exit %d\nstdout: %s\nstderr: %s", cmd.name, r.code, r.stdout, r.stderr)
		}
	}
	if out := c.ok("egress", "check", "--help"); !strings.Contains(out, "3 when it is deny") {
		t.Errorf("egress check --help does not document its exit codes:\n%s", out)
	}
	if out := c.ok("--help"); !strings.Contains(out, "Exit status:") {
		t.Errorf("--help does not document exit codes:\n%s", out)
	}
}
