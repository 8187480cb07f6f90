package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/egressd/egressd/client"
)

// Exit codes. They are part of the interface: scripts branch on them.
const (
	exitOK     = 0
	exitError  = 1 // the API answered an error, egressd is unreachable, or bad usage
	exitDenied = 3 // egress check: the decision is deny
)

const defaultURL = "http://127.0.0.1:8470"

// app is one invocation: where to write, and the global settings every command shares.
type app struct {
	stdin          io.Reader // for -f -
	stdout, stderr io.Writer

	url     string
	apiKey  secret
	output  string // "text" or "json"
	timeout time.Duration
	// socksURL is EGRESSD_SOCKS_URL, for socks-connect.
	socksURL string
}

// secret is a flag value that never shows itself: flag's --help prints a flag's current value
// as its default, and the key's current value comes from EGRESSD_API_KEY.
type secret string

func (s *secret) String() string     { return "" }
func (s *secret) Set(v string) error { *s = secret(v); return nil }

// addGlobalFlags registers the settings every command accepts, before or after the command
// name. Their defaults are the app's current values, so that flags parsed before the command
// name (or the environment) are not reset by registering them again on the command's set.
func (a *app) addGlobalFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.url, "url", a.url, "egressd's API `URL` (env EGRESSD_URL)")
	fs.Var(&a.apiKey, "api-key", "API `key` (env EGRESSD_API_KEY)")
	fs.StringVar(&a.output, "o", a.output, "output `format`: text, or json for the API's JSON")
	fs.StringVar(&a.output, "output", a.output, "same as -o")
	fs.DurationVar(&a.timeout, "timeout", a.timeout, "give up on the API after this `duration` (0: never)")
}

// client returns an SDK client for the settings as parsed.
func (a *app) client() (*client.Client, error) {
	return client.New(a.url, string(a.apiKey), client.WithUserAgent("egressctl"))
}

func (a *app) json() bool { return a.output == "json" }

// run is the whole program but for the process: it returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{
		stdin:   stdin,
		stdout:  stdout,
		stderr:  stderr,
		url:     defaultURL,
		apiKey:  secret(getenv("EGRESSD_API_KEY")),
		output:  "text",
		timeout: 30 * time.Second,
	}
	a.socksURL = getenv("EGRESSD_SOCKS_URL")
	if u := getenv("EGRESSD_URL"); u != "" {
		a.url = u
	}

	top := flag.NewFlagSet("egressctl", flag.ContinueOnError)
	top.SetOutput(stderr)
	top.Usage = func() {} // flag calls it for --help too; the cases are told apart below
	a.addGlobalFlags(top)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeMainHelp(stdout)
			return exitOK
		}
		fmt.Fprintln(stderr, "Run 'egressctl --help' for usage.") // after flag's own message
		return exitError
	}
	rest := top.Args()
	if len(rest) == 0 {
		writeMainHelp(stderr)
		return exitError
	}
	if rest[0] == "help" {
		// "egressctl help vm create" is "egressctl vm create --help".
		rest = append(rest[1:], "--help")
		if len(rest) == 1 {
			writeMainHelp(stdout)
			return exitOK
		}
	}

	cmd, cmdArgs := findCommand(rest)
	if cmd == nil {
		if g := findGroup(rest[0]); g != "" {
			if len(rest) > 1 && (rest[1] == "--help" || rest[1] == "-help" || rest[1] == "-h") {
				writeGroupHelp(stdout, g)
				return exitOK
			}
			if len(rest) > 1 {
				fmt.Fprintf(stderr, "egressctl: unknown command %q\n\n", g+" "+rest[1])
			}
			writeGroupHelp(stderr, g)
			return exitError
		}
		fmt.Fprintf(stderr, "egressctl: unknown command %q\nRun 'egressctl --help' for the commands.\n", rest[0])
		return exitError
	}
	return a.runCommand(ctx, cmd, cmdArgs)
}

