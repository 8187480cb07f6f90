package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/internal/dataplane/relay"
	"github.com/egressd/egressd/policy"
)

// Close reasons of the proxy's own, besides the relay's and the view's.
const closeShutdown = "shutdown"

// clientConn is one connection from a client: a sequence of requests, of which a CONNECT
// is the last.
type clientConn struct {
	p    *Proxy
	conn *net.TCPConn
	cr   *connReader
	br   *bufio.Reader
	bw   *bufio.Writer // to the client, for plain-HTTP responses
	up   *upstream     // the kept-alive plain-HTTP upstream, if any

	// idle is set while the connection waits for the first byte of a request: Shutdown
	// closes such connections rather than wait for them.
	idle atomic.Bool

	mu      sync.Mutex
	aborted string       // the reason of abort, once called
	relay   *relay.Relay // the tunnel, once there is one
}

func newClientConn(p *Proxy, c *net.TCPConn) *clientConn {
	cc := &clientConn{p: p, conn: c}
	cc.cr = &connReader{conn: c, idle: p.cfg.IdleTimeout}
	cc.br = bufio.NewReaderSize(cc.cr, 4096)
	cc.bw = bufio.NewWriterSize(deadlineWriter{c, p.cfg.IdleTimeout}, 16<<10)
	return cc
}

// abort closes the connection from another goroutine (shutdown).
func (c *clientConn) abort(reason string) {
	c.mu.Lock()
	if c.aborted == "" {
		c.aborted = reason
	}
	r, up := c.relay, c.up
	c.mu.Unlock()
	if r != nil {
		r.Cancel(reason)
	}
	if up != nil {
		up.cancel(reason)
	}
	c.conn.Close()
}

func (c *clientConn) abortReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.aborted
}

// serve reads requests until the connection ends or becomes a tunnel.
func (c *clientConn) serve() {
	defer c.finish()
	for first := true; ; first = false {
		req, hdr, err := c.readRequest(first)
		if err != nil {
			c.readFailed(err)
			return
		}
		sess, ok := c.authenticate(req)
		if !ok {
			return
		}
		if req.Method == http.MethodConnect {
			c.closeUpstream("")
			c.connect(req, sess)
			return
		}
		if !c.forward(req, hdr, sess) {
			return
		}
	}
}

// finish ends the connection: its kept-alive upstream, and the client connection unless
// a relay owns (and has closed) it.
func (c *clientConn) finish() {
	c.closeUpstream("")
	c.mu.Lock()
	tunnel := c.relay != nil
	c.mu.Unlock()
	if !tunnel {
		c.lingeringClose()
	}
}

// readRequest reads the next request's header. The first request must arrive within
// HandshakeTimeout; a later one may wait KeepAliveTimeout for its first byte, and then
// HandshakeTimeout for the rest of its header. It also returns the raw header bytes:
// net/http drops the Host header of a request with an absolute URL, and the proxy must see
// it to refuse one that contradicts the URL.
func (c *clientConn) readRequest(first bool) (*http.Request, []byte, error) {
	cfg := &c.p.cfg
	wait := cfg.KeepAliveTimeout
	if first {
		wait = cfg.HandshakeTimeout
	}
	c.conn.SetReadDeadline(time.Now().Add(wait))
	c.cr.mode, c.cr.rec = modeRaw, c.cr.rec[:0]
	// idle is set before the closed check, and Shutdown sets closed before it looks at
	// idle: either this connection sees the shutdown, or Shutdown sees it idle.
	c.idle.Store(true)
	if c.p.isClosed() {
		return nil, nil, net.ErrClosed
	}
	_, err := c.br.Peek(1)
	c.idle.Store(false)
	if err != nil {
		return nil, nil, err
	}
	c.conn.SetReadDeadline(time.Now().Add(cfg.HandshakeTimeout))
	c.cr.startHeader(cfg.MaxHeaderBytes, c.br)
	req, err := http.ReadRequest(c.br)
	hdr := c.cr.endHeader(c.br)
	c.conn.SetReadDeadline(time.Time{})
	switch {
	case err != nil && (errors.Is(c.cr.err, errHeaderTooLarge) || isTimeout(c.cr.err)):
		// The header was cut by the limit or the deadline. The parser may have taken the
		// cut line for a whole one and failed on it: the cut is the cause, not the parse.
		err = c.cr.err
	case err == nil && len(hdr) > cfg.MaxHeaderBytes:
		// It all came in one read, before the bound applied.
		err = errHeaderTooLarge
	}
	return req, hdr, err
}

// readFailed answers a request that could not be read, when there is one to answer.
func (c *clientConn) readFailed(err error) {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		// The client left, between requests or in the middle of one; or shutdown.
	case isTimeout(err):
		if len(c.cr.rec) > 0 { // part of a header came, too slowly
			c.respond(http.StatusRequestTimeout, nil, "egressd: the request header did not arrive in time\n")
		}
	case errors.Is(err, errHeaderTooLarge):
		c.respond(http.StatusRequestHeaderFieldsTooLarge, nil, "egressd: the request header is too large\n")
	default:
		c.respond(http.StatusBadRequest, nil, "egressd: malformed request: "+err.Error()+"\n")
	}
}

