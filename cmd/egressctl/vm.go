package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/egressd/egressd/client"
)

var vmCreateCmd = &command{
	name:     "vm create",
	synopsis: "[--id ID] [--netns [--node NODE] [--node-selector k=v]...]",
	summary:  "create a VM",
	help: `
Creates a VM: one sandbox. Without --id egressd picks the ID. Without --netns the VM
reaches the world only through the explicit proxy of its sessions (network mode "none").

With --netns egressd gives it a network namespace behind the transparent gateway of one node
of the fleet, an egressd run with --transparent; the namespace is on that node's host.
--node names the node; --node-selector keeps to nodes whose labels (their --node-label)
match; without either, the up transparent node with the fewest VMs takes it. egressd answers
once the node has made the network (state ready), or after 10 s with state pending: the
node makes it later, and "egressctl vm get ID" shows when it is ready.

  egressctl vm create --id agent-1 --netns --node-selector zone=eu-1,gpu=true`,
	setup: func(fs *flag.FlagSet) runFunc {
		id := fs.String("id", "", "the VM's `ID` (default: egressd picks one)")
		netns := fs.Bool("netns", false, `attach the VM to a network namespace (network mode "netns")`)
		node := fs.String("node", "", "with --netns: the `ID` of the transparent node to place it on (see 'egressctl node list')")
		var selector selectorFlag
		fs.Var(&selector, "node-selector", "with --netns: place it on a node with these labels, `k=v` (repeatable, or comma-separated)")
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			req := client.CreateVMRequest{VMID: *id}
			switch {
			case *netns:
				req.Network = &client.Network{Mode: "netns", Node: *node, NodeSelector: selector}
			case *node != "":
				return usagef("--node goes with --netns: only a VM with a network namespace is placed on a node")
			case len(selector) > 0:
				return usagef("--node-selector goes with --netns: only a VM with a network namespace is placed on a node")
			}
			vm, err := c.CreateVM(ctx, req)
			if err != nil {
				return err
			}
			if err := a.printVM(vm); err != nil {
				return err
			}
			if !a.json() {
				if note := networkNote(vm); note != "" {
					fmt.Fprintln(a.stderr, note)
				}
			}
			return nil
		}
	},
}

// selectorFlag is --node-selector k=v: repeatable, and a value may hold a comma-separated
// list, as egressd's --node-label takes them. An empty entry or a name given twice is an
// error rather than a guess: a selector that quietly lost a label would place the VM on a
// node the caller did not mean.
type selectorFlag map[string]string

func (s *selectorFlag) String() string { return formatLabels(*s) }

func (s *selectorFlag) Set(v string) error {
	if *s == nil {
		*s = make(selectorFlag)
	}
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		k, val, ok := strings.Cut(part, "=")
		switch {
		case part == "":
			return errors.New("empty entry; give labels as k=v, e.g. zone=eu-1")
		case !ok || k == "":
			return fmt.Errorf("%q is not k=v (a label name, \"=\", its value), e.g. zone=eu-1", part)
		}
		if old, dup := (*s)[k]; dup && old != val {
			return fmt.Errorf("label %q is given twice (%s and %s); a node has one value for it", k, old, val)
		}
		(*s)[k] = val
	}
	return nil
}

// networkNote says, for people, what a netns VM's network state means when it is not
// simply ready; "" when there is nothing to add.
func networkNote(vm *client.VM) string {
	n := vm.Network
	if n.Mode != "netns" {
		return ""
	}
	switch n.State {
	case "pending", "creating":
		return fmt.Sprintf("Node %s has not made the VM's network yet (state %s). Watch it with 'egressctl vm get %s': the state becomes ready, or failed with the reason.", n.Node, n.State, vm.VMID)
	case "node_down":
		return fmt.Sprintf("Node %s is down: the VM's network keeps failing closed, and the node takes it up again when it is back (see 'egressctl node list').", n.Node)
	case "deleting":
		return fmt.Sprintf("VM %s is being deleted: node %s has not removed its network yet. It does when it can (if it is down, once it is back: see 'egressctl node list'); 'egressctl vm get %s' answers not found once it is gone.", vm.VMID, n.Node, vm.VMID)
	case "failed":
		return fmt.Sprintf("Node %s could not make the VM's network: %s", n.Node, n.Error)
	}
	return ""
}

