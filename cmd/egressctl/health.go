package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/host/netns"
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
	summary:  "run a command inside a VM's sandbox network",
	help: `
Runs a command inside the network namespace of a VM created with --netns, as the sandbox's
own processes run: its traffic goes through the transparent gateway, and its DNS through the
gateway's filter (the namespace's resolv.conf is mounted over /etc/resolv.conf for it, as
ip netns exec does). It runs on the host of the VM's node ("egressctl vm get" names it), as
root, like egressd. The exit status is the command's.

  egressctl exec agent-vm -- curl https://pypi.org/simple/`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if len(args) < 2 {
				return &usageError{msg: "give a VM and the command to run: egressctl exec VM -- COMMAND [ARG...]"}
			}
			vm, err := c.GetVM(ctx, args[0])
			if err != nil {
				return err
			}
			if vm.Network.Mode != "netns" {
				return fmt.Errorf("VM %s has no sandbox network: create it with a netns network (egressctl vm create --netns)", vm.VMID)
			}
			if vm.Network.Path == "" {
				return errors.New(strings.TrimSpace(fmt.Sprintf("VM %s has no network namespace to run in (state %s on node %s). %s",
					vm.VMID, networkState(vm.Network), vm.Network.Node, networkNote(vm))))
			}
			cmd := exec.Command(args[1], args[2:]...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, a.stdout, a.stderr
			resolv := filepath.Join("/etc/netns", vm.Network.Netns, "resolv.conf")
			if err := netns.StartIn(vm.Network.Path, cmd, netns.WithResolvConf(resolv)); err != nil {
				return fmt.Errorf("starting %s in VM %s: %w (egressctl exec needs root on the gateway's host)", args[1], vm.VMID, err)
			}
			err = cmd.Wait()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return &exitCodeError{code: ee.ExitCode()}
			}
			return err
		}
	},
}
