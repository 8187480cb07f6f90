package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/egressd/egressd/client"
)

// grantTarget is the --session or --vm a grant command works on: exactly one.
type grantTarget struct{ session, vm string }

func (t *grantTarget) register(fs *flag.FlagSet) {
	fs.StringVar(&t.session, "session", "", "the grants of this `SESSION`")
	fs.StringVar(&t.vm, "vm", "", "the grants of this `VM` (they hold for all its sessions)")
}

func (t *grantTarget) scope() (client.GrantScope, string, error) {
	switch {
	case (t.session == "") == (t.vm == ""):
		return "", "", usagef("give exactly one of --session and --vm")
	case t.session != "":
		return client.GrantSession, t.session, nil
	}
	return client.GrantVM, t.vm, nil
}

// parseTTL reads --ttl: a Go duration ("90s", "10m", "2h") or a number of seconds, whole
// seconds from 1 s to 24 h.
func parseTTL(s string) (int, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		var n int
		if _, err2 := fmt.Sscanf(s, "%d", &n); err2 != nil || fmt.Sprint(n) != s {
			return 0, usagef("--ttl %q: give a duration such as 90s, 10m or 2h", s)
		}
		d = time.Duration(n) * time.Second
	}
	if d%time.Second != 0 || d < time.Second || d > client.MaxGrantTTL {
		return 0, usagef("--ttl %s: give whole seconds from 1s to 24h", s)
	}
	return int(d / time.Second), nil
}

var grantAddCmd = &command{
	name:     "grant add",
	synopsis: "(--session SESSION | --vm VM) [--domain D]... [--tcp NAME:PORT]... [--cidr C]... --ttl DURATION [--note TEXT]",
	summary:  "allow more for a while: entries that end by themselves",
	help: `
Adds entries to the layer of a session or VM until --ttl runs out (1s to 24h): --domain as in
allowed_domains (web ports follow the layer's allow_https and allow_http, which a grant never
turns on), --tcp as in allowed_tcp, --cidr as in allowed_cidrs. At expiry what only the grant
allowed is cut, as a tightened policy is. A grant cannot loosen another layer: to let a
denied connection through, grant on the layer that denied (the check or the event says which).

  egressctl grant add --session ses_1 --tcp github.com:22 --ttl 10m --note "clone the repo"
  egressctl grant add --vm vm-1 --domain files.example.com --ttl 1h`,
	setup: func(fs *flag.FlagSet) runFunc {
		var t grantTarget
		t.register(fs)
		var domains, cidrs listFlag
		var tcp tcpFlag
		fs.Var(&domains, "domain", "a `domain` to allow on the layer's web ports (repeatable)")
		fs.Var(&tcp, "tcp", "a `NAME:PORT` to allow (repeatable)")
		fs.Var(&cidrs, "cidr", "a `CIDR` to allow on every port (repeatable)")
		ttl := fs.String("ttl", "", "how long the grant lasts: a `DURATION` such as 10m (1s to 24h)")
		note := fs.String("note", "", "why, for whoever reads the grants later")
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			scope, id, err := t.scope()
			if err != nil {
				return err
			}
			if *ttl == "" {
				return usagef("give --ttl: how long the grant lasts (1s to 24h)")
			}
			secs, err := parseTTL(*ttl)
			if err != nil {
				return err
			}
			if len(domains)+len(tcp)+len(cidrs) == 0 {
				return usagef("give at least one --domain, --tcp or --cidr")
			}
			g, err := c.CreateGrant(ctx, scope, id, client.GrantRequest{Domains: domains, TCP: tcp, CIDRs: cidrs, TTLSeconds: secs, Note: *note})
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, g)
			}
			if err := printFields(a.stdout, grantFields(g)...); err != nil {
				return err
			}
			for _, w := range g.Warnings {
				fmt.Fprintf(a.stderr, "warning: %s\n", w)
			}
			return nil
		}
	},
}

var grantListCmd = &command{
	name:     "grant list",
	synopsis: "(--session SESSION | --vm VM)",
	summary:  "list the active grants of a session or VM",
	help:     `Lists the grants of a session or VM that have not expired, oldest first.`,
	setup: func(fs *flag.FlagSet) runFunc {
		var t grantTarget
		t.register(fs)
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			scope, id, err := t.scope()
			if err != nil {
				return err
			}
			list, err := c.ListGrants(ctx, scope, id)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, client.GrantList{Grants: nonNil(list)})
			}
			rows := make([][]string, len(list))
			for i, g := range list {
				rows[i] = []string{g.ID, grantEntries(&g), formatTime(g.ExpiresAt), g.Note}
			}
			return printTable(a.stdout, []string{"ID", "ENTRIES", "EXPIRES", "NOTE"}, rows)
		}
	},
}

var grantRevokeCmd = &command{
	name:     "grant revoke",
	synopsis: "(--session SESSION | --vm VM) GRANT_ID",
	summary:  "end a grant now",
	help:     `Ends a grant before its expiry; what only it allowed is cut, as at expiry.`,
	setup: func(fs *flag.FlagSet) runFunc {
		var t grantTarget
		t.register(fs)
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args, "GRANT_ID"); err != nil {
				return err
			}
			scope, id, err := t.scope()
			if err != nil {
				return err
			}
			if err := c.RevokeGrant(ctx, scope, id, args[0]); err != nil {
				return err
			}
			return a.done("revoked grant %s of %s %s", args[0], scope, id)
		}
	},
}

// grantEntries is a grant's entries on one line, each under its policy field's name.
func grantEntries(g *client.Grant) string {
	var parts []string
	for _, d := range g.Domains {
		parts = append(parts, "domain "+d)
	}
	for _, e := range g.TCP {
		parts = append(parts, "tcp "+e)
	}
	for _, c := range g.CIDRs {
		parts = append(parts, "cidr "+c)
	}
	return strings.Join(parts, ", ")
}

func grantFields(g *client.Grant) []field {
	return []field{
		one("id", g.ID),
		one("scope", g.Scope+" "+g.ScopeID),
		{"domains", g.Domains},
		{"tcp", g.TCP},
		{"cidrs", g.CIDRs},
		one("note", g.Note),
		one("created", formatTime(g.CreatedAt)),
		one("expires", formatTime(g.ExpiresAt)),
	}
}
