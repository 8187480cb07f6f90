package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/process/buildinfo"
)

var versionCmd = &command{
	name:    "version",
	summary: "show egressctl's version, and egressd's when it answers",
	help: `
Shows the version, the commit and the Go version of this egressctl, and of the egressd at
--url when it answers (GET /v1/status, which needs an API key). An egressd that does not
answer is reported on standard error; the exit status is still 0, since the client's version
was shown.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			mine := buildinfo.Get()
			server, serr := c.Status(ctx)
			if a.json() {
				out := struct {
					Client buildinfo.Info `json:"client"`
					Server *client.Status `json:"server,omitempty"`
				}{mine, server}
				if err := printJSON(a.stdout, out); err != nil {
					return err
				}
			} else {
				fields := []field{one("client", "egressctl "+mine.String())}
				if server != nil {
					fields = append(fields, one("server", "egressd "+serverBuild(server).String()+" at "+a.url))
				}
				if err := printFields(a.stdout, fields...); err != nil {
					return err
				}
			}
			if serr != nil {
				fmt.Fprintf(a.stderr, "egressctl: no server version: %s\n", unreachable(a, serr))
			}
			return nil
		}
	},
}

var statusCmd = &command{
	name:    "status",
	summary: "show egressd's version, node, store and counts of VMs, sessions and connections",
	help: `
Shows which egressd answers at --url and what it holds (GET /v1/status):

  egressd           its version, commit and Go version
  node              its node ID (--node-id)
  roles, store      what it serves and its store kind, sqlite or postgres (admin keys only)
  counts            VMs, sessions and open connections: the key's tenant's own, or every
                    tenant's with an admin key

VMs and sessions are the store's (a whole fleet's, on a shared store); open connections are
those through this node's gateway, "-" on a node that runs none (--role api).`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			st, err := c.Status(ctx)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, st)
			}
			return printFields(a.stdout, statusFields(st)...)
		}
	},
}

// unreachable says why the server's status could not be had.
func unreachable(a *app, err error) string {
	var urlErr *url.Error
	var apiErr *client.Error
	switch {
	case errors.As(err, &urlErr):
		return fmt.Sprintf("cannot reach egressd at %s: %v", a.url, urlErr.Err)
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized:
		return fmt.Sprintf("egressd at %s wants an API key for it (set EGRESSD_API_KEY or --api-key): %v", a.url, err)
	}
	return fmt.Sprintf("egressd at %s: %v", a.url, err)
}

// serverBuild is the build that a status describes.
func serverBuild(st *client.Status) buildinfo.Info {
	return buildinfo.Info{Version: st.Version, Commit: st.Commit, Modified: st.Modified, GoVersion: st.GoVersion}
}

// statusFields is the readable form of a status.
func statusFields(st *client.Status) []field {
	counts := "tenant " + st.Tenant
	if st.Scope == client.StatusScopeAll {
		counts = "all tenants"
	}
	open := "- (this node runs no gateway)"
	if st.OpenConnections != nil {
		open = strconv.FormatInt(*st.OpenConnections, 10)
	}
	fields := []field{
		one("egressd", serverBuild(st).String()),
		one("node", st.NodeID),
	}
	if len(st.Roles) > 0 {
		fields = append(fields, one("roles", strings.Join(st.Roles, ", ")))
	}
	if st.Store != "" {
		fields = append(fields, one("store", st.Store))
	}
	return append(fields,
		one("counts", counts),
		one("vms", strconv.Itoa(st.VMs)),
		one("sessions", strconv.Itoa(st.Sessions)),
		one("open connections", open),
	)
}
