package api_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

func TestCheckAndEffective(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)
	sid := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)["session_id"].(string)
	check := func(body map[string]any) map[string]any {
		t.Helper()
		return c.do("POST", "/v1/egress/session/"+sid+"/check", body).must(t, http.StatusOK)
	}
	expect := func(body map[string]any, decision, layer string, wouldDeny bool) map[string]any {
		t.Helper()
		got := check(body)
		if got["decision"] != decision || got["layer"] != layer || got["would_deny"] != wouldDeny {
			t.Errorf("check %v = %v, want %s by layer %s (would_deny %v)", body, got, decision, layer, wouldDeny)
		}
		if got["reason"] == "" {
			t.Errorf("check %v: no reason", body)
		}
		return got
	}

	// Nothing set: the operator's default, which out of the box denies everything.
	expect(map[string]any{"url": "https://pypi.org/simple/"}, "deny", "default", false)
	eff := c.do("GET", "/v1/egress/session/"+sid+"/effective", nil).must(t, http.StatusOK)
	if eff["session_id"] != sid || eff["vm_id"] != "v" || !strings.Contains(string(c.do("GET", "/v1/egress/session/"+sid+"/effective", nil).raw), `"default"`) {
		t.Errorf("effective with nothing set does not name the default layer: %v", eff)
	}

	// The VM allows HTTPS to two hosts; the session narrows to one and adds the preset.
	c.do("POST", "/v1/egress/vm/v", map[string]any{"allow_https": true, "allow_package_managers": true, "allowed_domains": []string{"api.example.com", "*.corp.example"}}).must(t, http.StatusOK)
	c.do("POST", "/v1/egress/session/"+sid, map[string]any{"allow_https": true, "allow_http": true, "allowed_domains": []string{"*.corp.example"}, "denied_domains": []string{"secret.corp.example"}}).must(t, http.StatusOK)

	got := expect(map[string]any{"url": "https://git.corp.example/repo"}, "allow", "session", false)
	if !strings.Contains(got["rule"].(string), "*.corp.example") {
		t.Errorf("allow rule %q does not name the matching entry", got["rule"])
	}
	expect(map[string]any{"url": "https://api.example.com/"}, "deny", "session", false)      // the session does not list it
	expect(map[string]any{"url": "http://git.corp.example/"}, "deny", "vm", false)           // the VM does not allow HTTP
	expect(map[string]any{"url": "https://SECRET.corp.example./"}, "deny", "session", false) // denied, in any spelling
	expect(map[string]any{"url": "https://user@secret.corp.example/"}, "deny", "session", false)
	expect(map[string]any{"host": "git.corp.example", "port": 22}, "deny", "session", false)
	expect(map[string]any{"url": "https://pypi.org/simple/"}, "deny", "session", false) // the session has no preset
	expect(map[string]any{"ip": "169.254.169.254", "port": 80}, "deny", "hard", false)
	expect(map[string]any{"url": "http://[fd00:ec2::254]/latest/meta-data"}, "deny", "hard", false)
	expect(map[string]any{"ip": "1.1.1.1", "port": 53, "transport": "udp"}, "deny", "session", false)
	expect(map[string]any{"dns_query": "git.corp.example", "qtype": "AAAA"}, "allow", "session", false)
	expect(map[string]any{"dns_query": "git.corp.example", "qtype": "TXT"}, "deny", "hard", false) // no policy answers TXT
	expect(map[string]any{"dns_query": "git.corp.example", "qtype": "HTTPS"}, "deny", "hard", false)
	expect(map[string]any{"dns_query": "api.example.com"}, "deny", "session", false)

	eff = c.do("GET", "/v1/egress/session/"+sid+"/effective", nil).must(t, http.StatusOK)
	raw := string(c.do("GET", "/v1/egress/session/"+sid+"/effective", nil).raw)
	for _, want := range []string{`"session"`, `"vm"`, "*.corp.example", "secret.corp.example"} {
		if !strings.Contains(raw, want) {
			t.Errorf("effective does not mention %s:\n%s", want, raw)
		}
	}
	if strings.Contains(raw, `"default"`) {
		t.Errorf("effective names the default layer while both are set:\n%s", raw)
	}

	// Monitor mode in the session never loosens the VM's enforcement, but records would_deny.
	c.do("POST", "/v1/egress/session/"+sid, map[string]any{"mode": "monitor"}).must(t, http.StatusOK)
	expect(map[string]any{"url": "https://api.example.com/"}, "allow", "session", true)
	expect(map[string]any{"url": "https://other.example.net/"}, "deny", "vm", false)

	// Bad check requests.
	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{}, ""},
		{map[string]any{"url": "ftp://example.com/"}, "url"},
		{map[string]any{"host": "example.com"}, "port"},
		{map[string]any{"host": "exa mple.com", "port": 443}, "host"},
		{map[string]any{"ip": "300.1.1.1", "port": 1}, "ip"},
		{map[string]any{"ip": "1.1.1.1", "port": 1, "transport": "sctp"}, "transport"},
		{map[string]any{"dns_query": "example.com", "qtype": "BOGUS"}, "qtype"},
		{map[string]any{"url": "https://a.example/", "host": "b.example", "port": 443}, ""},
		// A field that the form asked for would ignore: the answer would be about another
		// destination than the one the caller meant.
		{map[string]any{"url": "https://a.example/", "port": 80}, "port"},
		{map[string]any{"url": "http://a.example/", "transport": "udp"}, "port"},
		{map[string]any{"host": "a.example", "port": 443, "qtype": "AAAA"}, "qtype"},
		{map[string]any{"dns_query": "a.example", "port": 53}, "port"},
		{map[string]any{"dns_query": "a.example", "transport": "tcp"}, "port"},
	} {
		c.do("POST", "/v1/egress/session/"+sid+"/check", tc.body).mustError(t, http.StatusBadRequest, "bad_request", tc.field)
	}
}

