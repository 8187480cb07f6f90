package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/policy"
)

// target is the --session or --vm whose policy a command reads or writes: exactly one.
type target struct{ session, vm string }

func (t *target) register(fs *flag.FlagSet, verb string) {
	fs.StringVar(&t.session, "session", "", verb+" the policy of this `SESSION`")
	fs.StringVar(&t.vm, "vm", "", verb+" the policy of this `VM` (it holds for all its sessions)")
}

func (t *target) validate() error {
	if (t.session == "") == (t.vm == "") {
		return usagef("give exactly one of --session and --vm")
	}
	return nil
}

// describe names the target in a message: "session ses_1".
func (t *target) describe() string {
	if t.session != "" {
		return "session " + t.session
	}
	return "VM " + t.vm
}

// listFlag is a flag that can be repeated, each value one entry or several separated by
// commas (which no domain or CIDR contains).
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			// Refuse rather than skip: --domain "$UNSET" must not quietly leave the list
			// empty, which would allow every public host.
			return errors.New("empty entry")
		}
		*l = append(*l, part)
	}
	return nil
}

// tcpFlag is the repeatable --tcp: allowed_tcp entries, "name:port", one per value or
// several separated by commas. A value with a part that has no port ("github.com:22,443")
// is kept whole, so that egressd names the mistake (one port per entry) instead of
// refusing a bare "443" as a name without a port.
type tcpFlag []string

func (l *tcpFlag) String() string { return strings.Join(*l, ",") }

func (l *tcpFlag) Set(v string) error {
	var parts []string
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return errors.New("empty entry")
		}
		if !strings.Contains(part, ":") {
			*l = append(*l, strings.TrimSpace(v))
			return nil
		}
		parts = append(parts, part)
	}
	*l = append(*l, parts...)
	return nil
}

// ruleFlag is a repeatable --http-rule: one http_rules entry per value, written
// "DOMAIN [METHOD,...|*] [PATH...]" (see parseHTTPRule).
type ruleFlag []policy.HTTPRule

func (r *ruleFlag) String() string { return "" }

func (r *ruleFlag) Set(v string) error {
	rule, err := parseHTTPRule(v)
	if err != nil {
		return err
	}
	*r = append(*r, rule)
	return nil
}

// parseHTTPRule reads one http_rules entry from the command line: the domain, then the
// methods as one comma-separated word ("*" or nothing: any method), then the paths, each a
// word starting with "/" (nothing: any path). Methods have no commas and paths no spaces, so
// "api.example.com GET,POST /v1/ /v2/" is unambiguous; formatHTTPRule writes the same form.
// Values are checked by egressd, which names the field of a mistake.
func parseHTTPRule(v string) (policy.HTTPRule, error) {
	words := strings.Fields(v)
	if len(words) == 0 {
		return policy.HTTPRule{}, errors.New(`empty rule; write "DOMAIN [METHOD,...] [PATH...]", e.g. "api.example.com GET,POST /v1/"`)
	}
	r := policy.HTTPRule{Domain: words[0]}
	rest := words[1:]
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "/") {
		if rest[0] != "*" {
			for _, m := range strings.Split(rest[0], ",") {
				if m == "" {
					return policy.HTTPRule{}, fmt.Errorf("%q: an empty method in %q", v, rest[0])
				}
				r.Methods = append(r.Methods, m)
			}
		}
		rest = rest[1:]
	}
	for _, p := range rest {
		if !strings.HasPrefix(p, "/") {
			return policy.HTTPRule{}, fmt.Errorf(`%q: %q is not a path (paths start with "/" and come after the methods)`, v, p)
		}
		r.Paths = append(r.Paths, p)
	}
	return r, nil
}

// formatHTTPRule writes an entry in the form parseHTTPRule reads.
func formatHTTPRule(r policy.HTTPRule) string {
	out := r.Domain
	switch {
	case len(r.Methods) > 0:
		out += " " + strings.Join(r.Methods, ",")
	case len(r.Paths) > 0:
		out += " *"
	}
	for _, p := range r.Paths {
		out += " " + p
	}
	return out
}

