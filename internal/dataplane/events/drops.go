package events

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// warnEvery bounds how often a dropping consumer says so: a full disk must not also flood
// the log with a line per record.
const warnEvery = time.Minute

// dropLog counts the records a file-backed consumer (the audit log, the event ring) lost,
// in a metric and in a log line at most once per warnEvery. It is called from Record on the
// data path too, so the common case is two atomic operations.
type dropLog struct {
	path string // the consumer's file or directory, for the log line
	log  *slog.Logger
	lost prometheus.Counter

	lastWarn  atomic.Int64  // UnixNano of the last warning
	sinceWarn atomic.Uint64 // records dropped since then
}

func (d *dropLog) dropped(n int, msg string, args ...any) {
	if n <= 0 {
		return
	}
	d.lost.Add(float64(n))
	d.sinceWarn.Add(uint64(n))
	now := time.Now().UnixNano()
	last := d.lastWarn.Load()
	if now-last < int64(warnEvery) || !d.lastWarn.CompareAndSwap(last, now) {
		return
	}
	d.log.Warn(msg, append(args, "path", d.path, "dropped", d.sinceWarn.Swap(0))...)
}
