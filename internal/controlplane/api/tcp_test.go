package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
)

// allowedTCPStores runs a test on egressd with each store kind: the policy, allowed_tcp
// included, is a JSON document in both, and must come back as it went in.
func allowedTCPStores(t *testing.T, run func(t *testing.T, c *apiClient)) {
	t.Run("sqlite", func(t *testing.T) {
		in := egressdtest.Start(t)
		run(t, newClient(t, in, in.AdminKey))
	})
	t.Run("postgres", func(t *testing.T) {
		in := egressdtest.Start(t, "--store", pgtest.NewDatabase(t))
		run(t, newClient(t, in, in.AdminKey))
	})
}

// TestAllowedTCPPolicies: allowed_tcp is stored normalised (lower case, punycode, one
// trailing dot dropped, sorted, deduplicated) and read back the same, on a session and a
// VM, in both stores; a policy without it answers an empty list, never null.
func TestAllowedTCPPolicies(t *testing.T) {
	allowedTCPStores(t, func(t *testing.T, c *apiClient) {
		c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)
		sid := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)["session_id"].(string)
		in := []string{"GitHub.COM:22", "github.com.:22", "*.DB.example.test:5432", "bücher.example:2222", "one.example.test:1", "top.example.test:65535"}
		want := []string{"*.db.example.test:5432", "github.com:22", "one.example.test:1", "top.example.test:65535", "xn--bcher-kva.example:2222"}
		for _, path := range []string{"/v1/egress/session/" + sid, "/v1/egress/vm/v"} {
			set := c.do("POST", path, map[string]any{"allowed_tcp": in}).must(t, http.StatusOK)
			if got := strs(set["allowed_tcp"]); !equal(got, want) {
				t.Errorf("POST %s: allowed_tcp = %v, want %v", path, got, want)
			}
			if got := strs(c.do("GET", path, nil).must(t, http.StatusOK)["allowed_tcp"]); !equal(got, want) {
				t.Errorf("GET %s: allowed_tcp = %v, want %v", path, got, want)
			}
			// Setting replaces: left out, the list is empty, and says so.
			c.do("POST", path, map[string]any{"allow_https": true}).must(t, http.StatusOK)
			got := c.do("GET", path, nil)
			if list, ok := got.body["allowed_tcp"].([]any); !ok || len(list) != 0 {
				t.Errorf("GET %s after a policy without allowed_tcp: %s", path, got.raw)
			}
		}
		// The VM's policy given at creation.
		vm := c.do("POST", "/v1/vms", map[string]any{"vm_id": "w", "egress_policy": map[string]any{"allowed_tcp": []string{"SSH.example.test:22"}}}).must(t, http.StatusCreated)
		if got := strs(vm["egress_policy"].(map[string]any)["allowed_tcp"]); !equal(got, []string{"ssh.example.test:22"}) {
			t.Errorf("egress_policy.allowed_tcp = %v", got)
		}
		if got := strs(c.do("GET", "/v1/vms/w", nil).must(t, http.StatusOK)["egress_policy"].(map[string]any)["allowed_tcp"]); !equal(got, []string{"ssh.example.test:22"}) {
			t.Errorf("GET /v1/vms/w: allowed_tcp = %v", got)
		}
	})
}