var egressSetCmd = &command{
	name:     "egress set",
	synopsis: "(--session SESSION | --vm VM) [--http] [--https] [--package-managers] [--domain D]... [--cidr C]... [--deny-domain D]... [--tcp NAME:PORT]... [--http-rule RULE]... [--monitor] [-f policy.json]",
	summary:  "set (replace) the policy of a session or a VM",
	help: `
Sets the egress policy of a session or a VM, replacing the one it had: what is not given is
off or empty. With no rule flags at all the policy denies everything.

  --https alone allows HTTPS to any public host; add --domain to allow only those hosts.
  --package-managers allows the registries of pip, npm, apt, Go and others (see
  "egressctl egress package-managers") on ports 80 and 443, whatever --http and --https say.
  --cidr allows a range on every port and protocol, e.g. an internal network.
  --deny-domain denies a name whatever else allows it.
  --tcp NAME:PORT allows TCP to that name on that port (ssh, git, databases), whatever
  --http and --https say: "github.com:22", "*.db.example.com:5432" (repeatable). The
  address dialled must be public or inside a --cidr range; --deny-domain still wins.
  --http-rule "DOMAIN [METHOD,...] [PATH...]" allows only those requests to DOMAIN
  (repeatable; "*" or no methods: any method, no paths: any path; a path is a prefix,
  matched on "/" boundaries). Such a domain is intercepted: each request is decided.
  Domains are exact names or "*.example.com" for every name under example.com.

A session's traffic must pass both its session policy and its VM policy. -f reads the
policy as JSON (the API's fields; "-" for standard input); the flags add to it. What
"egress get -o json" prints is taken as it is (its scope, id, revision, updated_at and
warnings are dropped), so a policy can be copied:

  egressctl -o json egress get --vm V | egressctl egress set --vm W -f -

Examples:
  egressctl egress set --session S --https --domain api.openai.com --package-managers
  egressctl egress set --vm V --cidr 10.0.0.0/8
  egressctl egress set --session S --tcp github.com:22 --tcp '*.db.example.com:5432'
  egressctl egress set --session S --https --http-rule 'api.example.com GET,POST /v1/'
  egressctl egress set --session S            # deny everything`,
	setup: func(fs *flag.FlagSet) runFunc {
		var t target
		t.register(fs, "set")
		var domains, cidrs, denied listFlag
		var file string
		allowHTTP := fs.Bool("http", false, "allow HTTP (TCP port 80)")
		allowHTTPS := fs.Bool("https", false, "allow HTTPS (TCP port 443)")
		pm := fs.Bool("package-managers", false, "allow the package managers' registries, on ports 80 and 443")
		fs.Var(&domains, "domain", "allow HTTP/HTTPS only to this `domain` (repeatable)")
		fs.Var(&cidrs, "cidr", "allow every port and protocol to this `CIDR` (repeatable)")
		fs.Var(&denied, "deny-domain", "never allow this `domain` (repeatable)")
		var tcp tcpFlag
		fs.Var(&tcp, "tcp", "allow TCP to this `name:port`, e.g. github.com:22 (repeatable)")
		var rules ruleFlag
		fs.Var(&rules, "http-rule", "allow only these requests to a domain: `\"DOMAIN [METHOD,...] [PATH...]\"` (repeatable)")
		monitor := fs.Bool("monitor", false, "record would-be denials but let traffic through")
		fs.StringVar(&file, "f", "", "read the policy from this JSON `file` (- for standard input)")
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if err := t.validate(); err != nil {
				return err
			}
			var p policy.Policy
			if file != "" {
				var err error
				if p, err = readPolicyFile(file, a.stdin); err != nil {
					return err
				}
			}
			p.AllowHTTP = p.AllowHTTP || *allowHTTP
			p.AllowHTTPS = p.AllowHTTPS || *allowHTTPS
			p.AllowPackageManagers = p.AllowPackageManagers || *pm
			p.AllowedDomains = append(p.AllowedDomains, domains...)
			p.AllowedCIDRs = append(p.AllowedCIDRs, cidrs...)
			p.DeniedDomains = append(p.DeniedDomains, denied...)
			p.AllowedTCP = append(p.AllowedTCP, tcp...)
			p.HTTPRules = append(p.HTTPRules, rules...)
			if *monitor {
				p.Mode = policy.Monitor
			}

			var stored *client.Policy
			var err error
			if t.session != "" {
				stored, err = c.SetSessionPolicy(ctx, t.session, p)
			} else {
				stored, err = c.SetVMPolicy(ctx, t.vm, p)
			}
			if err != nil {
				return err
			}
			return a.printPolicy(stored)
		}
	},
}