// authenticate checks the request's Proxy-Authorization, answering 407 when it is missing
// or wrong.
func (c *clientConn) authenticate(req *http.Request) (*Source, bool) {
	id, token, ok := basicAuth(req.Header.Get("Proxy-Authorization"))
	if !ok {
		c.respond(http.StatusProxyAuthRequired, []string{"Proxy-Authenticate", `Basic realm="egressd"`},
			"egressd: proxy credentials are required: use the session's proxy_url (http://<session_id>:<token>@<proxy>)\n")
		return nil, false
	}
	sess, err := c.p.cfg.Sessions.Authenticate(id, token)
	if err != nil {
		c.p.log.Debug("proxy credentials refused", "session", id, "client", c.conn.RemoteAddr().String(), "err", err)
		c.respond(http.StatusProxyAuthRequired, []string{"Proxy-Authenticate", `Basic realm="egressd"`},
			"egressd: these proxy credentials match no open session: the session ended, or the token is wrong\n")
		return nil, false
	}
	return sess, true
}

// effectiveNow is the session's effective policy now; a session that ended, or one without
// a policy (which the view never hands out), gets an Effective without layers, which denies
// everything.
func effectiveNow(s *Source) *policy.Effective {
	select {
	case <-s.Live.Done():
		// An ended session keeps its last policy for the connections it is cutting, but
		// a connection that outlived its credentials (a tunnel to port 80 whose next
		// request dials anew, a SOCKS5 request sent after the credentials) opens nothing.
		return denyAll
	default:
	}
	if set := s.Live.Effective(); set != nil {
		return set
	}
	return denyAll
}

var denyAll = policy.NewEffective(nil)

// basicAuth decodes "Basic base64(id:token)".
func basicAuth(h string) (id, token string, ok bool) {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return "", "", false
	}
	id, token, ok = strings.Cut(string(raw), ":")
	return id, token, ok && id != ""
}

// hostHeaders returns the Host header values of a raw request header, parsed by the same
// textproto reader net/http uses, so that the proxy reads what the parser read.
func hostHeaders(raw []byte) ([]string, error) {
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
	if _, err := tp.ReadLine(); err != nil {
		return nil, err
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, err
	}
	return h["Host"], nil
}

// respond writes a complete answer with Connection: close; the caller then closes.
// headers are name, value pairs.
func (c *clientConn) respond(status int, headers []string, body string) {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	for i := 0; i+1 < len(headers); i += 2 {
		b.WriteString(headers[i] + ": " + sanitize(headers[i+1]) + "\r\n")
	}
	fmt.Fprintf(&b, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	c.conn.SetWriteDeadline(time.Now().Add(c.p.cfg.HandshakeTimeout))
	io.WriteString(c.conn, b.String())
}

// lingeringClose closes the connection after an answer without making the kernel reset
// it: unread request bytes at close() would send an RST that can destroy the answer
// before the client reads it. It half-closes, drains briefly, then closes.
func (c *clientConn) lingeringClose() {
	c.conn.CloseWrite()
	c.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.CopyN(io.Discard, c.conn, 256<<10)
	c.conn.Close()
}

// sanitize keeps a header value on one line whatever a reason or rule contains.
func sanitize(v string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, v)
}

// Modes of a connReader.
const (
	modeRaw    = iota // reads as they are: the caller set the deadline
	modeHeader        // bounded and recorded: a request header is being parsed
	modeBody          // each read extends the read deadline by the idle timeout
)

var errHeaderTooLarge = errors.New("request header too large")

// connReader is what the client's bufio.Reader reads from. While a header is parsed it
// bounds and records what is read (net/http's server does the same bounding); while a
// body streams, it keeps the idle deadline moving.
type connReader struct {
	conn   *net.TCPConn
	idle   time.Duration
	mode   int
	remain int    // header bytes still allowed
	rec    []byte // header bytes read, buffered ones included
	err    error  // the last error a header read returned: the limit, a deadline, the client's
}

func (r *connReader) Read(p []byte) (int, error) {
	switch r.mode {
	case modeHeader:
		if r.remain <= 0 {
			r.err = errHeaderTooLarge
			return 0, r.err
		}
		if len(p) > r.remain {
			p = p[:r.remain]
		}
	case modeBody:
		r.conn.SetReadDeadline(time.Now().Add(r.idle))
	}
	n, err := r.conn.Read(p)
	if r.mode == modeHeader {
		r.remain -= n
		r.rec = append(r.rec, p[:n]...)
		if err != nil {
			r.err = err
		}
	}
	return n, err
}

// startHeader starts bounding and recording; what br holds already counts.
func (r *connReader) startHeader(limit int, br *bufio.Reader) {
	buffered, _ := br.Peek(br.Buffered())
	r.rec = append(r.rec[:0], buffered...)
	r.remain = limit - len(buffered)
	r.mode, r.err = modeHeader, nil
}

// endHeader stops recording and returns the header's bytes: what was recorded less what
// br still holds, which belongs to the body or the next request.
func (r *connReader) endHeader(br *bufio.Reader) []byte {
	r.mode = modeBody
	n := max(len(r.rec)-br.Buffered(), 0)
	return r.rec[:n]
}

// deadlineWriter writes to the client with a write deadline of idle from each write, so a
// client that stops reading cannot hold the proxy forever.
type deadlineWriter struct {
	conn *net.TCPConn
	idle time.Duration
}

func (w deadlineWriter) Write(p []byte) (int, error) {
	if w.idle > 0 {
		w.conn.SetWriteDeadline(time.Now().Add(w.idle))
	}
	return w.conn.Write(p)
}

// isTimeout reports a deadline error.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout()
}

func itoa(n int) string { return strconv.Itoa(n) }
