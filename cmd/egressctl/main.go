// Command egressctl controls egressd, the egress firewall for code sandboxes, over its HTTP API:
// VMs, sessions, egress policies, decision checks, secrets, the interception CA and API keys.
//
// It is a thin layer over the Go SDK (package github.com/egressd/egressd/client): every
// command is one or two SDK calls and a printer. Output is for people by default; -o json
// prints the API's JSON for scripts. Run "egressctl --help" for the commands and exit codes.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