// TestAllowedTCPInvalid: every bad entry is refused with the index of the entry to blame,
// and nothing of the refused policy is stored.
func TestAllowedTCPInvalid(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)
	c.do("POST", "/v1/egress/vm/v", map[string]any{"allowed_tcp": []string{"kept.example.test:22"}}).must(t, http.StatusOK)
	for _, tc := range []struct {
		entry string
		msg   string // a part of the message
	}{
		{"github.com", "no port"},
		{"github.com:", "empty"},
		{"github.com:0", "1 to 65535"},
		{"github.com:65536", "1 to 65535"},
		{"github.com:-1", "no ranges"},
		{"github.com:22-23", "no ranges"},
		{"github.com:22,23", "no ranges"},
		{"github.com:022", "leading zero"},
		{"github.com:ssh", "not a number"},
		{"github.com: 22", "not a number"},
		{"140.82.112.3:22", "allowed_cidrs"},
		{"140.82.112.3", "allowed_cidrs"},
		{"[2001:db8::1]:22", "allowed_cidrs"},
		{"2001:db8::1", "allowed_cidrs"},
		{"*:22", ""},
		{"*.com:22", ""},
		{"git*.example.test:22", ""},
		{"exa mple.test:22", ""},
		{"user@github.com:22", ""},
		{"github.com/x:22", ""},
		{":22", ""},
		{"", ""},
	} {
		body := map[string]any{"allowed_tcp": []string{"ok.example.test:22", tc.entry}}
		msg := c.do("POST", "/v1/egress/vm/v", body).mustError(t, http.StatusBadRequest, "invalid_policy", "allowed_tcp[1]")
		if !strings.Contains(msg, tc.msg) {
			t.Errorf("%q: message %q does not say %q", tc.entry, msg, tc.msg)
		}
		c.do("POST", "/v1/vms", map[string]any{"egress_policy": body}).
			mustError(t, http.StatusBadRequest, "invalid_policy", "egress_policy.allowed_tcp[1]")
	}
	// The list, not an entry, is to blame for its length and type.
	many := make([]string, 10001)
	for i := range many {
		many[i] = fmt.Sprintf("h%d.example.test:22", i)
	}
	c.do("POST", "/v1/egress/vm/v", map[string]any{"allowed_tcp": many}).mustError(t, http.StatusBadRequest, "invalid_policy", "allowed_tcp")
	c.do("POST", "/v1/egress/vm/v", `{"allowed_tcp": "github.com:22"}`).mustError(t, http.StatusBadRequest, "invalid_policy", "allowed_tcp")
	c.do("POST", "/v1/egress/vm/v", `{"allowed_tcp": [22]}`).mustError(t, http.StatusBadRequest, "invalid_policy", "allowed_tcp[0]")
	c.do("POST", "/v1/egress/vm/v", `{"Allowed_TCP": ["github.com:22"]}`).mustError(t, http.StatusBadRequest, "invalid_policy", "Allowed_TCP")
	c.do("POST", "/v1/egress/vm/v", `{"allowed_tcp": [], "allowed_tcp": ["github.com:22"]}`).mustError(t, http.StatusBadRequest, "invalid_policy", "allowed_tcp")
	// Exactly the limit is accepted.
	c.do("POST", "/v1/egress/vm/v", map[string]any{"allowed_tcp": many[:10000]}).must(t, http.StatusOK)
	c.do("POST", "/v1/egress/vm/v", map[string]any{"allowed_tcp": []string{"kept.example.test:22"}}).must(t, http.StatusOK)
	if got := strs(c.do("GET", "/v1/egress/vm/v", nil).must(t, http.StatusOK)["allowed_tcp"]); !equal(got, []string{"kept.example.test:22"}) {
		t.Errorf("after the refusals: allowed_tcp = %v", got)
	}
}

