// Package shutdown ends a daemon in order. The first SIGINT or SIGTERM starts a drain in
// which every part (a proxy, the HTTP API, the DNS filter) stops taking new work and finishes
// what it has, all at once, each within its own budget; what is still open at the end of its
// budget is closed. A second signal does not wait for the drain: the process exits at once.
//
// Each part has a budget of its own because a shared one is spent by whichever part waits
// longest: a tunnel that never ends by itself would leave the HTTP API an expired deadline,
// and an orderly stop would look like a failure.
package shutdown

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// ExitCode is the exit status after a second signal: 128 plus the signal's number, as a
// shell reports a process that a signal ended (130 for SIGINT, 143 for SIGTERM).
func ExitCode(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 1
}

// OnSignal returns a context that ends at the first SIGINT or SIGTERM. At the second, it
// logs and calls exit with ExitCode of that signal, without waiting for anything: the
// operator has asked twice. stop releases the signals (the default action applies again).
func OnSignal(parent context.Context, log *slog.Logger, exit func(code int)) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 2)
	// Notified before the first signal, so that a second one sent at once is not lost.
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-sigs:
			log.Info("signal received: draining; send it again to exit at once", "signal", sig.String())
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-sigs:
			log.Warn("second signal: exiting without waiting for the drain", "signal", sig.String(), "exit_code", ExitCode(sig))
			exit(ExitCode(sig))
		case <-done:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			cancel()
		})
	}
}

// Part is one thing to stop.
type Part struct {
	Name string
	// Drain stops taking new work, waits for the work in flight until ctx ends, and then
	// closes what is left. It returns an error only for a failure to stop, not for work that
	// the end of ctx cut short.
	Drain func(ctx context.Context) error
}

// Drain runs every part's Drain at once, each with a budget of its own, and returns when all
// have returned, with their errors joined (each prefixed with the part's name).
func Drain(parts []Part, budget time.Duration) error {
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), budget)
			defer cancel()
			if err := p.Drain(ctx); err != nil {
				errs[i] = fmt.Errorf("%s: %w", p.Name, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Bounded adapts a Shutdown of the net/http kind, which returns an error when ctx ends before
// the work does, to Part.Drain's contract: that end is not a failure. Then closeRest, when not
// nil, cuts what is left (its error is not reported: what it closes may be gone already). An
// error of shut while ctx still runs is a failure to stop, and is returned.
func Bounded(shut func(context.Context) error, closeRest func() error) func(context.Context) error {
	return func(ctx context.Context) error {
		err := shut(ctx)
		switch {
		case err == nil:
			return nil
		case ctx.Err() == nil:
			return err
		}
		if closeRest != nil {
			_ = closeRest()
		}
		return nil
	}
}
