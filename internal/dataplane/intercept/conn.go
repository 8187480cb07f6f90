package intercept

import (
	"context"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// clientConn is the sandbox's connection as the TLS server reads it: the caller's prefix
// first, then the connection; bytes counted each way; a write deadline of the idle timeout
// from every write (so that a client that takes nothing cannot hold a response, or an
// upgraded stream, forever); and a channel closed when it closes.
type clientConn struct {
	net.Conn
	sni    string // for the certificate (Engine.certificate)
	prefix []byte // read by one goroutine at a time: the TLS record layer's
	idle   time.Duration

	up, down atomic.Int64
	// writeBy is a write deadline set by the TLS or HTTP layer (unix nanoseconds; 0 for
	// none): a write's own idle deadline never extends past it.
	writeBy atomic.Int64

	closeOnce sync.Once
	closed    chan struct{}
}

func newClientConn(c net.Conn, prefix []byte, sni string, idle time.Duration) *clientConn {
	return &clientConn{Conn: c, prefix: prefix, sni: sni, idle: idle, closed: make(chan struct{})}
}

func (c *clientConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		c.up.Add(int64(n))
		return n, nil
	}
	n, err := c.Conn.Read(p)
	c.up.Add(int64(n))
	return n, err
}

func (c *clientConn) Write(p []byte) (int, error) {
	dl := time.Now().Add(c.idle)
	if by := c.writeBy.Load(); by != 0 && by < dl.UnixNano() {
		dl = time.Unix(0, by)
	}
	c.Conn.SetWriteDeadline(dl)
	n, err := c.Conn.Write(p)
	c.down.Add(int64(n))
	return n, err
}

func (c *clientConn) SetDeadline(t time.Time) error {
	c.setWriteBy(t)
	return c.Conn.SetDeadline(t)
}

func (c *clientConn) SetWriteDeadline(t time.Time) error {
	c.setWriteBy(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *clientConn) setWriteBy(t time.Time) {
	if t.IsZero() {
		c.writeBy.Store(0)
	} else {
		c.writeBy.Store(t.UnixNano())
	}
}

func (c *clientConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { close(c.closed) })
	return err
}

// stateKey is the context key of a connection's *connState.
type stateKey struct{}

// connState is one served connection, as its requests see it.
type connState struct {
	e     *Engine
	c     *Conn
	ctx   context.Context // ends when the connection ends or is cut
	proto string          // "h2" or "http/1.1"

	handlers tracker
	requests atomic.Int64

	trOnce sync.Once
	tr     *http.Transport // made at the first forwarded request

	upMu     sync.Mutex
	ups      map[*upstreamConn]struct{}
	upClosed bool

	// Every value put in a request of the connection, with its placeholder: an answer is
	// redacted of all of them, not only its own request's, since the origin may echo an
	// earlier request's key (a debugging endpoint) or put it in an error that fails
	// another stream (an HTTP/2 GOAWAY's debug data).
	putMu sync.Mutex
	puts  []secretPut
}

// maxConnPuts bounds the values a connection remembers (rotations add some); beyond it
// the oldest are forgotten.
const maxConnPuts = 256

// remember adds the values put in a request to the connection's.
func (st *connState) remember(puts []secretPut) {
	if len(puts) == 0 {
		return
	}
	st.putMu.Lock()
	defer st.putMu.Unlock()
	for _, p := range puts {
		if !slices.Contains(st.puts, p) {
			st.puts = append(st.puts, p)
		}
	}
	if n := len(st.puts) - maxConnPuts; n > 0 {
		st.puts = slices.Delete(st.puts, 0, n)
	}
}

// putsNow is every value put in a request of the connection so far.
func (st *connState) putsNow() []secretPut {
	st.putMu.Lock()
	defer st.putMu.Unlock()
	return slices.Clone(st.puts)
}

// cutReason says why a request's exchange ended before its response did, once its context
// has ended: the connection's cut reason, shutdown, or the client leaving.
func (st *connState) cutReason() string {
	if r := st.c.cancelled(); r != "" {
		return r
	}
	if st.ctx.Err() != nil && context.Cause(st.ctx) != errConnDone {
		return ReasonShutdown
	}
	return "client"
}

// closeUpstream closes every upstream connection of the client connection, idle or not,
// and refuses new ones: the transport may still be dialling for a request that was
// cancelled.
func (st *connState) closeUpstream() {
	st.upMu.Lock()
	st.upClosed = true
	ups := st.ups
	st.ups = nil
	st.upMu.Unlock()
	for u := range ups {
		u.Conn.Close()
	}
	if st.tr != nil { // no handler runs any more: trOnce is done, or never will be
		st.tr.CloseIdleConnections()
	}
}

// tracker counts the handlers running on a connection, so that Serve returns only after
// the last one.
type tracker struct {
	mu      sync.Mutex
	n       int
	closing bool
	zero    chan struct{}
}

// enter registers a handler; false once the connection is ending.
func (t *tracker) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return false
	}
	t.n++
	return true
}

func (t *tracker) leave() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 && t.zero != nil {
		close(t.zero)
		t.zero = nil
	}
}

// wait refuses new handlers and waits for the running ones.
func (t *tracker) wait() {
	t.mu.Lock()
	t.closing = true
	if t.n == 0 {
		t.mu.Unlock()
		return
	}
	z := make(chan struct{})
	t.zero = z
	t.mu.Unlock()
	<-z
}
