package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/policy"
)

var suggestCmd = &command{
	name:     "suggest",
	synopsis: "(--session SESSION | --vm VM) [--since 5m|TIME|SEQ] [--apply [--yes]]",
	summary:  "suggest the policy change that would have allowed the recorded denials",
	help: `
Reads the denials and would-be denials that the policy of a session or a VM caused (the
events buffer, since --since) and shows the smallest change to that policy that would have
allowed them: the flags to turn on, the names to add to allowed_domains (three or more names
under one registrable domain become "*.domain"), the name:port entries to add to
allowed_tcp, and how many decisions each covers. Denials no entry can lift (hard denials,
denied_domains, IP literals, private addresses) are listed with what would; denials of the
other layer are counted, for its own suggestion.

--apply prints the change as a diff and sets the merged policy, after asking on a terminal
("y" to go on) unless --yes is given; without a terminal --yes is required. It refuses when
the policy changed since the suggestion was read.

To learn a sandbox's allowlist: set its policy with --monitor, let it run, then
  egressctl suggest --session S --apply
and set the mode to enforce once the suggestion is empty (see docs/policy.md).

Examples:
  egressctl suggest --session S
  egressctl suggest --vm V --since 1h
  egressctl suggest --session S --apply --yes`,
	setup: func(fs *flag.FlagSet) runFunc {
		var t target
		t.register(fs, "suggest a change to")
		since := fs.String("since", "", "read the decisions from `POINT`: a duration back from now (5m, 2h), an RFC 3339 time, or a seq")
		apply := fs.Bool("apply", false, "set the merged policy (asks first on a terminal)")
		yes := fs.Bool("yes", false, "with --apply: do not ask")
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if err := t.validate(); err != nil {
				return err
			}
			if *yes && !*apply {
				return usagef("--yes goes with --apply")
			}
			var opts client.SuggestionOptions
			if *since != "" {
				var err error
				if opts.Since, opts.SinceSeq, err = parseSince(*since, time.Now()); err != nil {
					return err
				}
			}
			var s *client.Suggestion
			var err error
			if t.session != "" {
				s, err = c.SessionSuggestion(ctx, t.session, opts)
			} else {
				s, err = c.VMSuggestion(ctx, t.vm, opts)
			}
			if err != nil {
				return err
			}
			if !*apply {
				if a.json() {
					return printJSON(a.stdout, s)
				}
				return printSuggestion(a.stdout, s, &t)
			}
			return applySuggestion(ctx, a, c, s, &t, *yes)
		}
	},
}

// applySuggestion shows the change and sets the merged policy once confirmed.
func applySuggestion(ctx context.Context, a *app, c *client.Client, s *client.Suggestion, t *target, yes bool) error {
	if !a.json() {
		if err := printSuggestion(a.stdout, s, t); err != nil {
			return err
		}
	}
	if !s.Changed || s.Policy == nil {
		if !a.json() {
			fmt.Fprintf(a.stdout, "\nNothing to apply: the %s policy stays as it is.\n", scopeName(s))
			return nil
		}
		return printJSON(a.stdout, s)
	}
	var current *policy.Policy
	get := c.GetVMPolicy
	if t.session != "" {
		get = c.GetSessionPolicy
	}
	cur, err := get(ctx, s.ID)
	switch {
	case err == nil:
		current = &cur.Policy
		if !s.PolicySet || cur.Revision != s.Revision {
			return fmt.Errorf("the %s policy changed since the suggestion was read (revision %d, now %d): run egressctl suggest again", scopeName(s), s.Revision, cur.Revision)
		}
	case client.IsPolicyNotSet(err):
		if s.PolicySet {
			return fmt.Errorf("the %s policy was cleared since the suggestion was read: run egressctl suggest again", scopeName(s))
		}
	default:
		return err
	}
	if !a.json() {
		fmt.Fprintf(a.stdout, "\nChange to the %s policy:\n", scopeName(s))
		writeDiff(a.stdout, current, *s.Policy)
	}
	if !yes {
		if !isTerminal(a.stdin) {
			return usagef("--apply asks before it sets a policy, and standard input is not a terminal: add --yes")
		}
		fmt.Fprintf(a.stderr, "Set this policy on %s? [y/N] ", t.describe())
		line, _ := bufio.NewReader(io.LimitReader(a.stdin, 256)).ReadString('\n')
		if answer := strings.ToLower(strings.TrimSpace(line)); answer != "y" && answer != "yes" {
			fmt.Fprintln(a.stderr, "Not applied.")
			return &exitCodeError{code: exitError}
		}
	}
	var stored *client.Policy
	if t.session != "" {
		stored, err = c.SetSessionPolicy(ctx, s.ID, *s.Policy)
	} else {
		stored, err = c.SetVMPolicy(ctx, s.ID, *s.Policy)
	}
	if err != nil {
		return err
	}
	if a.json() {
		return printJSON(a.stdout, stored)
	}
	fmt.Fprintf(a.stdout, "Applied: the %s policy is now revision %d.\n", scopeName(s), stored.Revision)
	return nil
}

