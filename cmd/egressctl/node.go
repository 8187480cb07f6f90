package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/client"
)

var nodeListCmd = &command{
	name:    "node list",
	aliases: []string{"nodes"},
	summary: "list the fleet's egressd nodes, up and down (also: nodes)",
	help: `
Lists the egressd processes of the fleet (GET /v1/nodes), up and down, by ID. Each node
registers itself at start with --node-id and heartbeats every second. Needs an admin key.

  ROLES           what it serves: api, gateway, transparent (it can own netns VMs)
  LABELS          its --node-label values, which "vm create --node-selector" matches
  SANDBOX CIDR    a transparent node's --sandbox-cidr, where its VMs' addresses come from
  STATE           up, or down when it has not heartbeated for 10 s; a down node keeps its
                  VMs (their namespaces cannot move to another host)
  LAST HEARTBEAT  how long ago, by this machine's clock (-o json has the time)
  REVISION        the store revision its gateway's view has applied
  VMS             the netns VMs the store places on it`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			nodes, err := c.Nodes(ctx)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, client.NodeList{Nodes: nonNil(nodes)})
			}
			header, rows := nodeTable(nodes, time.Now())
			return printTable(a.stdout, header, rows)
		}
	},
}

// nodeTable is the text form of a node list; now is when the heartbeats' ages are taken.
func nodeTable(nodes []client.Node, now time.Time) (header []string, rows [][]string) {
	header = []string{"ID", "ROLES", "ADDRESS", "LABELS", "SANDBOX CIDR", "STATE", "LAST HEARTBEAT", "REVISION", "VMS"}
	rows = make([][]string, len(nodes))
	for i, n := range nodes {
		rows[i] = []string{
			n.ID, strings.Join(n.Roles, ","), n.Address, formatLabels(n.Labels), n.SandboxCIDR, n.State,
			formatAge(n.LastHeartbeat, now), strconv.FormatInt(n.Revision, 10), strconv.Itoa(n.VMs),
		}
	}
	return header, rows
}

// formatLabels writes labels as "k=v,k=v", sorted by name so that a table is stable; "" for
// none.
func formatLabels(labels map[string]string) string {
	parts := make([]string, 0, len(labels))
	for k, v := range labels {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// formatAge is how long before now t was, in its largest unit: "2s ago", "5m ago", "3h ago",
// "4d ago". The store's clock stamps heartbeats and this machine's clock reads them, so a
// time a little ahead of now (clock skew) reads as "0s ago" rather than as the future.
func formatAge(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := max(now.Sub(t), 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}