func TestCheckResolve(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)
	sid := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)["session_id"].(string)
	// "localhost" resolves (from /etc/hosts) to loopback only: allowed as a name, denied once
	// resolved, because the gateway never dials a non-public address for a name.
	c.do("POST", "/v1/egress/session/"+sid, map[string]any{"allow_http": true, "allowed_domains": []string{"localhost"}}).must(t, http.StatusOK)
	byName := c.do("POST", "/v1/egress/session/"+sid+"/check", map[string]any{"url": "http://localhost/"}).must(t, http.StatusOK)
	if byName["decision"] != "allow" {
		t.Fatalf("as a name: %v", byName)
	}
	resolved := c.do("POST", "/v1/egress/session/"+sid+"/check", map[string]any{"url": "http://localhost/", "resolve": true}).must(t, http.StatusOK)
	if resolved["decision"] != "deny" || len(resolved["addresses"].([]any)) == 0 {
		t.Fatalf("resolved: %v", resolved)
	}
	for _, a := range resolved["addresses"].([]any) {
		if a.(map[string]any)["decision"] != "deny" {
			t.Errorf("a loopback answer is allowed: %v", a)
		}
	}
}

func TestPackageManagersAndDefaultPolicy(t *testing.T) {
	dir := t.TempDir()
	pm := filepath.Join(dir, "pm.json")
	def := filepath.Join(dir, "default.json")
	os.WriteFile(pm, []byte(`{"managers": {"npm": ["registry.npm.test"]}}`), 0o600)
	os.WriteFile(def, []byte(`{"allow_https": true, "allowed_domains": ["docs.example.org"]}`), 0o600)
	in := egressdtest.Start(t, "--package-managers-file", pm, "--default-policy", def)
	c := newClient(t, in, in.AdminKey)

	managers := c.do("GET", "/v1/egress/package-managers", nil).must(t, http.StatusOK)["managers"].(map[string]any)
	npm := strs(managers["npm"])
	if !contains(npm, "registry.npm.test") || len(npm) < 2 {
		t.Errorf("npm = %v: the operator's entry must be added to the built-in ones", npm)
	}
	if !contains(strs(managers["pip"]), "pypi.org") {
		t.Errorf("pip = %v", managers["pip"])
	}

	c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)
	sid := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)["session_id"].(string)
	chk := func(url string) map[string]any {
		return c.do("POST", "/v1/egress/session/"+sid+"/check", map[string]any{"url": url}).must(t, http.StatusOK)
	}
	if got := chk("https://docs.example.org/"); got["decision"] != "allow" || got["layer"] != "default" {
		t.Errorf("default policy: %v", got)
	}
	c.do("POST", "/v1/egress/vm/v", map[string]any{"allow_package_managers": true}).must(t, http.StatusOK)
	if got := chk("http://registry.npm.test/left-pad"); got["decision"] != "allow" {
		t.Errorf("operator preset entry on port 80: %v", got)
	}
	if got := chk("https://docs.example.org/"); got["decision"] != "deny" || got["layer"] != "vm" {
		t.Errorf("the default must not apply once a layer is set: %v", got)
	}

	// A bad operator file stops egressd at start with a message naming the entry.
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"managers": {"npm": ["*"]}}`), 0o600)
	out, err := runEgressd(t, "--package-managers-file", bad, "--data-dir", t.TempDir(), "--api-listen", egressdtest.FreePort(t))
	if err == nil || !strings.Contains(out, "managers.npm[0]") {
		t.Errorf("bad preset file: err %v, output %q", err, out)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