// readPolicyFile reads a policy from JSON as strictly as egressd does (client.ParsePolicy): an
// unknown field (a typo such as "allowed_domain") is an error here, not an entry silently
// dropped before the server could refuse it. The read-only fields that "egress get -o json"
// prints are dropped, so that its output can be set again.
func readPolicyFile(name string, stdin io.Reader) (policy.Policy, error) {
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return policy.Policy{}, err
	}
	p, err := client.ParsePolicy(data)
	if err != nil {
		return policy.Policy{}, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

var egressGetCmd = &command{
	name:     "egress get",
	synopsis: "(--session SESSION | --vm VM)",
	summary:  "show the policy set on a session or a VM",
	help: `
Shows the policy set on a session or a VM, as egressd stored it (normalised). It fails when
none is set; "egressctl egress effective" shows what applies to a session in any case.`,
	setup: func(fs *flag.FlagSet) runFunc {
		var t target
		t.register(fs, "show")
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if err := t.validate(); err != nil {
				return err
			}
			var p *client.Policy
			var err error
			if t.session != "" {
				p, err = c.GetSessionPolicy(ctx, t.session)
			} else {
				p, err = c.GetVMPolicy(ctx, t.vm)
			}
			if err != nil {
				return err
			}
			return a.printPolicy(p)
		}
	},
}

var egressClearCmd = &command{
	name:     "egress clear",
	synopsis: "(--session SESSION | --vm VM)",
	summary:  "delete the policy of a session or a VM",
	help: `
Deletes the policy set on a session or a VM. The session then runs under the other layer
alone, or under the operator's default policy (deny-all out of the box) when neither is set.`,
	setup: func(fs *flag.FlagSet) runFunc {
		var t target
		t.register(fs, "clear")
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if err := t.validate(); err != nil {
				return err
			}
			var err error
			if t.session != "" {
				err = c.DeleteSessionPolicy(ctx, t.session)
			} else {
				err = c.DeleteVMPolicy(ctx, t.vm)
			}
			if err != nil {
				return err
			}
			return a.done("cleared the policy of %s", t.describe())
		}
	},
}

var egressEffectiveCmd = &command{
	name:     "egress effective",
	synopsis: "--session SESSION",
	summary:  "show the policy that applies to a session's traffic",
	help: `
Shows the policy that applies to a session's traffic: its session policy AND its VM's, or
the operator's default when neither is set, and which layer each part comes from.`,
	setup: func(fs *flag.FlagSet) runFunc {
		session := fs.String("session", "", "the `SESSION` (required)")
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if *session == "" {
				return usagef("--session is required")
			}
			e, err := c.Effective(ctx, *session)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, e)
			}
			return printFields(a.stdout, effectiveFields(e)...)
		}
	},
}

var egressPackageManagersCmd = &command{
	name:    "egress package-managers",
	summary: "list the registry hosts that --package-managers allows",
	help: `
Lists the package managers' registry hosts that a policy with allow_package_managers
opens, as this egressd has them: the built-in list and the operator's additions.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			pm, err := c.PackageManagers(ctx)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, pm)
			}
			names := make([]string, 0, len(pm.Managers))
			for name := range pm.Managers {
				names = append(names, name)
			}
			sort.Strings(names)
			var rows [][]string
			for _, name := range names {
				for i, host := range pm.Managers[name] {
					if i == 0 {
						rows = append(rows, []string{name, host})
					} else {
						rows = append(rows, []string{" ", host})
					}
				}
			}
			return printTable(a.stdout, []string{"MANAGER", "HOSTS"}, rows)
		}
	},
}

func (a *app) printPolicy(p *client.Policy) error {
	if a.json() {
		return printJSON(a.stdout, p)
	}
	return printFields(a.stdout, policyFields(p)...)
}
