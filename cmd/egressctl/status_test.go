package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/process/buildinfo"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

// egressdVersion is what the built egressd says of itself with --version, without "egressd ".
func egressdVersion(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(egressdtest.Binary(t, "egressd"), "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "egressd ")
}

func TestVersion(t *testing.T) {
	c, in := startCtl(t)
	server := egressdVersion(t)

	out := c.ok("version")
	if !strings.HasPrefix(out, "client:  egressctl ") || !strings.Contains(out, "server:  egressd "+server+" at "+in.URL+"\n") {
		t.Errorf("version:\n%s", out)
	}
	var v struct {
		Client buildinfo.Info `json:"client"`
		Server *client.Status `json:"server"`
	}
	c.json(&v, "version")
	if v.Client.GoVersion == "" || v.Server == nil || "egressd "+serverBuild(v.Server).String() != "egressd "+server {
		t.Errorf("version -o json: %+v, server %+v", v.Client, v.Server)
	}

	// egressd down: the client's version, a note on stderr, exit 0.
	down := newCtl(t, "http://"+egressdtest.FreePort(t), in.AdminKey)
	r := down.run("version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "client:  egressctl ") || strings.Contains(r.stdout, "server") ||
		!strings.Contains(r.stderr, "no server version: cannot reach egressd at") {
		t.Errorf("version with egressd down: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	// No key: the server's version needs one, and egressctl says so.
	if r := newCtl(t, in.URL, "").run("version"); r.code != 0 || !strings.Contains(r.stderr, "wants an API key") {
		t.Errorf("version without a key: exit %d\nstderr: %s", r.code, r.stderr)
	}
}

func TestStatus(t *testing.T) {
	c, in := startCtl(t)
	c.ok("vm", "create", "--id", "s1")
	c.ok("session", "create", "--vm", "s1")
	var k client.APIKey
	c.json(&k, "key", "create", "--tenant", "acme")
	acme := newCtl(t, in.URL, k.Key)
	acme.ok("vm", "create", "--id", "a1")
	acme.ok("vm", "create", "--id", "a2")

	out := c.ok("status")
	for _, want := range [][]string{
		append([]string{"egressd:"}, strings.Fields(egressdVersion(t))...),
		{"roles:", "api,", "gateway"}, {"store:", "sqlite"},
		{"counts:", "all", "tenants"}, {"vms:", "3"}, {"sessions:", "1"}, {"open", "connections:", "0"},
	} {
		mustHaveLine(t, out, want...)
	}
	out = acme.ok("status")
	for _, want := range [][]string{{"counts:", "tenant", "acme"}, {"vms:", "2"}, {"sessions:", "0"}} {
		mustHaveLine(t, out, want...)
	}
	if strings.Contains(out, "store:") || strings.Contains(out, "roles:") {
		t.Errorf("a tenant's status shows the deployment:\n%s", out)
	}
	var st client.Status
	acme.json(&st, "status")
	if st.Scope != client.StatusScopeTenant || st.Tenant != "acme" || st.VMs != 2 || st.OpenConnections == nil {
		t.Errorf("status -o json: %+v", st)
	}
}
