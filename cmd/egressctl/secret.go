package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/egressd/egressd/client"
)

// maxValueInput bounds what is read as a secret's value: the API takes 16 KiB, and a line end.
const maxValueInput = 16<<10 + 2

const valueHelp = `
The value is read from standard input (a terminal is asked for it without echo), or from the
file --value-file names ("-" is standard input too), never from an argument: arguments stay
in shell history and show in ps. One line end at its end is dropped.`

var secretCreateCmd = &command{
	name:     "secret create",
	synopsis: "NAME --domain D [--domain D]... [--value-file F]",
	summary:  "store a secret and print its placeholder",
	help: `
Stores a secret of the key's tenant and prints its placeholder, egressd-secret-NAME-<random>:
put the placeholder where the sandbox would put the value (an API key in an environment
variable). In intercepted requests to the secret's domains the gateway replaces it by the
value; toward any other host, a request that carries it is refused. NAME is 1 to 63 letters,
digits, '_' or '-'. --domain takes names as allowed_domains does, wildcards included.
` + valueHelp + `

  printf %s "$OPENAI_API_KEY" | egressctl secret create openai --domain api.openai.com
  egressctl secret create github --domain api.github.com --domain '*.githubusercontent.com' --value-file token.txt`,
	setup: func(fs *flag.FlagSet) runFunc {
		var domains listFlag
		fs.Var(&domains, "domain", "a `domain` the value may go to (repeatable; at least one)")
		valueFile := fs.String("value-file", "", "read the value from this `file` (- for standard input)")
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args, "NAME"); err != nil {
				return err
			}
			if len(domains) == 0 {
				return usagef("give at least one --domain the value may go to")
			}
			value, err := a.readValue(args[0], *valueFile)
			if err != nil {
				return err
			}
			s, err := c.CreateSecret(ctx, client.CreateSecretRequest{Name: args[0], Value: value, Domains: domains})
			if err != nil {
				return err
			}
			return a.printSecret(s)
		}
	},
}

var secretListCmd = &command{
	name:    "secret list",
	summary: "list secrets (never their values)",
	help:    `Lists the tenant's secrets: names, domains, placeholders. Values are never shown.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			list, err := c.ListSecrets(ctx)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, client.SecretList{Secrets: nonNil(list)})
			}
			rows := make([][]string, len(list))
			for i, s := range list {
				rows[i] = []string{s.Name, strings.Join(s.Domains, ","), s.Placeholder, formatTime(s.UpdatedAt)}
			}
			return printTable(a.stdout, []string{"NAME", "DOMAINS", "PLACEHOLDER", "UPDATED"}, rows)
		}
	},
}

var secretGetCmd = &command{
	name:     "secret get",
	synopsis: "NAME",
	summary:  "show a secret (never its value)",
	help:     `Shows a secret: its domains, placeholder and times. The value is never shown.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args, "NAME"); err != nil {
				return err
			}
			s, err := c.GetSecret(ctx, args[0])
			if err != nil {
				return err
			}
			return a.printSecret(s)
		}
	},
}

var secretRotateCmd = &command{
	name:     "secret rotate",
	synopsis: "NAME [--value-file F] [--domain D]...",
	summary:  "give a secret a new value (the placeholder stays)",
	help: `
Gives a secret a new value. The placeholder stays the same, so sandboxes need no change; the
next intercepted request gets the new value. With --domain, the secret's domains are replaced
too.
` + valueHelp,
	setup: func(fs *flag.FlagSet) runFunc {
		var domains listFlag
		fs.Var(&domains, "domain", "replace the secret's domains with these (repeatable)")
		valueFile := fs.String("value-file", "", "read the value from this `file` (- for standard input)")
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args, "NAME"); err != nil {
				return err
			}
			value, err := a.readValue(args[0], *valueFile)
			if err != nil {
				return err
			}
			req := client.UpdateSecretRequest{Value: &value}
			if len(domains) > 0 {
				req.Domains = domains
			}
			s, err := c.UpdateSecret(ctx, args[0], req)
			if err != nil {
				return err
			}
			return a.printSecret(s)
		}
	},
}