// networkState is the state a table shows: "" for a VM without a namespace, and "ready" for
// one stored before networks had states, which the server treats as ready.
func networkState(n client.Network) string {
	if n.Mode != "netns" {
		return ""
	}
	if n.State == "" {
		return "ready"
	}
	return n.State
}

var vmListCmd = &command{
	name:    "vm list",
	summary: "list VMs",
	help:    `Lists the VMs of the key's tenant.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			vms, err := c.ListVMs(ctx)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, client.VMList{VMs: nonNil(vms)})
			}
			// No policy column: the list answer leaves policies out (GET /v1/vms/{id} has them),
			// and a column that says "none" for a VM with a policy would mislead.
			rows := make([][]string, len(vms))
			for i, vm := range vms {
				rows[i] = []string{vm.VMID, vm.Network.Mode, vm.Network.Node, networkState(vm.Network),
					strconv.Itoa(vm.Sessions), formatTime(vm.CreatedAt)}
			}
			return printTable(a.stdout, []string{"VM", "NETWORK", "NODE", "STATE", "SESSIONS", "CREATED"}, rows)
		}
	},
}

var vmGetCmd = &command{
	name:     "vm get",
	synopsis: "VM",
	summary:  "show a VM",
	help: `
Shows a VM: its network attachment, its session count and its VM policy. A netns VM also
shows its node and the state of its network: ready, pending (its node has not made it yet),
failed (with the reason), deleting, or node_down (its node is silent; its network keeps
failing closed).`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args, "VM"); err != nil {
				return err
			}
			vm, err := c.GetVM(ctx, args[0])
			if err != nil {
				return err
			}
			return a.printVM(vm)
		}
	},
}

var vmDeleteCmd = &command{
	name:     "vm delete",
	synopsis: "VM",
	summary:  "delete a VM, its sessions and its network",
	help: `
Deletes a VM. Its sessions end, its policies are cleared and its network namespace, if it
has one, is removed. A netns VM's namespace is removed by its node: if the node has not done
so within 10 s (or is down), the VM stays listed in state deleting, takes no sessions or
policies, and goes once the node has removed it. With -o json this prints nothing once the
VM is gone, or the VM while it is still being deleted.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args, "VM"); err != nil {
				return err
			}
			if err := c.DeleteVM(ctx, args[0]); err != nil {
				return err
			}
			// DeleteVM succeeds on 204 (gone) and 202 (its node still has to remove it) alike;
			// reading the VM back tells them apart, and is the fresher answer of the two.
			vm, err := c.GetVM(ctx, args[0])
			switch {
			case client.IsNotFound(err):
				return a.done("deleted VM %s", args[0])
			case err != nil:
				fmt.Fprintf(a.stderr, "egressctl: VM %s: deleting it was accepted, but reading it back failed, so whether its node has removed its network is not known: %v\n", args[0], err)
				return nil
			case vm.Network.State != "deleting":
				// Another VM has taken the ID since.
				return a.done("deleted VM %s", args[0])
			}
			if a.json() {
				return printJSON(a.stdout, vm)
			}
			_, err = fmt.Fprintln(a.stdout, networkNote(vm))
			return err
		}
	},
}

func (a *app) printVM(vm *client.VM) error {
	if a.json() {
		return printJSON(a.stdout, vm)
	}
	fields := []field{
		one("vm_id", vm.VMID),
		one("network", vm.Network.Mode),
	}
	if vm.Network.Mode == "netns" {
		fields = append(fields, one("node", vm.Network.Node), one("state", networkState(vm.Network)))
		if vm.Network.Error != "" {
			fields = append(fields, one("error", vm.Network.Error))
		}
	}
	if vm.Network.Netns != "" {
		fields = append(fields, one("netns", vm.Network.Netns), one("path", vm.Network.Path),
			one("address", vm.Network.Address), one("gateway", vm.Network.Gateway))
	}
	fields = append(fields,
		one("sessions", strconv.Itoa(vm.Sessions)),
		one("created", formatTime(vm.CreatedAt)),
		one("policy", summarizePolicy(vm.EgressPolicy)),
	)
	return printFields(a.stdout, fields...)
}

// done confirms an action that the API answers with no body: a line for people, and nothing
// for scripts, which have the exit code.
func (a *app) done(format string, args ...any) error {
	if a.json() {
		return nil
	}
	_, err := fmt.Fprintf(a.stdout, format+"\n", args...)
	return err
}

// nonNil makes an empty list print as [] rather than null, as the API writes it.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
