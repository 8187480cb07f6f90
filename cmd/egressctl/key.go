package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"

	"github.com/egressd/egressd/client"
)

var keyCreateCmd = &command{
	name:     "key create",
	synopsis: "--tenant TENANT [--admin]",
	summary:  "create an API key for a tenant",
	help: `
Creates an API key for a tenant and prints it. egressd keeps only a hash of the key: this
is the only time it is shown. An admin key can also manage the keys of every tenant; give
one only to operators. Needs an admin key.`,
	setup: func(fs *flag.FlagSet) runFunc {
		tenant := fs.String("tenant", "", "the `tenant` that owns the key and what it creates (required)")
		admin := fs.Bool("admin", false, "make an admin key")
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if *tenant == "" {
				return usagef("--tenant is required")
			}
			k, err := c.CreateAPIKey(ctx, client.CreateAPIKeyRequest{Tenant: *tenant, Admin: *admin})
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, k)
			}
			err = printFields(a.stdout,
				one("id", k.ID),
				one("tenant", k.Tenant),
				one("admin", strconv.FormatBool(k.Admin)),
				one("key", k.Key),
			)
			fmt.Fprintln(a.stderr, "Store the key now: it is not shown again.")
			return err
		}
	},
}

var keyListCmd = &command{
	name:    "key list",
	summary: "list API keys",
	help:    `Lists every API key, without the secrets. Needs an admin key.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			keys, err := c.ListAPIKeys(ctx)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, client.APIKeyList{Keys: nonNil(keys)})
			}
			rows := make([][]string, len(keys))
			for i, k := range keys {
				rows[i] = []string{k.ID, k.Tenant, strconv.FormatBool(k.Admin), formatTime(k.CreatedAt)}
			}
			return printTable(a.stdout, []string{"ID", "TENANT", "ADMIN", "CREATED"}, rows)
		}
	},
}

var keyDeleteCmd = &command{
	name:     "key delete",
	synopsis: "ID",
	summary:  "revoke an API key",
	help: `
Revokes an API key, named by its ID (as "key list" shows it), not by the secret. Requests
made with it fail from then on. Needs an admin key.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args, "ID"); err != nil {
				return err
			}
			if err := c.DeleteAPIKey(ctx, args[0]); err != nil {
				return err
			}
			return a.done("revoked API key %s", args[0])
		}
	},
}