var secretDomainsCmd = &command{
	name:     "secret domains",
	synopsis: "NAME --domain D [--domain D]...",
	summary:  "replace a secret's domains (its value and placeholder stay)",
	help: `
Replaces the domains a secret's value may go to. The value and the placeholder stay; a request
that carries the placeholder to a host no longer named is refused from then on.`,
	setup: func(fs *flag.FlagSet) runFunc {
		var domains listFlag
		fs.Var(&domains, "domain", "a `domain` the value may go to (repeatable; at least one)")
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args, "NAME"); err != nil {
				return err
			}
			if len(domains) == 0 {
				return usagef("give at least one --domain the value may go to")
			}
			s, err := c.UpdateSecret(ctx, args[0], client.UpdateSecretRequest{Domains: domains})
			if err != nil {
				return err
			}
			return a.printSecret(s)
		}
	},
}

var secretDeleteCmd = &command{
	name:     "secret delete",
	synopsis: "NAME",
	summary:  "delete a secret",
	help: `
Deletes a secret. Its placeholder is replaced no more: a request that still carries it is
refused.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args, "NAME"); err != nil {
				return err
			}
			if err := c.DeleteSecret(ctx, args[0]); err != nil {
				return err
			}
			return a.done("deleted secret %s", args[0])
		}
	},
}

var caCmd = &command{
	name:    "ca",
	summary: "print the interception CA's certificate (PEM)",
	help: `
Prints the certificate of egressd's interception CA, as PEM: what a sandbox must trust for
the domains egressd intercepts (those named by http_rules or by a secret). Needs no API key.
"egressctl exec" adds it to the command's trusted roots by itself.

  egressctl ca > egressd-ca.pem`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			pem, err := c.CAPEM(ctx)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, map[string]string{"pem": string(pem)})
			}
			_, err = a.stdout.Write(pem)
			return err
		}
	},
}

func (a *app) printSecret(s *client.Secret) error {
	if a.json() {
		return printJSON(a.stdout, s)
	}
	return printFields(a.stdout,
		one("name", s.Name),
		field{"domains", s.Domains},
		one("placeholder", s.Placeholder),
		one("created", formatTime(s.CreatedAt)),
		one("updated", formatTime(s.UpdatedAt)),
	)
}

// readValue reads a secret's value from file, or from standard input when file is "" or "-";
// a terminal is asked without echo. One line end at the end is dropped.
func (a *app) readValue(name, file string) (client.SecretValue, error) {
	var data []byte
	var err error
	switch {
	case file != "" && file != "-":
		f, oerr := os.Open(file)
		if oerr != nil {
			return "", fmt.Errorf("--value-file: %w", oerr)
		}
		defer f.Close()
		data, err = io.ReadAll(io.LimitReader(f, maxValueInput+1))
	case isTerminal(a.stdin):
		fmt.Fprintf(a.stderr, "Value of secret %s (not shown): ", name)
		data, err = readHidden(a.stdin.(*os.File))
		fmt.Fprintln(a.stderr)
	default:
		data, err = io.ReadAll(io.LimitReader(a.stdin, maxValueInput+1))
	}
	if err != nil {
		return "", fmt.Errorf("reading the value: %w", err)
	}
	if len(data) > maxValueInput {
		return "", errors.New("the value is over 16 KiB, more than a secret may hold")
	}
	data = bytes.TrimSuffix(data, []byte("\n"))
	data = bytes.TrimSuffix(data, []byte("\r"))
	if len(data) == 0 {
		return "", usagef("no value: pipe it on standard input or give --value-file (never an argument, which would stay in shell history)")
	}
	return client.SecretValue(data), nil
}
