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

The command trusts egressd's interception CA besides the system's roots: SSL_CERT_FILE,
REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS, CURL_CA_BUNDLE and GIT_SSL_CAINFO name a bundle of
both (a temporary file, removed when the command ends), so that curl, Python, pip, Node and
git verify the certificates of the domains egressd intercepts.

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
			bundle, err := a.caBundle(ctx, c)
			if err != nil {
				return err
			}
			if bundle != "" {
				defer os.Remove(bundle)
				cmd.Env = withCAEnv(os.Environ(), bundle)
			}
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

// caBundle fetches the interception CA and writes the bundle of the system's roots and it;
// "" (and a warning) when the egressd is one without a CA.
func (a *app) caBundle(ctx context.Context, c *client.Client) (string, error) {
	pem, err := c.CAPEM(ctx)
	if client.IsNotFound(err) {
		fmt.Fprintln(a.stderr, "egressctl: this egressd serves no interception CA (GET /v1/ca.pem); the command trusts the system's roots only")
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("fetching the interception CA: %w", err)
	}
	bundle, system, err := writeCABundle(pem, append([]string{os.Getenv("SSL_CERT_FILE")}, systemBundles...))
	if err != nil {
		return "", err
	}
	if system == "" {
		fmt.Fprintf(a.stderr, "egressctl: no system CA bundle found (looked at %s); the command trusts egressd's CA only\n", strings.Join(systemBundles, ", "))
	}
	return bundle, nil
}
