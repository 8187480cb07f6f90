package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/egressd/egressd/client"
)

var healthCmd = &command{
	name:    "health",
	summary: "check that egressd is up and ready",
	help: `
Asks egressd whether it is alive (/healthz) and ready to serve, its store included
(/readyz). Prints "ok" and exits 0 when both are; otherwise says what is wrong and exits 1.
Needs no API key.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if err := c.Health(ctx); err != nil {
				return err
			}
			if err := c.Ready(ctx); err != nil {
				return fmt.Errorf("alive but not ready: %w", err)
			}
			if a.json() {
				return printJSON(a.stdout, map[string]string{"status": "ok"})
			}
			_, err := fmt.Fprintln(a.stdout, "ok")
			return err
		}
	},
}

var execCmd = &command{
	name:     "exec",
	synopsis: "VM -- COMMAND [ARG...]",
	summary:  "run a command inside a VM's network namespace (not yet available)",
	help: `
Runs a command inside the network namespace of a VM created with --netns, so that its
traffic goes through the transparent gateway.

Not available yet: it needs the transparent gateway, which this egressd does not have. It
exits with status 2.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			return &exitCodeError{
				code: exitUnavailable,
				msg:  "not available until the transparent gateway exists; until then, give the sandbox a session's proxy URL (egressctl session create --vm VM)",
			}
		}
	},
}
