package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/egressd/egressd/client"
)

var sessionCreateCmd = &command{
	name:     "session create",
	synopsis: "--vm VM",
	summary:  "start a session on a VM",
	help: `
Starts a session on a VM and prints its proxy URL. The sandbox uses that URL as its
HTTP_PROXY and HTTPS_PROXY; it carries the session's credentials and is shown only now.`,
	setup: func(fs *flag.FlagSet) runFunc {
		vm := fs.String("vm", "", "the `VM` the session uses (required)")
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if *vm == "" {
				return usagef("--vm is required")
			}
			s, err := c.CreateSession(ctx, client.CreateSessionRequest{VMID: *vm})
			if err != nil {
				return err
			}
			if err := a.printSession(s); err != nil {
				return err
			}
			if !a.json() {
				fmt.Fprintln(a.stderr, "The proxy URL carries the session's credentials and is not shown again.")
			}
			return nil
		}
	},
}

var sessionListCmd = &command{
	name:     "session list",
	synopsis: "[--vm VM]",
	summary:  "list sessions",
	help:     `Lists the sessions of the key's tenant, or of one VM with --vm.`,
	setup: func(fs *flag.FlagSet) runFunc {
		vm := fs.String("vm", "", "only the sessions of this `VM`")
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			sessions, err := c.ListSessions(ctx, *vm)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, client.SessionList{Sessions: nonNil(sessions)})
			}
			rows := make([][]string, len(sessions))
			for i, s := range sessions {
				rows[i] = []string{s.SessionID, s.VMID, formatTime(s.CreatedAt)}
			}
			return printTable(a.stdout, []string{"SESSION", "VM", "CREATED"}, rows)
		}
	},
}

var sessionGetCmd = &command{
	name:     "session get",
	synopsis: "SESSION",
	summary:  "show a session",
	help:     `Shows a session. Its proxy URL is not shown: it was shown once, at creation.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args, "SESSION"); err != nil {
				return err
			}
			s, err := c.GetSession(ctx, args[0])
			if err != nil {
				return err
			}
			return a.printSession(s)
		}
	},
}

var sessionDeleteCmd = &command{
	name:     "session delete",
	synopsis: "SESSION",
	summary:  "end a session",
	help:     `Ends a session. Its policy is deleted with it and its proxy URL stops working.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args, "SESSION"); err != nil {
				return err
			}
			if err := c.DeleteSession(ctx, args[0]); err != nil {
				return err
			}
			return a.done("ended session %s", args[0])
		}
	},
}

func (a *app) printSession(s *client.Session) error {
	if a.json() {
		return printJSON(a.stdout, s)
	}
	fields := []field{one("session_id", s.SessionID), one("vm_id", s.VMID)}
	if s.ProxyURL != "" {
		fields = append(fields, one("proxy_url", s.ProxyURL))
	}
	if s.SOCKSURL != "" {
		fields = append(fields, one("socks_url", s.SOCKSURL))
	}
	fields = append(fields, one("created", formatTime(s.CreatedAt)))
	return printFields(a.stdout, fields...)
}
