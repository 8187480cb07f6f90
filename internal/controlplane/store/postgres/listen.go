package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// Listen keeps a dedicated connection LISTENing on Channel, and calls kick for every
// notification, until ctx ends. kick must not block (view.Kick merges kicks).
//
// It also calls kick once each time it has (re)connected and is listening: whatever was
// committed while it was not listening is then read by the follower, which always asks for
// ChangesSince its own revision. So a lost connection costs only latency, never a change.
// It reconnects with exponential backoff, and logs only when the state changes, so that a
// long outage does not flood the log.
func (s *Store) Listen(ctx context.Context, kick func(), log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	backoff := listenBackoffMin
	down := false // whether the outage has been logged
	for {
		connected, err := s.listenOnce(ctx, kick, func() {
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
func (s *Store) listenOnce(ctx context.Context, kick, up func()) (connected bool, err error) {
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
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{Channel}.Sanitize()); err != nil {
		return false, fmt.Errorf("listen: %w", err)
	}
	up()
	kick() // catch up on what was committed while nobody listened
	for {
		waitCtx, cancel := context.WithTimeout(ctx, listenIdle)
		_, err := conn.WaitForNotification(waitCtx)
		cancel()
		switch {
		case err == nil:
			kick()
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
