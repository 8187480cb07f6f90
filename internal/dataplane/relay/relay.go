// Package relay copies bytes both ways between a client and its destination once the
// gateway has decided to let the connection through (DESIGN §4).
//
// Both ends are raw *net.TCPConn and the copy is io.CopyN from one to the other, so that on
// Linux the kernel moves the bytes with splice(2): the relay adds no per-byte work, and
// never sees the bytes in user space. Each direction first waits for bytes with a MSG_PEEK
// and then splices what is queued, so an idle tunnel holds no splice pipe. The only bytes it writes itself are a prefix the
// gateway had to read before deciding (a peeked TLS ClientHello, bytes an HTTP parser
// buffered past a CONNECT request), written to the destination first with a plain Write.
//
// A relay ends when both directions have ended. When one side ends its stream (EOF) the
// relay half-closes the other side's write direction (CloseWrite), so that protocols that
// signal the end of a request by closing their half work through it; the other direction
// goes on until it ends too. An error in either direction (a reset) closes both.
//
// Idle connections are closed: with Idle set, a relay in which no byte moved either way for
// Idle is closed, between Idle and about 1.25×Idle after the last byte. Activity is seen
// without touching the bytes: each direction's read deadline interrupts its splice every
// Idle/8 and the relay looks at what was moved meanwhile. (A direction stuck for a whole
// Idle in one write, to a peer that reads nothing, counts as idle too.)
//
// RunAfter holds the client's bytes back until a gate has seen the first of them, while the
// destination's already flow to the client: the explicit proxy judges the TLS server name
// of a tunnel to an address this way without stalling a server that speaks first.
//
// Cancel closes both connections at once, from any goroutine, with a reason that Run
// reports: the gateway cancels a relay when a new policy denies the connection, when its
// session ends, and at shutdown.
package relay

import (
	"errors"
	"io"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Reasons a relay ends, besides those given to Cancel.
const (
	ReasonEOF   = "eof"   // both sides ended their streams
	ReasonIdle  = "idle"  // no byte moved either way for Idle
	ReasonReset = "reset" // a side reset its connection: an abrupt but ordinary end
	ReasonError = "error" // a read or write failed otherwise
)

// Relay is one relayed connection. Set Client and Upstream (and Idle), then call Run once;
// Cancel may be called from any goroutine, before or during Run.
type Relay struct {
	Client   *net.TCPConn // the sandbox's side
	Upstream *net.TCPConn // the destination's side
	// Idle closes the relay when no byte moved either way for this long; 0 never does.
	Idle time.Duration

	closeOnce sync.Once
	reason    atomic.Pointer[string] // set once, by the first close
	start     time.Time
	up, down  direction
}

// Result is what a relay did.
type Result struct {
	Up       int64         // bytes from the client to the destination, prefix included
	Down     int64         // bytes from the destination to the client
	Duration time.Duration // from Run to the end
	// Reason says why it ended: ReasonEOF, ReasonReset, ReasonIdle, ReasonError, or the reason given
	// to Cancel.
	Reason string
	// Err is the first error of a direction, for logs; nil when both ended with EOF.
	Err error
}

// direction is the state one direction shares with the other for the idle check.
type direction struct {
	last    atomic.Int64 // unix nanoseconds of the last time bytes moved
	checked atomic.Int64 // unix nanoseconds up to which last is known; MaxInt64 when done
}

// Cancel closes both connections; Run returns soon after with reason, unless the relay
// already ended or was cancelled. It is safe to call more than once and concurrently.
func (r *Relay) Cancel(reason string) { r.close(reason) }

func (r *Relay) close(reason string) {
	r.closeOnce.Do(func() {
		r.reason.Store(&reason)
		r.Client.Close()
		r.Upstream.Close()
	})
}

// Run writes prefix to the upstream, then copies both ways until both directions end, and
// closes both connections.
func (r *Relay) Run(prefix []byte) Result {
	return r.RunAfter(func() ([]byte, error) { return prefix, nil })
}

// RunAfter is Run for a connection whose first bytes from the client must be seen before
// any reach the destination, while the destination's bytes already flow to the client (a
// server that speaks first, as SSH and SMTP do, gets its answer). gate reads the client's
// first bytes (from a reader of its own, over Client) and returns them as the prefix; an
// error from gate closes both connections, with ReasonError unless the relay was closed
// already. No byte is copied to the destination before gate returns. gate runs on the
// caller's goroutine; a wait in it for the client counts as idle time.
func (r *Relay) RunAfter(gate func() (prefix []byte, err error)) Result {
	r.start = time.Now()
	now := r.start.UnixNano()
	for _, d := range []*direction{&r.up, &r.down} {
		d.last.Store(now)
		d.checked.Store(now)
	}
	// Until gate returns, the up direction is not in a write that could be stuck: only the
	// bytes moved decide whether the relay is idle.
	r.up.checked.Store(math.MaxInt64)
	var res Result
	var downErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		res.Down, downErr = r.copy(r.Client, r.Upstream, &r.down, &r.up)
	}()
	prefix, upErr := gate()
	if upErr != nil {
		r.close(ReasonError)
	}
	r.up.checked.Store(time.Now().UnixNano())
	if upErr == nil && len(prefix) > 0 {
		n, err := r.Upstream.Write(prefix)
		res.Up += int64(n)
		if err != nil {
			upErr = err
			r.close(ReasonError)
		}
	}
	if upErr == nil {
		var n int64
		n, upErr = r.copy(r.Upstream, r.Client, &r.up, &r.down)
		res.Up += n
	} else {
		r.up.checked.Store(math.MaxInt64)
	}
	wg.Wait()
	res.Duration = time.Since(r.start)
	r.close(ReasonEOF) // the reason of the first close stands
	res.Reason = *r.reason.Load()
	if res.Reason == ReasonError {
		res.Err = errors.Join(upErr, downErr) // after EOF, idle or Cancel, errors are the closing's doing
	}
	return res
}