// runCommand parses a command's flags and runs it, turning its error into a message and an
// exit code.
func (a *app) runCommand(ctx context.Context, cmd *command, args []string) int {
	own := flag.NewFlagSet("egressctl "+cmd.name, flag.ContinueOnError)
	runFn := cmd.setup(own)

	// The set that parses has the command's own flags and the global ones; help lists them apart.
	fs := flag.NewFlagSet("egressctl "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	own.VisitAll(func(f *flag.Flag) { fs.Var(f.Value, f.Name, f.Usage) })
	a.addGlobalFlags(fs)
	fs.Usage = func() {} // flag calls it for --help too; the cases are told apart below

	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		writeCommandHelp(a.stdout, cmd, own)
		return exitOK
	}
	if err != nil {
		// flag has printed what is wrong; add how to do it right.
		fmt.Fprintf(a.stderr, "Usage: %s\nRun 'egressctl %s --help' for details.\n", cmd.usage(), cmd.name)
		return exitError
	}
	if a.output != "text" && a.output != "json" {
		return a.fail(cmd, usagef("-o %q: the formats are text and json", a.output))
	}

	c, err := a.client()
	if err != nil {
		return a.fail(cmd, usagef("--url or EGRESSD_URL: %s", strings.TrimPrefix(err.Error(), "client: ")))
	}
	if a.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.timeout)
		defer cancel()
	}
	return a.fail(cmd, runFn(ctx, a, c, pos))
}

// parseInterspersed parses flags wherever they are among the arguments ("vm get ID -o json"
// as well as "vm get -o json ID"), which package flag alone does not: it stops at the first
// argument that is not a flag. Everything after "--" is an argument.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError is a wrong command line that flag cannot catch, such as two exclusive flags.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCodeError ends the program with a code other than 1; with an empty msg nothing is
// printed, because the command has said what it had to on stdout (a denial, say).
type exitCodeError struct {
	code int
	msg  string
}

func (e *exitCodeError) Error() string { return e.msg }

// fail reports err on stderr and returns the exit code for it.
func (a *app) fail(cmd *command, err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	var ec *exitCodeError
	var ae *client.Error
	var urlErr *url.Error
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(a.stderr, "egressctl %s: %s\nUsage: %s\nRun 'egressctl %s --help' for details.\n",
			cmd.name, ue.msg, cmd.usage(), cmd.name)
		return exitError
	case errors.As(err, &ec):
		if ec.msg != "" {
			fmt.Fprintf(a.stderr, "egressctl %s: %s\n", cmd.name, ec.msg)
		}
		return ec.code
	case errors.As(err, &ae):
		fmt.Fprintf(a.stderr, "egressctl: %v\n", ae)
		if ae.Status == 401 && a.apiKey == "" {
			fmt.Fprintln(a.stderr, "No API key was given: set EGRESSD_API_KEY or pass --api-key. A fresh egressd writes an admin key to <data-dir>/admin.key.")
		}
		return exitError
	case errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintf(a.stderr, "egressctl: egressd at %s did not answer within %s (--timeout)\n", a.url, a.timeout)
		return exitError
	case errors.As(err, &urlErr) && !errors.Is(err, context.Canceled):
		fmt.Fprintf(a.stderr, "egressctl: cannot reach egressd at %s (set EGRESSD_URL or --url): %v\n", a.url, urlErr.Err)
		return exitError
	}
	fmt.Fprintf(a.stderr, "egressctl: %v\n", err)
	return exitError
}

// wantArgs checks the count of positional arguments: names are their names, for the message.
func wantArgs(pos []string, names ...string) error {
	if len(pos) == len(names) {
		return nil
	}
	if len(pos) < len(names) {
		return usagef("missing %s", strings.Join(names[len(pos):], " "))
	}
	return usagef("unexpected argument %q", pos[len(names)])
}