// TestAllowedTCPCheck: /check with host and port answers allowed_tcp decisions on any port,
// with the layer that decided; the other forms are judged as before.
func TestAllowedTCPCheck(t *testing.T) {
	allowedTCPStores(t, func(t *testing.T, c *apiClient) {
		c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)
		sid := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)["session_id"].(string)
		c.do("POST", "/v1/egress/vm/v", map[string]any{
			"allowed_tcp": []string{"github.com:22", "*.db.example.test:5432", "git.corp.example:2222", "one.example.test:1", "top.example.test:65535", "web.example.test:443"},
		}).must(t, http.StatusOK)
		c.do("POST", "/v1/egress/session/"+sid, map[string]any{
			"allowed_tcp":    []string{"github.com:22", "*.db.example.test:5432", "one.example.test:1", "top.example.test:65535", "web.example.test:443", "only.session.test:22"},
			"denied_domains": []string{"bad.db.example.test"},
		}).must(t, http.StatusOK)

		for _, tc := range []struct {
			body                  map[string]any
			decision, reason, why string // why: the layer
			rule                  string
		}{
			{map[string]any{"host": "github.com", "port": 22}, "allow", "allowed_tcp", "session", "allowed_tcp github.com:22"},
			{map[string]any{"host": "GitHub.COM.", "port": 22}, "allow", "allowed_tcp", "session", "allowed_tcp github.com:22"},
			{map[string]any{"host": "github.com", "port": 22, "transport": "tcp"}, "allow", "allowed_tcp", "session", "allowed_tcp github.com:22"},
			{map[string]any{"host": "github.com", "port": 22, "transport": "TCP"}, "allow", "allowed_tcp", "session", "allowed_tcp github.com:22"},
			{map[string]any{"host": "x.db.example.test", "port": 5432}, "allow", "allowed_tcp", "session", "allowed_tcp *.db.example.test:5432"},
			{map[string]any{"host": "a.b.db.example.test", "port": 5432}, "allow", "allowed_tcp", "session", "allowed_tcp *.db.example.test:5432"},
			{map[string]any{"host": "one.example.test", "port": 1}, "allow", "allowed_tcp", "session", "allowed_tcp one.example.test:1"},
			{map[string]any{"host": "top.example.test", "port": 65535}, "allow", "allowed_tcp", "session", "allowed_tcp top.example.test:65535"},
			// allowed_tcp on a web port opens it whatever the flags say.
			{map[string]any{"host": "web.example.test", "port": 443}, "allow", "allowed_tcp", "session", "allowed_tcp web.example.test:443"},
			// Another port, the apex of a wildcard, a name of neither.
			{map[string]any{"host": "github.com", "port": 23}, "deny", "port_not_allowed", "session", ""},
			{map[string]any{"host": "top.example.test", "port": 65534}, "deny", "port_not_allowed", "session", ""},
			{map[string]any{"host": "db.example.test", "port": 5432}, "deny", "port_not_allowed", "session", ""},
			{map[string]any{"host": "github.com.evil.test", "port": 22}, "deny", "port_not_allowed", "session", ""},
			{map[string]any{"host": "github.com", "port": 443}, "deny", "https_off", "session", ""},
			// denied_domains wins over allowed_tcp.
			{map[string]any{"host": "bad.db.example.test", "port": 5432}, "deny", "denied_domain", "session", ""},
			{map[string]any{"host": "BAD.db.example.test.", "port": 5432}, "deny", "denied_domain", "session", ""},
			// Every layer must allow: the VM does not list these.
			{map[string]any{"host": "git.corp.example", "port": 2222}, "deny", "port_not_allowed", "session", ""},
			{map[string]any{"host": "only.session.test", "port": 22}, "deny", "port_not_allowed", "vm", ""},
			// An address is judged as an address: allowed_tcp holds names only.
			{map[string]any{"host": "140.82.112.3", "port": 22}, "deny", "ip_literal", "session", ""},
			{map[string]any{"host": "[2001:db8::1]", "port": 22}, "deny", "ip_literal", "session", ""},
			{map[string]any{"ip": "140.82.112.3", "port": 22, "transport": "tcp"}, "deny", "port_not_allowed", "session", ""},
			{map[string]any{"ip": "140.82.112.3", "port": 22}, "deny", "port_not_allowed", "session", ""},
			{map[string]any{"ip": "127.0.0.1", "port": 22}, "deny", "hard_deny", "hard", ""},
			{map[string]any{"ip": "140.82.112.3", "port": 22, "transport": "udp"}, "deny", "udp_not_allowed", "session", ""},
			// The DNS filter answers the names allowed_tcp lists, and no other.
			{map[string]any{"dns_query": "github.com"}, "allow", "allowed_tcp", "session", "allowed_tcp github.com:22"},
			{map[string]any{"dns_query": "x.db.example.test", "qtype": "AAAA"}, "allow", "allowed_tcp", "session", "allowed_tcp *.db.example.test:5432"},
			{map[string]any{"dns_query": "bad.db.example.test"}, "deny", "denied_domain", "session", ""},
			{map[string]any{"dns_query": "db.example.test"}, "deny", "name_not_allowed", "session", ""},
			{map[string]any{"dns_query": "github.com", "qtype": "TXT"}, "deny", "query_type", "hard", ""},
			// A URL is web traffic: allowed_tcp on 22 does not open HTTPS.
			{map[string]any{"url": "https://github.com/"}, "deny", "https_off", "session", ""},
		} {
			got := c.do("POST", "/v1/egress/session/"+sid+"/check", tc.body).must(t, http.StatusOK)
			if got["decision"] != tc.decision || got["reason"] != tc.reason || got["layer"] != tc.why || (tc.rule != "" && got["rule"] != tc.rule) {
				t.Errorf("check %v = %v, want %s, reason %s, layer %s, rule %q", tc.body, got, tc.decision, tc.reason, tc.why, tc.rule)
			}
		}

		// allowed_domains and the web flags open no other port, allowed_cidrs no name.
		c.do("POST", "/v1/egress/session/"+sid, map[string]any{"allow_https": true, "allow_http": true, "allowed_domains": []string{"github.com"}, "allowed_cidrs": []string{"198.51.100.0/24"}}).must(t, http.StatusOK)
		for _, body := range []map[string]any{{"host": "github.com", "port": 22}, {"host": "github.com", "port": 8443}, {"dns_query": "x.db.example.test"}} {
			if got := c.do("POST", "/v1/egress/session/"+sid+"/check", body).must(t, http.StatusOK); got["decision"] != "deny" || got["layer"] != "session" {
				t.Errorf("check %v without allowed_tcp in the session = %v, want a deny by the session", body, got)
			}
		}
		c.do("POST", "/v1/egress/session/"+sid, map[string]any{"allowed_tcp": []string{"github.com:22"}}).must(t, http.StatusOK)

		// Monitor mode in the session records would-be denials and never loosens the VM.
		c.do("POST", "/v1/egress/session/"+sid, map[string]any{"mode": "monitor"}).must(t, http.StatusOK)
		if got := c.do("POST", "/v1/egress/session/"+sid+"/check", map[string]any{"host": "github.com", "port": 22}).must(t, http.StatusOK); got["decision"] != "allow" || got["would_deny"] != true {
			t.Errorf("monitor session, VM allows: %v", got)
		}
		if got := c.do("POST", "/v1/egress/session/"+sid+"/check", map[string]any{"host": "github.com", "port": 2222}).must(t, http.StatusOK); got["decision"] != "deny" || got["layer"] != "vm" {
			t.Errorf("monitor session, VM denies: %v", got)
		}
	})
}

