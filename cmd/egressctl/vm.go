package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"

	"github.com/egressd/egressd/client"
)

var vmCreateCmd = &command{
	name:     "vm create",
	synopsis: "[--id ID] [--netns]",
	summary:  "create a VM",
	help: `
Creates a VM: one sandbox. Without --id egressd picks the ID. Without --netns the VM
reaches the world only through the explicit proxy of its sessions (network mode "none").
With --netns egressd gives it a network namespace behind the transparent gateway, which
needs egressd to run with --transparent.`,
	setup: func(fs *flag.FlagSet) runFunc {
		id := fs.String("id", "", "the VM's `ID` (default: egressd picks one)")
		netns := fs.Bool("netns", false, `attach the VM to a network namespace (network mode "netns")`)
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			req := client.CreateVMRequest{VMID: *id}
			if *netns {
				req.Network = &client.Network{Mode: "netns"}
			}
			vm, err := c.CreateVM(ctx, req)
			if err != nil {
				return err
			}
			return a.printVM(vm)
		}
	},
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
				rows[i] = []string{vm.VMID, vm.Network.Mode, strconv.Itoa(vm.Sessions), formatTime(vm.CreatedAt)}
			}
			return printTable(a.stdout, []string{"VM", "NETWORK", "SESSIONS", "CREATED"}, rows)
		}
	},
}

var vmGetCmd = &command{
	name:     "vm get",
	synopsis: "VM",
	summary:  "show a VM",
	help:     `Shows a VM: its network attachment, its session count and its VM policy.`,
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
has one, is removed.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args, "VM"); err != nil {
				return err
			}
			if err := c.DeleteVM(ctx, args[0]); err != nil {
				return err
			}
			return a.done("deleted VM %s", args[0])
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
