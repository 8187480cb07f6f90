package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/egressd/egressd/client"
)

// command is one leaf of the command tree, such as "egress set".
type command struct {
	name     string // the words that select it: "egress set"
	synopsis string // its arguments, for the usage line
	summary  string // one line, for the command lists
	help     string // what --help says after the usage line
	// aliases are other words that select it on their own: "nodes" for "node list".
	aliases []string
	// setup registers the command's own flags on fs and returns the function that runs it
	// with the positional arguments, once fs has parsed them.
	setup func(fs *flag.FlagSet) runFunc
}

// usage is the command's usage line: "egressctl vm get VM".
func (c *command) usage() string {
	return strings.TrimSpace("egressctl " + c.name + " " + c.synopsis)
}

// runFunc runs a command with its positional arguments and a client for the global settings.
type runFunc func(ctx context.Context, a *app, c *client.Client, args []string) error

// groups name the first word of multi-word commands, in the order help lists them.
var groups = []struct{ name, summary string }{
	{"vm", "VMs: the sandboxes"},
	{"session", "sessions: uses of a VM, each with its proxy URL"},
	{"egress", "egress policies, effective policy and decision checks"},
	{"key", "API keys (admin key needed)"},
	{"node", "the fleet's egressd nodes (admin key needed)"},
	{"secret", "secrets: values the gateway puts on requests in place of placeholders"},
	{"grant", "grants: allowances that end by themselves"},
}

// commands is the command tree, in the order help lists it.
var commands = []*command{
	vmCreateCmd, vmListCmd, vmGetCmd, vmDeleteCmd,
	sessionCreateCmd, sessionListCmd, sessionGetCmd, sessionDeleteCmd,
	egressSetCmd, egressGetCmd, egressClearCmd, egressEffectiveCmd, egressCheckCmd, egressPackageManagersCmd,
	eventsCmd, suggestCmd,
	keyCreateCmd, keyListCmd, keyDeleteCmd,
	nodeListCmd,
	secretCreateCmd, secretListCmd, secretGetCmd, secretRotateCmd, secretDomainsCmd, secretDeleteCmd, caCmd,
	grantAddCmd, grantListCmd, grantRevokeCmd,
	statusCmd, versionCmd, healthCmd, execCmd, socksConnectCmd,
}

// findCommand returns the command that args name, and the arguments after its name.
func findCommand(args []string) (*command, []string) {
	if len(args) >= 2 {
		for _, c := range commands {
			if c.name == args[0]+" "+args[1] {
				return c, args[2:]
			}
		}
	}
	for _, c := range commands {
		if c.name == args[0] || slices.Contains(c.aliases, args[0]) {
			return c, args[1:]
		}
	}
	return nil, nil
}

func findGroup(name string) string {
	for _, g := range groups {
		if g.name == name {
			return g.name
		}
	}
	return ""
}

const mainHelp = `egressctl controls egressd, the egress firewall for code sandboxes, over its HTTP API.

Usage:
  egressctl [global flags] <command> [flags] [arguments]

Commands:
%s
Global flags, accepted before or after the command:
  --url URL         egressd's API (env EGRESSD_URL; default ` + defaultURL + `)
  --api-key KEY     API key (env EGRESSD_API_KEY; a fresh egressd writes an admin
                    key to <data-dir>/admin.key)
  -o, --output F    text (the default, for people) or json (the API's JSON, for scripts)
  --timeout D       give up on the API after D (default 30s; 0: never)

Exit status:
  0  success; for "egress check", the decision is allow
  1  the API answered an error, egressd could not be reached, or the command line is wrong
  N  "exec" only: the exit status of the command it ran
  3  "egress check" only: the decision is deny

Run 'egressctl <command> --help' for a command's flags, e.g. 'egressctl egress set --help'.
`

func writeMainHelp(w io.Writer) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, mainHelp, b.String())
}

func writeGroupHelp(w io.Writer, group string) {
	for _, g := range groups {
		if g.name == group {
			fmt.Fprintf(w, "egressctl %s: %s\n\nCommands:\n", g.name, g.summary)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands {
		if strings.HasPrefix(c.name, group+" ") {
			fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nRun 'egressctl %s <command> --help' for a command's flags.\n", group)
}

func writeCommandHelp(w io.Writer, c *command, own *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s\n", c.usage())
	for _, a := range c.aliases {
		fmt.Fprintf(w, "       egressctl %s\n", strings.TrimSpace(a+" "+c.synopsis))
	}
	fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.help))
	hasFlags := false
	own.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprintf(w, "\nFlags:\n")
		writeFlags(w, own)
	}
	fmt.Fprintf(w, "\nGlobal flags: --url, --api-key, -o json, --timeout (see 'egressctl --help').\n")
}

// writeFlags lists flags as flag.PrintDefaults does, but spelled as this help writes them:
// "--domain" (package flag accepts one dash or two; two is what people type for long names).
func writeFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		arg, usage := flag.UnquoteUsage(f)
		if arg != "" {
			arg = " " + arg
		}
		fmt.Fprintf(w, "  %s%s%s\n      %s\n", dash, f.Name, arg, usage)
	})
}
