package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/egressd/egressd/client"
)

func TestTCPFlag(t *testing.T) {
	for _, tc := range []struct {
		values []string
		want   []string
	}{
		{[]string{"github.com:22"}, []string{"github.com:22"}},
		{[]string{"github.com:22", "*.db.example.test:5432"}, []string{"github.com:22", "*.db.example.test:5432"}},
		{[]string{"github.com:22, gitlab.com:22"}, []string{"github.com:22", "gitlab.com:22"}},
		// A list of ports is one entry, so that egressd says "one port per entry".
		{[]string{"github.com:22,443"}, []string{"github.com:22,443"}},
		{[]string{"github.com"}, []string{"github.com"}},
	} {
		var f tcpFlag
		for _, v := range tc.values {
			if err := f.Set(v); err != nil {
				t.Fatalf("Set(%q): %v", v, err)
			}
		}
		if !reflect.DeepEqual([]string(f), tc.want) {
			t.Errorf("--tcp %q = %q, want %q", tc.values, f, tc.want)
		}
	}
	for _, v := range []string{"", " ", "github.com:22,", ",github.com:22"} {
		var f tcpFlag
		if err := f.Set(v); err == nil {
			t.Errorf("Set(%q) = %q, want an error: an empty entry must not pass unseen", v, f)
		}
	}
}

// TestTCPCLI: --tcp sets allowed_tcp entries that get, effective and vm show; check --host
// --port answers for them; a bad entry names its field.
func TestTCPCLI(t *testing.T) {
	c, _ := startCtl(t)
	s := c.newSession("vm-tcp")
	c.ok("egress", "set", "--vm", "vm-tcp", "--tcp", "github.com:22", "--tcp", "*.db.example.test:5432,git.corp.example:2222")
	out := c.ok("egress", "set", "--session", s, "--tcp", "GitHub.com:22", "--tcp", "*.DB.example.test:5432", "--deny-domain", "bad.db.example.test")
	mustHaveLine(t, out, "allowed_tcp:", "*.db.example.test:5432")
	mustHaveLine(t, out, "github.com:22")
	var p client.Policy
	c.json(&p, "egress", "get", "--vm", "vm-tcp")
	if want := []string{"*.db.example.test:5432", "git.corp.example:2222", "github.com:22"}; !reflect.DeepEqual(p.AllowedTCP, want) {
		t.Errorf("stored %q, want %q", p.AllowedTCP, want)
	}
	mustHaveLine(t, c.ok("vm", "get", "vm-tcp"), "policy:", "3", "tcp", "endpoints")

	eff := c.ok("egress", "effective", "--session", s)
	mustHaveLine(t, eff, "allowed_tcp:", "*.db.example.test:5432", "(from", "session,", "vm)")
	mustHaveLine(t, eff, "github.com:22")
	if strings.Contains(eff, "git.corp.example") {
		t.Errorf("effective shows an entry the session does not allow:\n%s", eff)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--host", "github.com", "--port", "22"}, 0, "allow (layer session, reason allowed_tcp, rule allowed_tcp github.com:22)"},
		{[]string{"--host", "x.db.example.test", "--port", "5432"}, 0, "reason allowed_tcp, rule allowed_tcp *.db.example.test:5432"},
		{[]string{"--host", "github.com", "--port", "23"}, exitDenied, "reason port_not_allowed"},
		{[]string{"--host", "bad.db.example.test", "--port", "5432"}, exitDenied, "reason denied_domain"},
		{[]string{"--host", "git.corp.example", "--port", "2222"}, exitDenied, "layer session, reason port_not_allowed"},
		{[]string{"--dns", "github.com"}, 0, "reason allowed_tcp"},
	} {
		r := c.run(append([]string{"egress", "check", "--session", s}, tc.args...)...)
		if r.code != tc.code || !strings.Contains(r.stdout, tc.want) {
			t.Errorf("check %q: exit %d, want %d with %q\n%s%s", tc.args, r.code, tc.code, tc.want, r.stdout, r.stderr)
		}
	}
	c.fails(1, "port must be 1 to 65535", "egress", "check", "--session", s, "--host", "github.com", "--port", "65536")
	c.fails(1, "--host and --ip need --port", "egress", "check", "--session", s, "--host", "github.com")

	c.fails(1, "allowed_tcp[1]", "egress", "set", "--session", s, "--tcp", "github.com:22", "--tcp", "github.com")
	c.fails(1, "one port per entry", "egress", "set", "--session", s, "--tcp", "github.com:22,443")
	c.fails(1, "allowed_cidrs", "egress", "set", "--session", s, "--tcp", "140.82.112.3:22")
	c.fails(1, "empty entry", "egress", "set", "--session", s, "--tcp", "")
	// The refusals changed nothing.
	c.json(&p, "egress", "get", "--session", s)
	if want := []string{"*.db.example.test:5432", "github.com:22"}; !reflect.DeepEqual(p.AllowedTCP, want) {
		t.Errorf("after the refusals: %q, want %q", p.AllowedTCP, want)
	}
}

// FuzzTCPFlag: --tcp never passes an empty entry on, never loses or invents a character
// other than the spaces around an entry, and splits only where each part has a port.
func FuzzTCPFlag(f *testing.F) {
	for _, s := range []string{"github.com:22", "a:1,b:2", "github.com:22,443", " a:1 , b:2 ", ",", "", "a,b", "[::1]:22,x:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		var l tcpFlag
		if err := l.Set(v); err != nil {
			return
		}
		if len(l) == 0 {
			t.Fatalf("Set(%q) accepted nothing", v)
		}
		for _, e := range l {
			if e == "" || e != strings.TrimSpace(e) {
				t.Fatalf("Set(%q) gave entry %q", v, e)
			}
		}
		if len(l) == 1 {
			// One part, or a value kept whole because a part has no port.
			if l[0] != strings.TrimSpace(v) {
				t.Fatalf("Set(%q) = %q", v, l)
			}
			return
		}
		for _, e := range l {
			if !strings.Contains(e, ":") || strings.Contains(e, ",") {
				t.Fatalf("Set(%q) split into %q", v, l)
			}
		}
		parts := strings.Split(v, ",")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		if !reflect.DeepEqual([]string(l), parts) {
			t.Fatalf("Set(%q) = %q, want %q", v, l, parts)
		}
	})
}
