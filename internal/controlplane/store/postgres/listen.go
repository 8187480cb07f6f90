package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Timings of Listen. Variables, not constants, so that tests can shorten them.
var (
	// listenIdle is how long Listen waits for a notification before it checks, with a
	// ping, that its connection is still alive: a connection whose peer vanished without
	// closing it would otherwise wait for TCP to notice, which takes many minutes.
	listenIdle = 15 * time.Second
	// listenPingTimeout bounds that check.
	listenPingTimeout = 5 * time.Second
	// Reconnection backoff: doubling from the first to the last, reset after a success.
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 5 * time.Second
)

// WaitChannel carries the revisions that API nodes wait for the fleet to enforce (Wanted).
const WaitChannel = "egressd_waits"

// Handlers are what Listen calls. Neither may block.
type Handlers struct {
	// Changed: a write was committed (Channel). view.Kick is one: it merges kicks.
	Changed func()
	// Wanted: an API node waits until node (every gateway node when "") enforces revision
	// rev (WaitChannel, Wanted). nil ignores them.
	Wanted func(rev int64, node string)
}

// Wanted tells the fleet's gateway nodes that this API node waits for node ("" for all of
// them) to enforce revision rev, so that they heartbeat as soon as they do rather than at
// their next interval. Only waited-for writes cost heartbeats beyond the one a second.
func (s *Store) Wanted(ctx context.Context, rev int64, node string) error {
	payload := strconv.FormatInt(rev, 10)
	if node != "" {
		payload += " " + node
	}
	if _, err := s.db.ExecContext(ctx, `SELECT pg_notify($1, $2)`, WaitChannel, payload); err != nil {
		return fmt.Errorf("postgres: announce a wait: %w", err)
	}
	return nil
}

// parseWanted reads a WaitChannel payload: "rev" or "rev node".
func parseWanted(payload string) (int64, string, bool) {
	revText, node, _ := strings.Cut(payload, " ")
	rev, err := strconv.ParseInt(revText, 10, 64)
	return rev, node, err == nil && rev > 0
}

// Listen keeps a dedicated connection LISTENing on Channel (and, with h.Wanted, on
// WaitChannel), and calls h's handlers for every notification, until ctx ends.
//
// It also calls h.Changed once each time it has (re)connected and is listening: whatever was
// committed while it was not listening is then read by the follower, which always asks for
// ChangesSince its own revision. So a lost connection costs only latency, never a change.
// It reconnects with exponential backoff, and logs only when the state changes, so that a
// long outage does not flood the log.
func (s *Store) Listen(ctx context.Context, h Handlers, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	backoff := listenBackoffMin
	down := false // whether the outage has been logged
	for {
		connected, err := s.listenOnce(ctx, h, func() {
			if down {
				log.Info("postgres: listening for changes again", "channel", Channel)
				down = false
			}
		})
		if ctx.Err() != nil {
			return
		}
		if connected {
			backoff = listenBackoffMin
		}
		if !down {
			log.Warn("postgres: not listening for changes; retrying (changes are still found by polling)", "err", err)
			down = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, listenBackoffMax)
	}
}

// listenOnce connects, listens and relays notifications until the connection fails or ctx
// ends. It reports whether it got as far as listening, and calls up when it does.
func (s *Store) listenOnce(ctx context.Context, h Handlers, up func()) (connected bool, err error) {
	cfg := s.conn.Copy()
	cfg.RuntimeParams["application_name"] += "-listen"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(closeCtx)
	}()
	channels := []string{Channel}
	if h.Wanted != nil {
		channels = append(channels, WaitChannel)
	}
	for _, c := range channels {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{c}.Sanitize()); err != nil {
			return false, fmt.Errorf("listen on %s: %w", c, err)
		}
	}
	up()
	h.Changed() // catch up on what was committed while nobody listened
	for {
		waitCtx, cancel := context.WithTimeout(ctx, listenIdle)
		n, err := conn.WaitForNotification(waitCtx)
		cancel()
		switch {
		case err == nil && n.Channel == WaitChannel:
			if rev, node, ok := parseWanted(n.Payload); ok {
				h.Wanted(rev, node)
			}
		case err == nil:
			h.Changed()
		case ctx.Err() != nil:
			return true, ctx.Err()
		case pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded):
			// Quiet for a while: make sure the connection is still there.
			pingCtx, cancel := context.WithTimeout(ctx, listenPingTimeout)
			err := conn.Ping(pingCtx)
			cancel()
			if err != nil {
				return true, fmt.Errorf("ping: %w", err)
			}
		default:
			return true, fmt.Errorf("wait for notification: %w", err)
		}
	}
}