// WaitClient waits, in a gate of RunAfter, until the client has bytes to read or has ended
// its stream. It returns an error once the relay is closed meanwhile: by Cancel, by the
// other direction, or because no byte moved either way for Idle. (Where there is no
// splice, it returns at once.)
func (r *Relay) WaitClient() error {
	tick := r.Idle / 8
	for {
		if r.Idle > 0 {
			r.Client.SetReadDeadline(time.Now().Add(tick))
		}
		_, err := available(r.Client)
		switch {
		case err == nil:
			r.Client.SetReadDeadline(time.Time{})
			return nil
		case r.Idle > 0 && errors.Is(err, os.ErrDeadlineExceeded) && r.reason.Load() == nil:
			if r.idle(time.Now().UnixNano(), &r.up, &r.down) {
				r.close(ReasonIdle)
				return errors.New("relay: idle before the client's first byte")
			}
			continue
		}
		return err
	}
}

// copy moves src's stream to dst until EOF (then half-closes dst) or an error (then closes
// both), and returns the bytes moved.
func (r *Relay) copy(dst, src *net.TCPConn, self, other *direction) (int64, error) {
	defer self.checked.Store(math.MaxInt64)
	var total int64
	tick := r.Idle / 8
	for {
		if r.Idle > 0 {
			src.SetReadDeadline(time.Now().Add(tick))
		}
		// Wait for bytes without holding a splice pipe, then move exactly what is queued:
		// io.CopyN of a *net.TCPConn into a *net.TCPConn is splice on Linux (see available).
		var n int64
		queued, err := available(src)
		if err == nil && queued > 0 {
			n, err = io.CopyN(dst, src, int64(queued))
			if err == io.EOF {
				err, queued = nil, 0 // the stream ended inside the copy (only off Linux)
			}
		}
		total += n
		now := time.Now().UnixNano()
		if n > 0 {
			self.last.Store(now)
		}
		self.checked.Store(now)
		switch {
		case err == nil && queued > 0:
			continue
		case err == nil: // EOF from src
			dst.CloseWrite()
			return total, nil
		case r.Idle > 0 && errors.Is(err, os.ErrDeadlineExceeded) && r.reason.Load() == nil:
			if r.idle(now, self, other) {
				r.close(ReasonIdle)
				return total, nil
			}
			continue
		}
		if r.reason.Load() == nil {
			// Clients often end with a reset (closing with unread data does it); that is an
			// end, not a fault of the relay, and is told apart for the records.
			if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
				r.close(ReasonReset)
				return total, nil
			}
			r.close(ReasonError)
			return total, err
		}
		return total, nil // closed by Cancel, idle or the other direction's error
	}
}

// idle reports whether no byte moved either way for Idle, as far as both directions know.
// self has just checked in at now; other's bytes are known up to its checked time.
func (r *Relay) idle(now int64, self, other *direction) bool {
	last := max(self.last.Load(), other.last.Load())
	checked := other.checked.Load()
	idle := int64(r.Idle)
	if now-checked >= idle {
		return true // other has been inside one write for Idle: its peer reads nothing
	}
	return min(now, checked)-last >= idle
}
