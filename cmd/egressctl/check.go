package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/egressd/egressd/client"
)

var egressCheckCmd = &command{
	name:     "egress check",
	synopsis: "--session SESSION (URL [--method M] | --host HOST --port PORT | --ip IP --port PORT [--transport tcp|udp] | --dns NAME [--qtype A]) [--resolve]",
	summary:  "ask what the gateway would decide for a connection or DNS query",
	help: `
Asks egressd what its gateway would decide for one connection or DNS query of a session,
under the session's effective policy, without making it. Prints the decision and why:

  allow (layer session, reason ..., rule ...)
  deny  (layer vm, reason ..., rule ...)

The layer is where the decision came from: session, vm, default (no policy set) or hard
(denied whatever any policy says, such as loopback or the cloud metadata address). A name
is judged as a name; with --resolve egressd also looks it up and judges each address, as
the gateway does before it dials. For a URL to a domain that http_rules name, the request
is judged too: its path and --method (GET by default). --host with any --port answers
for allowed_tcp too: "--host github.com --port 22".

Exit status: 0 when the decision is allow, 3 when it is deny, 1 when the check itself
failed. In monitor mode the decision is allow, and "would deny" says whether an enforcing
policy would have denied it. So a script can branch:

  if egressctl egress check --session "$S" https://pypi.org/simple/ >/dev/null; then ...`,
	setup: func(fs *flag.FlagSet) runFunc {
		session := fs.String("session", "", "the `SESSION` whose policy judges (required)")
		var req client.CheckRequest
		fs.StringVar(&req.Method, "method", "", "the request's `method`, with a URL (default GET)")
		fs.StringVar(&req.Host, "host", "", "a `host` name to connect to, with --port")
		fs.StringVar(&req.IP, "ip", "", "an `IP` address to connect to, with --port")
		fs.IntVar(&req.Port, "port", 0, "the destination `port`, with --host or --ip")
		fs.StringVar(&req.Transport, "transport", "", "the `transport`, tcp or udp, with --ip (default tcp)")
		fs.StringVar(&req.DNSQuery, "dns", "", "a DNS query for this `name`")
		fs.StringVar(&req.QType, "qtype", "", "the query `type`, with --dns: A, AAAA, HTTPS... (default A)")
		fs.BoolVar(&req.Resolve, "resolve", false, "look the name up and judge its addresses too")
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if *session == "" {
				return usagef("--session is required")
			}
			if len(args) > 1 {
				return usagef("unexpected argument %q", args[1])
			}
			if len(args) == 1 {
				req.URL = args[0]
			}
			if err := validateCheck(&req); err != nil {
				return err
			}
			res, err := c.Check(ctx, *session, req)
			if err != nil {
				return err
			}
			if a.json() {
				err = printJSON(a.stdout, res)
			} else {
				err = printCheck(a, res)
			}
			if err != nil {
				return err
			}
			if res.Decision != "allow" {
				return &exitCodeError{code: exitDenied}
			}
			return nil
		}
	},
}

// validateCheck makes sure exactly one form of the request is given, so that a script's
// mistake is a usage error rather than a decision about something it did not mean.
func validateCheck(req *client.CheckRequest) error {
	forms := 0
	for _, set := range []bool{req.URL != "", req.Host != "", req.IP != "", req.DNSQuery != ""} {
		if set {
			forms++
		}
	}
	switch {
	case forms == 0:
		return usagef("give a URL, --host, --ip or --dns")
	case forms > 1:
		return usagef("give only one of a URL, --host, --ip and --dns")
	case (req.Host != "" || req.IP != "") && req.Port == 0:
		return usagef("--host and --ip need --port")
	case req.Port != 0 && req.Host == "" && req.IP == "":
		return usagef("--port goes with --host or --ip; a URL carries its own port")
	case req.Transport != "" && req.IP == "":
		return usagef("--transport goes with --ip")
	case req.QType != "" && req.DNSQuery == "":
		return usagef("--qtype goes with --dns")
	case req.Method != "" && req.URL == "":
		return usagef("--method goes with a URL")
	}
	if req.DNSQuery != "" && req.QType == "" {
		req.QType = "A"
	}
	return nil
}

func printCheck(a *app, res *client.CheckResult) error {
	if _, err := fmt.Fprintln(a.stdout, formatDecision(res.Decision, res.Layer, res.Reason, res.Rule, res.WouldDeny)); err != nil {
		return err
	}
	if len(res.Addresses) == 0 {
		return nil
	}
	fmt.Fprintln(a.stdout, "addresses:")
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	for _, ad := range res.Addresses {
		fmt.Fprintf(tw, "  %s\t%s\n", ad.IP, formatDecision(ad.Decision, ad.Layer, ad.Reason, ad.Rule, ad.WouldDeny))
	}
	return tw.Flush()
}

// formatDecision is one decision on one line: "deny  (layer vm, reason ..., rule ...)",
// the decision padded so that allow and deny lines align.
func formatDecision(decision, layer, reason, rule string, wouldDeny bool) string {
	var why []string
	if layer != "" {
		why = append(why, "layer "+layer)
	}
	if reason != "" {
		why = append(why, "reason "+reason)
	}
	if rule != "" {
		why = append(why, "rule "+rule)
	}
	if wouldDeny {
		why = append(why, "would deny")
	}
	if len(why) == 0 {
		return decision
	}
	return fmt.Sprintf("%-5s (%s)", decision, strings.Join(why, ", "))
}