func scopeName(s *client.Suggestion) string {
	if s.Scope == client.ScopeVM {
		return "VM " + s.ID
	}
	return "session " + s.ID
}

// printSuggestion writes the suggestion for people.
func printSuggestion(w io.Writer, s *client.Suggestion, t *target) error {
	base := fmt.Sprintf("policy revision %d", s.Revision)
	if !s.PolicySet {
		base = "no policy set"
	}
	fmt.Fprintf(w, "Suggestion for %s (%s; %d denials read", scopeName(s), base, s.Decisions)
	if s.Truncated {
		fmt.Fprint(w, ", more were recorded")
	}
	fmt.Fprintln(w, ")")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if !s.Changed {
		fmt.Fprintln(tw, "\nNo change to suggest.")
	} else {
		fmt.Fprintln(tw, "\nAdd:\tENTRY\tCOVERS")
		for _, e := range s.Flags {
			fmt.Fprintf(tw, "  %s\ttrue\t%d\n", e.Entry, e.Covers)
		}
		for _, group := range []struct {
			field string
			list  []client.SuggestedEntry
		}{{"allowed_domains", s.AllowedDomains}, {"allowed_tcp", s.AllowedTCP}} {
			for _, e := range group.list {
				entry := e.Entry
				if len(e.Names) > 0 {
					entry += " (" + strings.Join(e.Names, ", ") + ")"
				}
				fmt.Fprintf(tw, "  %s\t%s\t%d\n", group.field, entry, e.Covers)
			}
		}
	}
	if len(s.NotAllowable) > 0 {
		fmt.Fprintln(tw, "\nNot allowable:\tDESTINATION\tCOVERS\tWHY")
		for _, n := range s.NotAllowable {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\n", n.Reason, destination(n), n.Covers, n.Explanation)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, o := range s.OtherLayers {
		hint := ""
		switch {
		case o.Layer == client.ScopeVM && s.VMID != "":
			hint = ": see egressctl suggest --vm " + s.VMID
		case o.Layer == client.ScopeSession && t.vm != "":
			hint = ": see egressctl suggest --session for each session of the VM"
		case o.Layer == client.ScopeSession:
			hint = " (another session on the VM)"
		}
		fmt.Fprintf(w, "\n%d denials were the %s layer's%s", o.Covers, o.Layer, hint)
	}
	if len(s.OtherLayers) > 0 {
		fmt.Fprintln(w)
	}
	if s.AlreadyAllowed > 0 {
		fmt.Fprintf(w, "\n%d denials are allowed by the policy as it is now.\n", s.AlreadyAllowed)
	}
	if len(s.Notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, n := range s.Notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
	return nil
}

func destination(n client.NotAllowable) string {
	host := n.Host
	if host == "" {
		host = n.IP
	}
	if host == "" {
		host = "(no host)"
	}
	if n.Kind == "dns" {
		return "DNS " + host
	}
	if n.Port > 0 {
		host += ":" + strconv.Itoa(n.Port)
	}
	if n.Transport != "" && n.Transport != "tcp" {
		host += "/" + n.Transport
	}
	return host
}

// writeDiff writes the change from cur (nil: none set) to next, field by field: "+" for what
// is added, "-" for what goes, "~" for a value that changes.
func writeDiff(w io.Writer, cur *policy.Policy, next policy.Policy) {
	if cur == nil {
		fmt.Fprintln(w, "  (no policy is set: this one is set whole)")
		empty := policy.DenyAll()
		cur = &empty
		cur.Mode = ""
	}
	flag := func(name string, a, b bool) {
		if a != b {
			fmt.Fprintf(w, "  ~ %s: %v -> %v\n", name, a, b)
		}
	}
	flag("allow_http", cur.AllowHTTP, next.AllowHTTP)
	flag("allow_https", cur.AllowHTTPS, next.AllowHTTPS)
	flag("allow_package_managers", cur.AllowPackageManagers, next.AllowPackageManagers)
	if cur.Mode != next.Mode {
		fmt.Fprintf(w, "  ~ mode: %s -> %s\n", orDash(string(cur.Mode)), next.Mode)
	}
	list := func(name string, a, b []string) {
		for _, x := range b {
			if !slices.Contains(a, x) {
				fmt.Fprintf(w, "  + %s %s\n", name, x)
			}
		}
		for _, x := range a {
			if !slices.Contains(b, x) {
				fmt.Fprintf(w, "  - %s %s\n", name, x)
			}
		}
	}
	list("allowed_domains", cur.AllowedDomains, next.AllowedDomains)
	list("allowed_tcp", cur.AllowedTCP, next.AllowedTCP)
	list("allowed_cidrs", cur.AllowedCIDRs, next.AllowedCIDRs)
	list("denied_domains", cur.DeniedDomains, next.DeniedDomains)
}
