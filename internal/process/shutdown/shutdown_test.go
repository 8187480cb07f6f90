package shutdown

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		sig  os.Signal
		want int
	}{
		{os.Interrupt, 130},
		{syscall.SIGTERM, 143},
	}
	for _, tt := range tests {
		if got := ExitCode(tt.sig); got != tt.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.sig, got, tt.want)
		}
	}
}

func TestOnSignal(t *testing.T) {
	exited := make(chan int, 1)
	ctx, stop := OnSignal(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), func(code int) { exited <- code })
	defer stop()

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the first SIGTERM did not end the context")
	}
	select {
	case code := <-exited:
		t.Fatalf("exit(%d) after one signal", code)
	default:
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-exited:
		if code != 130 {
			t.Errorf("exit(%d) after a second signal (SIGINT), want 130", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second signal did not exit")
	}
}

func TestDrainRunsThePartsAtOnce(t *testing.T) {
	const budget = 200 * time.Millisecond
	bStarted := make(chan struct{})
	var aErr, bErr error
	parts := []Part{
		{Name: "tunnels", Drain: func(ctx context.Context) error {
			// The tunnels never end by themselves: this part spends its whole budget.
			select {
			case <-bStarted:
			case <-ctx.Done():
				aErr = errors.New("the other part did not start while this one drained")
				return nil
			}
			<-ctx.Done()
			return nil
		}},
		{Name: "api", Drain: func(ctx context.Context) error {
			close(bStarted)
			bErr = ctx.Err() // a budget of its own: not spent by the other part
			return nil
		}},
	}
	if err := Drain(parts, budget); err != nil {
		t.Errorf("Drain = %v, want nil: cut work is not a failure", err)
	}
	if aErr != nil || bErr != nil {
		t.Errorf("tunnels: %v; api started with %v", aErr, bErr)
	}
}

func TestDrainJoinsErrorsByPart(t *testing.T) {
	parts := []Part{
		{Name: "proxy", Drain: func(context.Context) error { return nil }},
		{Name: "dns filter", Drain: func(context.Context) error { return errors.New("socket stuck") }},
		{Name: "api", Drain: func(context.Context) error { return errors.New("listener gone") }},
	}
	err := Drain(parts, time.Second)
	for _, want := range []string{"dns filter: socket stuck", "api: listener gone"} {
		if !strings.Contains(errText(err), want) {
			t.Errorf("Drain = %v, want it to say %q", err, want)
		}
	}
	if strings.Contains(errText(err), "proxy") {
		t.Errorf("Drain = %v names the part that stopped well", err)
	}
}

// errText is err's message, "" for nil.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestBounded(t *testing.T) {
	failed := errors.New("listener gone")
	tests := []struct {
		name       string
		expired    bool  // ctx ended before shut returned
		shutErr    error // what shut returns
		wantErr    error
		wantClosed bool
	}{
		{name: "finished in time", wantErr: nil},
		{name: "a failure while ctx runs", shutErr: failed, wantErr: failed},
		{name: "cut at the deadline", expired: true, shutErr: context.DeadlineExceeded, wantClosed: true},
		{name: "finished just as ctx ended", expired: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			closed := false
			drain := Bounded(func(context.Context) error {
				if tt.expired {
					cancel()
				}
				return tt.shutErr
			}, func() error { closed = true; return errors.New("already closed") })
			if err := drain(ctx); !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Errorf("drain = %v, want %v", err, tt.wantErr)
			}
			if closed != tt.wantClosed {
				t.Errorf("closed the rest: %v, want %v", closed, tt.wantClosed)
			}
		})
	}
}
