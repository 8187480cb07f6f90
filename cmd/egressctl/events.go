package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/egressd/egressd/client"
)

var eventsCmd = &command{
	name:     "events",
	synopsis: "[--vm VM] [--session S] [--decision allow|deny] [--kind K] [--since 5m|TIME|SEQ] [--limit N] [--follow]",
	summary:  "show the gateway's decisions; --follow streams them",
	help: `
Shows the gateway's recent decisions for the key's tenant, one per line, oldest first:

  TIME  DECISION  KIND  SESSION  DESTINATION  REASON; rule: RULE; layer: LAYER

KIND is connect (a connection or tunnel), request (one plain-HTTP request), dns (a query,
shown as NAME TYPE) or close (an allowed connection ended: bytes up and down, how long it
lived and why it ended). "allow (would deny)" is traffic that a monitor-mode policy let
through but would have denied. SESSION is "vm:ID" for traffic of a VM without a session.

egressd keeps the newest decisions only (10,000 by default); its audit log, where the
operator set one, has them all. Without --since the newest --limit are shown (default 100);
with it, the first --limit after it.

--follow keeps the stream open and prints each decision as it comes, after the buffered ones,
until interrupted (Ctrl-C exits 0); --timeout does not apply to it. When the stream is lost
(egressd restarts, say) it reconnects, waiting 250 ms, then twice as long each time up to
5 s, and saying so on standard error; it resumes after the last decision printed, so none is
printed twice and those made meanwhile come first. It gives up (exit 1) when egressd stays
unreachable for a minute. With -o json, each decision is one JSON line; without --follow,
-o json prints the API's {"events": [...]}.`,
	setup: func(fs *flag.FlagSet) runFunc {
		var f client.EventsFilter
		fs.StringVar(&f.VMID, "vm", "", "only the decisions of this `VM`")
		fs.StringVar(&f.SessionID, "session", "", "only the decisions of this `SESSION`")
		fs.StringVar(&f.Decision, "decision", "", "`allow|deny`: only the allowed, or only the denied")
		fs.StringVar(&f.Kind, "kind", "", "only this `KIND`: connect, request, dns or close")
		since := fs.String("since", "", "start at `POINT`: a duration back from now (5m, 2h), an RFC 3339 time, or the seq of a decision")
		var limit optionalInt
		fs.Var(&limit, "limit", "at most `N` decisions (default 100, at most 10000; with --follow, 0 shows only new ones)")
		follow := fs.Bool("follow", false, "keep printing decisions as they come, until interrupted")
		return func(ctx context.Context, a *app, c *client.Client, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if *since != "" {
				var err error
				if f.Since, f.AfterSeq, err = parseSince(*since, time.Now()); err != nil {
					return err
				}
			}
			if limit.set {
				if limit.n < 0 {
					return usagef("--limit must be 0 or more")
				}
				f.Limit = limit.n
				if limit.n == 0 {
					f.Limit = -1 // none
				}
			}
			if *follow {
				return followEvents(ctx, a, c, f)
			}
			list, err := c.Events(ctx, f)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, client.EventList{Events: nonNil(list)})
			}
			if len(list) == 0 {
				fmt.Fprintln(a.stderr, "No decisions match.")
				return nil
			}
			for _, e := range list {
				if _, err := fmt.Fprintln(a.stdout, formatEvent(e)); err != nil {
					return err
				}
			}
			return nil
		}
	},
}

// optionalInt is an int flag that knows whether it was given, so that --limit 0 can mean
// something other than the default.
type optionalInt struct {
	n   int
	set bool
}

func (o *optionalInt) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.Itoa(o.n)
}

func (o *optionalInt) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("not a whole number")
	}
	o.n, o.set = n, true
	return nil
}

// parseSince reads --since: a whole number is a seq, then a duration back from now, then an
// RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, uint64, error) {
	if seq, err := strconv.ParseUint(s, 10, 64); err == nil {
		return time.Time{}, seq, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, 0, usagef("--since %s: give a duration back from now, such as 5m", s)
		}
		return now.Add(-d), 0, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, 0, nil
	}
	return time.Time{}, 0, usagef("--since %q: give a duration (5m, 2h), an RFC 3339 time (2025-01-02T15:04:05Z) or the seq of a decision", s)
}

