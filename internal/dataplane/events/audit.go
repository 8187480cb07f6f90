package events

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
)

// auditLog writes records as JSON lines from a goroutine of its own, fed by a bounded queue.
// Only that goroutine touches the file, so Reopen is a request to it rather than a lock.
type auditLog struct {
	path    string
	queue   chan Record
	reopens chan chan error
	done    chan struct{}
	log     *slog.Logger
	dropLog

	// Owned by the writer goroutine.
	f       *os.File
	w       *bufio.Writer
	enc     *json.Encoder
	pending int  // records in w not yet flushed to f
	broken  bool // a write failed, maybe in the middle of a line
	err     error
}

func openFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("events: audit log: %w", err)
	}
	return f, nil
}

func openAudit(path string, queue int, lost prometheus.Counter, log *slog.Logger) (*auditLog, error) {
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	a := &auditLog{
		path:    path,
		queue:   make(chan Record, queue),
		reopens: make(chan chan error),
		done:    make(chan struct{}),
		log:     log,
		dropLog: dropLog{path: path, log: log, lost: lost},
	}
	a.use(f)
	go a.run()
	return a, nil
}

func (a *auditLog) use(f *os.File) {
	a.f = f
	if a.w == nil {
		a.w = bufio.NewWriterSize(f, 64<<10)
		a.enc = json.NewEncoder(a.w)
	} else {
		a.w.Reset(f)
	}
}

func (a *auditLog) run() {
	defer close(a.done)
	for {
		select {
		case r, ok := <-a.queue:
			if !ok {
				a.err = a.finish()
				return
			}
			a.write(&r)
			// Flush when the queue is empty: one write(2) per burst, not per record, and
			// nothing left sitting in the buffer while the gateway is idle.
			if len(a.queue) == 0 {
				_ = a.flush() // a failure is counted and logged by flush
			}
		case reply := <-a.reopens:
			// What was recorded before Reopen was called belongs in the old file. Those
			// records are in the queue already; a closed queue still yields them.
			for n := len(a.queue); n > 0; n-- {
				r := <-a.queue
				a.write(&r)
			}
			reply <- a.swap()
		}
	}
}

func (a *auditLog) write(r *Record) {
	if a.broken {
		// End whatever half line the failed write left, so that the next line parses.
		a.broken = false
		_ = a.w.WriteByte('\n')
	}
	if err := a.enc.Encode(r); err != nil {
		a.fail(err, a.pending+1)
		return
	}
	a.pending++
}

func (a *auditLog) flush() error {
	if err := a.w.Flush(); err != nil {
		a.fail(err, a.pending)
		return err
	}
	a.pending = 0
	return nil
}

// fail counts the records that a failed write lost and starts the buffer afresh: a
// bufio.Writer that has failed once fails forever.
func (a *auditLog) fail(err error, lost int) {
	a.w.Reset(a.f)
	a.pending = 0
	a.broken = true
	a.dropped(lost, "writing the audit log failed; records are being dropped", "err", err)
}

// swap opens the path anew and moves to it. If it cannot be opened, writing goes on to the
// old file, which is better than losing records.
func (a *auditLog) swap() error {
	f, err := openFile(a.path)
	if err != nil {
		return err
	}
	old := a.f
	_ = a.flush() // a failure is counted and logged by flush; the new file starts clean
	a.use(f)
	a.broken = false
	if err := errors.Join(old.Sync(), old.Close()); err != nil {
		a.log.Warn("closing the rotated audit log", "path", a.path, "err", err)
	}
	return nil
}

func (a *auditLog) reopen() error {
	reply := make(chan error, 1)
	select {
	case a.reopens <- reply:
		return <-reply
	case <-a.done:
		return ErrClosed
	}
}

// finish flushes, syncs and closes the file once the queue is drained.
func (a *auditLog) finish() error {
	err := errors.Join(a.flush(), a.f.Sync(), a.f.Close())
	if err != nil {
		return fmt.Errorf("events: closing the audit log: %w", err)
	}
	return nil
}

// close tells the writer that no more records come, and waits for it to write them all.
func (a *auditLog) close() error {
	close(a.queue)
	<-a.done
	return a.err
}