// TestAllowedTCPCheckBadPort: a host without a usable port is a 400 that names the field,
// never a decision about some other port.
func TestAllowedTCPCheckBadPort(t *testing.T) {
	in := egressdtest.Start(t)
	c := newClient(t, in, in.AdminKey)
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)
	sid := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)["session_id"].(string)
	c.do("POST", "/v1/egress/session/"+sid, map[string]any{"allowed_tcp": []string{"github.com:22"}}).must(t, http.StatusOK)
	for _, tc := range []struct{ body, field string }{
		{`{"host": "github.com"}`, "port"},
		{`{"host": "github.com", "port": 0}`, "port"},
		{`{"host": "github.com", "port": -22}`, "port"},
		{`{"host": "github.com", "port": 65536}`, "port"},
		{`{"host": "github.com", "port": 65558}`, "port"}, // 22 + 65536: no wrap to 22
		{`{"host": "github.com", "port": 4294967318}`, "port"},
		{`{"host": "github.com", "port": 22.5}`, "port"},
		{`{"host": "github.com", "port": "22"}`, "port"},
		{`{"host": "github.com", "port": null}`, "port"},
		{`{"host": "github.com:22"}`, "port"},
		{`{"host": "github.com", "port": 22, "transport": "udp"}`, "transport"},
		{`{"host": "github.com", "port": 22, "dns_query": "github.com"}`, "dns_query"},
		{`{"host": "github.com", "port": 22, "ip": "140.82.112.3"}`, ""},
		{`{"ip": "140.82.112.3", "transport": "tcp"}`, "port"},
		{`{"ip": "140.82.112.3", "port": 70000, "transport": "tcp"}`, "port"},
	} {
		c.do("POST", "/v1/egress/session/"+sid+"/check", tc.body).mustError(t, http.StatusBadRequest, "bad_request", tc.field)
	}
}