// followEvents prints decisions until interrupted.
func followEvents(ctx context.Context, a *app, c *client.Client, f client.EventsFilter) error {
	ctx, stop := untilInterrupted(ctx)
	defer stop()
	enc := json.NewEncoder(a.stdout)
	err := c.FollowEvents(ctx, f, func(e client.Event) error {
		if a.json() {
			return enc.Encode(e) // one compact line per decision
		}
		_, err := fmt.Fprintln(a.stdout, formatEvent(e))
		return err
	}, client.OnReconnect(func(r client.Reconnect) { fmt.Fprintln(a.stderr, formatReconnect(r)) }))
	if ctx.Err() != nil {
		return nil // interrupted: the way a follow is meant to end
	}
	return err
}

// formatReconnect is a line for stderr about a lost stream's recovery.
func formatReconnect(r client.Reconnect) string {
	if r.Resumed {
		if r.LastEventID == "" {
			return "egressctl events: reconnected"
		}
		return "egressctl events: reconnected; resuming after event " + r.LastEventID
	}
	why := "egressd ended the stream"
	if r.Err != nil {
		why = r.Err.Error()
	}
	if r.Attempt == 1 {
		return fmt.Sprintf("egressctl events: the stream was lost (%s); reconnecting in %s, for up to %s",
			why, r.Wait, client.DefaultFollowGiveUp)
	}
	return fmt.Sprintf("egressctl events: reconnecting in %s (attempt %d; %s)", r.Wait, r.Attempt, why)
}

// untilInterrupted derives the context of a follow from the command's. runCommand bounds
// every command with --timeout, which a follow must outlive; so the follow drops that
// deadline but still ends when the command's context is cancelled (Ctrl-C, or a caller of
// run), and on SIGINT or SIGTERM even once the deadline has passed, when the cancellation of
// the command's context can no longer be seen.
func untilInterrupted(ctx context.Context) (context.Context, context.CancelFunc) {
	follow, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopAfter := context.AfterFunc(ctx, func() {
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			cancel()
		}
	})
	follow, stopSignals := signal.NotifyContext(follow, os.Interrupt, syscall.SIGTERM)
	return follow, func() {
		stopAfter()
		stopSignals()
		cancel()
	}
}

// formatEvent is one decision on one line, for people (see the command's help).
func formatEvent(e client.Event) string {
	var b strings.Builder
	b.WriteString(e.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	decision := e.Decision
	if e.WouldDeny {
		decision += " (would deny)"
	}
	fmt.Fprintf(&b, "  %-5s  %-7s  %s  %s", orDash(decision), orDash(e.Kind), eventWho(e), eventDest(e))
	if e.Kind == client.EventClose {
		fmt.Fprintf(&b, "  up %s, down %s in %s", formatBytes(e.BytesUp), formatBytes(e.BytesDown), formatMS(e.DurationMS))
		if e.CloseReason != "" {
			fmt.Fprintf(&b, " (%s)", e.CloseReason)
		}
		return b.String()
	}
	var why []string
	if e.Reason != "" {
		why = append(why, e.Reason)
	}
	if e.Rule != "" {
		why = append(why, "rule: "+e.Rule)
	}
	if e.Layer != "" {
		why = append(why, "layer: "+e.Layer)
	}
	if len(why) > 0 {
		b.WriteString("  ")
		b.WriteString(strings.Join(why, "; "))
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// eventWho is the sandbox: the session, or the VM for traffic no session claims.
func eventWho(e client.Event) string {
	switch {
	case e.SessionID != "":
		return e.SessionID
	case e.VMID != "":
		return "vm:" + e.VMID
	}
	return "-"
}

// eventDest is where the traffic went: host:port, or ip:port without a host name; for DNS
// the name and the query type.
func eventDest(e client.Event) string {
	if e.Kind == client.EventDNS {
		return strings.TrimSpace(orDash(e.Host) + " " + e.QType)
	}
	target := e.Host
	if target == "" {
		target = e.IP
	}
	switch {
	case target == "":
		return "-"
	case e.Port == 0:
		return target
	}
	return net.JoinHostPort(target, strconv.Itoa(e.Port))
}

// formatBytes is a byte count in binary units: "512 B", "1.5 KiB", "3.2 MiB".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// formatMS is a duration given in milliseconds, rounded to what a person reads.
func formatMS(ms float64) string {
	d := time.Duration(ms * float64(time.Millisecond))
	if d >= time.Millisecond {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Microsecond).String()
}