// TestAllowedTCPCheckResolve: with "resolve": true the addresses are judged as the gateway
// would before it dials: an allowed_tcp name is allowed at an address that is public (here:
// in --public-cidrs) or inside allowed_cidrs, and denied (not_public) at a private one.
func TestAllowedTCPCheckResolve(t *testing.T) {
	const public, private = "127.0.0.5", "198.51.100.7"
	d := testnet.StartDNS(t, "127.0.0.1")
	d.Set("git.example.test", public)
	d.Set("private.example.test", private)
	d.Set("mixed.example.test", private, public)
	in := egressdtest.Start(t, "--public-cidrs", "127.0.0.0/26", "--dns-upstream", d.Addr)
	c := newClient(t, in, in.AdminKey)
	c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)
	sid := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)["session_id"].(string)
	entries := []string{"git.example.test:2222", "private.example.test:5432", "mixed.example.test:22", "gone.example.test:22"}
	c.do("POST", "/v1/egress/session/"+sid, map[string]any{"allowed_tcp": entries}).must(t, http.StatusOK)

	type addr struct{ ip, decision, reason string }
	for _, tc := range []struct {
		host             string
		port             int
		decision, reason string
		addrs            []addr
	}{
		{"git.example.test", 2222, "allow", "allowed_tcp", []addr{{public, "allow", "allowed_tcp"}}},
		{"private.example.test", 5432, "deny", "not_public", []addr{{private, "deny", "not_public"}}},
		{"mixed.example.test", 22, "allow", "allowed_tcp", []addr{{private, "deny", "not_public"}, {public, "allow", "allowed_tcp"}}},
		// Judged on the name first: a port no entry opens is never looked up.
		{"git.example.test", 22, "deny", "port_not_allowed", nil},
		{"gone.example.test", 22, "deny", "name_not_found", nil},
	} {
		body := map[string]any{"host": tc.host, "port": tc.port, "resolve": true}
		got := c.do("POST", "/v1/egress/session/"+sid+"/check", body).must(t, http.StatusOK)
		if got["decision"] != tc.decision || got["reason"] != tc.reason {
			t.Errorf("check %v = %v, want %s (%s)", body, got, tc.decision, tc.reason)
			continue
		}
		list, _ := got["addresses"].([]any)
		var have []addr
		for _, a := range list {
			a := a.(map[string]any)
			have = append(have, addr{a["ip"].(string), a["decision"].(string), a["reason"].(string)})
		}
		if fmt.Sprint(have) != fmt.Sprint(tc.addrs) {
			t.Errorf("check %v: addresses %v, want %v", body, have, tc.addrs)
		}
	}
	// Without resolve the name alone is judged: the private answer is not seen.
	if got := c.do("POST", "/v1/egress/session/"+sid+"/check", map[string]any{"host": "private.example.test", "port": 5432}).must(t, http.StatusOK); got["decision"] != "allow" {
		t.Errorf("as a name: %v", got)
	}
	// allowed_cidrs holding the private answer makes it dialable.
	c.do("POST", "/v1/egress/session/"+sid, map[string]any{"allowed_tcp": entries, "allowed_cidrs": []string{"198.51.100.0/24"}}).must(t, http.StatusOK)
	if got := c.do("POST", "/v1/egress/session/"+sid+"/check", map[string]any{"host": "private.example.test", "port": 5432, "resolve": true}).must(t, http.StatusOK); got["decision"] != "allow" {
		t.Errorf("private answer inside allowed_cidrs: %v", got)
	}
}

// TestAllowedTCPEffective: /effective shows allowed_tcp as the intersection of the layers,
// per port, with the layers it comes from.
func TestAllowedTCPEffective(t *testing.T) {
	allowedTCPStores(t, func(t *testing.T, c *apiClient) {
		c.do("POST", "/v1/vms", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)
		sid := c.do("POST", "/v1/sessions", map[string]any{"vm_id": "v"}).must(t, http.StatusCreated)["session_id"].(string)
		eff := func() (value, from []string) {
			t.Helper()
			e := c.do("GET", "/v1/egress/session/"+sid+"/effective", nil).must(t, http.StatusOK)
			at, ok := e["allowed_tcp"].(map[string]any)
			if !ok {
				t.Fatalf("effective has no allowed_tcp object: %v", e)
			}
			if at["value"] == nil {
				t.Errorf("allowed_tcp.value is null: %v", at)
			}
			return strs(at["value"]), strs(at["from"])
		}
		if v, f := eff(); len(v) != 0 || !equal(f, []string{"default"}) {
			t.Errorf("nothing set: %v from %v", v, f)
		}
		c.do("POST", "/v1/egress/vm/v", map[string]any{"allowed_tcp": []string{"*.example.test:22", "db.example.test:5432"}}).must(t, http.StatusOK)
		if v, f := eff(); !equal(v, []string{"*.example.test:22", "db.example.test:5432"}) || !equal(f, []string{"vm"}) {
			t.Errorf("VM only: %v from %v", v, f)
		}
		c.do("POST", "/v1/egress/session/"+sid, map[string]any{"allowed_tcp": []string{"git.example.test:22", "db.example.test:3306"}}).must(t, http.StatusOK)
		if v, f := eff(); !equal(v, []string{"git.example.test:22"}) || !equal(f, []string{"session", "vm"}) {
			t.Errorf("both: %v from %v", v, f)
		}
		// A layer without allowed_tcp allows no endpoint: it is the one to change.
		c.do("POST", "/v1/egress/session/"+sid, map[string]any{"allow_https": true}).must(t, http.StatusOK)
		if v, f := eff(); len(v) != 0 || !equal(f, []string{"session"}) {
			t.Errorf("session without allowed_tcp: %v from %v", v, f)
		}
	})
}
