package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/internal/dataplane/dialer"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/relay"
	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/policy"
)

// upstream is a plain-HTTP connection to one destination, kept alive across the client's
// requests to that same host:port.
type upstream struct {
	sess   *Source
	target target      // as the client named it
	conn   policy.Conn // as it was allowed: the name, the address dialled, the port
	// opened is the address a pinned name was dialled at, as the IP literal it was judged
	// as too (zero for a name the gateway resolved): the upstream must stay allowed as both.
	opened  policy.Conn
	allowed policy.Decision
	tc      *net.TCPConn
	cc      *countingConn
	br      *bufio.Reader
	bw      *bufio.Writer
	start   time.Time
	untrack func()
	reused  bool // it has carried a request already

	mu     sync.Mutex
	reason string // why it was cancelled, if it was
}

// cancel closes the connection from any goroutine (a new policy, shutdown).
func (u *upstream) cancel(reason string) {
	u.mu.Lock()
	if u.reason == "" {
		u.reason = reason
	}
	u.mu.Unlock()
	u.tc.Close()
}

func (u *upstream) cancelled() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.reason
}

// forward serves one plain-HTTP request: check it, decide, forward it on a new or kept-alive
// upstream connection, stream the response back. It reports whether the client connection
// can carry another request.
func (c *clientConn) forward(req *http.Request, hdr []byte, s *Source) bool {
	authority, err := absoluteAuthority(req.RequestURI)
	var t target
	if err == nil {
		t, err = parseAuthority(authority, 80)
	}
	if err != nil {
		c.record(events.KindRequest, s, policy.Conn{Transport: policy.TCP}, deny(policy.ReasonBadRequest, ruleBadTarget), 0)
		c.refuse(req.Method+" "+clip(req.RequestURI), s, deny(policy.ReasonBadRequest, strings.TrimPrefix(err.Error(), errBadTarget.Error()+": ")))
		return false
	}
	what := req.Method + " http://" + t.hostHeader(80) + "/"
	if t.nameErr != nil {
		d := deny(policy.ReasonBadName, t.nameErr.Error())
		c.record(events.KindRequest, s, policy.Conn{Port: t.port, Transport: policy.TCP}, d, 0)
		c.refuse(what, s, d)
		return false
	}
	if d, other, ok := checkHost(hdr, t); !ok {
		conn := t.conn()
		if od, denied := deniedName(s, other, t.port); denied {
			d, conn = od, policy.Conn{Host: other.host, Port: t.port, Transport: policy.TCP}
		}
		c.record(events.KindRequest, s, conn, d, 0)
		c.refuse(what, s, d)
		return false
	}
	return c.send(req, s, t, what)
}

// deniedName judges a name that a request shows besides its destination (a Host that
// contradicts the URL or the CONNECT), which is refused in any case. A name is judged
// wherever it is seen (DESIGN §4), on the port the request goes to: when the policy denies
// it, that denial is the answer and the record's, so that a denied name is reported as
// denied rather than as a mismatch.
func deniedName(s *Source, other target, port uint16) (policy.Decision, bool) {
	if other.host == "" {
		return policy.Decision{}, false
	}
	d := effectiveNow(s).Decide(policy.Conn{Host: other.host, Port: port, Transport: policy.TCP})
	return d, !d.Allow
}

// send forwards a request that was parsed and checked, for s to t: on the kept-alive
// upstream connection or a new one, decided anew. It is the explicit and the transparent
// proxy's one path for plain HTTP, and reports whether the client connection can carry
// another request.
func (c *clientConn) send(req *http.Request, s *Source, t target, what string) bool {
	if names := c.secretsOverHTTP(req.Header, req.URL, s, t.host); len(names) > 0 {
		d := deny(policy.ReasonSecretOverHTTP, "a secret's placeholder is replaced only inside TLS: "+strings.Join(names, ", "))
		c.record(events.KindRequest, s, t.conn(), d, 0)
		c.refuse(what, s, d)
		return false
	}
	if t.host != "" && c.p.ix.intercepts(s, t.host) {
		// Plain HTTP to an intercepted host: its requests are read one by one here, so each
		// is decided on its method and path too, and the connection is judged as
		// intercepted.
		d := effectiveNow(s).DecideRequest(policy.Request{Host: t.host, IP: t.pin, Port: t.port, Method: req.Method, Path: requestPath(req)})
		if !d.Allow {
			c.record(events.KindRequest, s, t.conn(), d, 0)
			c.refuse(what, s, d)
			return false
		}
		t.intercepted = true
	}
	for attempt := 0; ; attempt++ {
		u, ok := c.upstreamFor(s, t, what)
		if !ok {
			return false
		}
		keep, retry := c.exchange(req, t, u)
		if retry && attempt == 0 {
			// A kept-alive connection the server had closed: the request (without a body)
			// goes again on a new one, as net/http's Transport does.
			c.closeUpstream("")
			continue
		}
		return keep
	}
}

// requestPath is the path of req's target as sent (escaped, no query), for DecideRequest.
func requestPath(req *http.Request) string {
	if req.URL == nil {
		return ""
	}
	p := req.URL.EscapedPath()
	if p == "" && req.URL.Opaque == "" {
		p = "/"
	}
	return p
}

// checkHost refuses a Host header that names another destination than the URL. other is
// the Host's destination, when it is one.
func checkHost(hdr []byte, t target) (d policy.Decision, other target, ok bool) {
	hosts, err := hostHeaders(hdr)
	if err != nil || len(hosts) > 1 {
		return deny(policy.ReasonHostMismatch, ruleHost), target{}, false
	}
	if len(hosts) == 0 {
		return policy.Decision{}, target{}, true // HTTP/1.0 without Host: the URL says it all
	}
	h, err := parseAuthority(hosts[0], 80)
	if err != nil || h.nameErr != nil || h != t {
		if err != nil || h.nameErr != nil {
			h = target{}
		}
		return deny(policy.ReasonHostMismatch, ruleHost+" ("+t.hostHeader(80)+"), not "+clip(sanitize(hosts[0]))), h, false
	}
	return policy.Decision{}, target{}, true
}

// upstreamFor returns a connection allowed for s to t: the kept-alive one if it goes there
// and the policy still allows it, or a new one. It records the decisions and answers the
// client itself when it refuses.
func (c *clientConn) upstreamFor(s *Source, t target, what string) (*upstream, bool) {
	if u := c.up; u != nil {
		if u.sess.same(s) && u.target == t && u.cancelled() == "" {
			set := effectiveNow(s)
			if d := set.Decide(u.conn); d.Allow && (!u.opened.IP.IsValid() || set.Decide(u.opened).Allow) {
				c.record(events.KindRequest, s, u.conn, d, 0)
				return u, true
			}
		}
		c.closeUpstream("")
	}
	u, ok := c.dialUpstream(events.KindRequest, s, t, what, c.httpFront(s))
	if ok {
		c.record(events.KindRequest, s, u.conn, u.allowed, 0)
	}
	return u, ok
}

// dialUpstream decides t for s, dials it and keeps it as the client connection's upstream.
// It records the connection; a refusal is recorded as kind (the request, or the CONNECT
// that asked for the upstream) and answered to the client through f.
func (c *clientConn) dialUpstream(kind string, s *Source, t target, what string, f front) (*upstream, bool) {
	conn := t.conn()
	if !c.p.acquire(s) {
		d := c.p.tooMany(s)
		c.record(kind, s, conn, d, 0)
		f.refuse(what, d)
		return nil, false
	}
	dial := c.p.cfg.Dialer.Dial
	if t.pin.IsValid() {
		dial = c.p.dialPinned
	}
	res, err := dial(c.p.ctx, effectiveNow(s), conn)
	switch {
	case errors.Is(err, dialer.ErrDenied):
		c.p.release(s)
		c.record(kind, s, res.Target, res.Decision, 0)
		f.refuse(what, res.Decision)
		return nil, false
	case err != nil:
		c.p.release(s)
		c.record(events.KindConnect, s, res.Target, res.Decision, res.Latency())
		c.recordClose(s, res.Target, relay.Result{Reason: relay.ReasonError})
		if kind != events.KindConnect {
			c.record(kind, s, res.Target, res.Decision, 0)
		}
		c.p.log.Info("HTTP destination unreachable", "session", s.ID, "vm", s.VMID, "target", t.String(), "err", err)
		f.unreachable(t.String(), err)
		return nil, false
	}
	cc := &countingConn{tc: res.Conn, idle: c.p.cfg.IdleTimeout}
	u := &upstream{
		sess: s, target: t, conn: res.Target, allowed: res.Decision, tc: res.Conn, cc: cc,
		br: bufio.NewReaderSize(cc, 16<<10), bw: bufio.NewWriterSize(cc, 16<<10),
		start: time.Now(),
	}
	c.mu.Lock()
	c.up = u
	aborted := c.aborted
	c.mu.Unlock()
	if aborted != "" {
		u.cancel(aborted)
	}
	u.untrack = s.Live.Track(res.Target, u.cancel)
	if t.pin.IsValid() {
		// Dialled at an address the client chose: a policy that no longer opens that
		// address cuts it, even if it allows the name elsewhere.
		u.opened = policy.Conn{IP: t.pin, Port: t.port, Transport: policy.TCP, IPLiteral: true}
		named, opened := u.untrack, s.Live.Track(u.opened, u.cancel)
		u.untrack = func() { named(); opened() }
	}
	c.record(events.KindConnect, s, res.Target, res.Decision, res.Latency())
	return u, true
}

// dialPinned dials a name bound to an address (target.pin): the name is judged at that
// address, as policy.Set.Decide judges a connection with both (denied_domains first, then
// the address's allowed_cidrs, then the web rules with a public address), and the address
// is dialled as an IP literal, which the dialer judges again. The result is the
// connection as the name at the address.
func (p *Proxy) dialPinned(ctx context.Context, set *policy.Effective, named policy.Conn) (dialer.Result, error) {
	nd := set.Decide(named)
	if !nd.Allow {
		return dialer.Result{Target: named, Decision: nd}, fmt.Errorf("proxy: %s at %s: %s: %w", named.Host, named.IP, nd.Reason, dialer.ErrDenied)
	}
	res, err := p.cfg.Dialer.Dial(ctx, set, policy.Conn{IP: named.IP, Port: named.Port, Transport: policy.TCP, IPLiteral: true})
	if err != nil {
		return res, err
	}
	res.Target, res.Decision = named, atAddress(nd, res.Decision)
	return res, nil
}

// atAddress is the decision on a name seen at an address the client chose, from the
// policy's decision on both (named) and on the address alone (addr): named's, unless it
// allows outright while a monitor layer would have refused the address itself.
func atAddress(named, addr policy.Decision) policy.Decision {
	if named.Allow && !named.WouldDeny && addr.WouldDeny {
		return addr
	}
	return named
}

// closeUpstream ends the kept-alive upstream connection, if any, and records its close.
func (c *clientConn) closeUpstream(reason string) {
	c.mu.Lock()
	u := c.up
	c.up = nil
	c.mu.Unlock()
	if u == nil {
		return
	}
	u.untrack()
	u.tc.Close()
	c.p.release(u.sess)
	if r := u.cancelled(); r != "" {
		reason = r
	}
	if reason == "" {
		reason = relay.ReasonEOF
	}
	c.recordClose(u.sess, u.conn, relay.Result{
		Up: u.cc.up.Load(), Down: u.cc.down.Load(), Duration: time.Since(u.start), Reason: reason,
	})
}

// Hop-by-hop headers (RFC 9110 §7.6.1), and the proxy's own: they end at the proxy.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = textprotoKey(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

func textprotoKey(s string) string { return http.CanonicalHeaderKey(strings.TrimSpace(s)) }

// exchange forwards req to u and the response back. It reports whether the client
// connection can go on, and whether a failure on a reused connection should be retried.
func (c *clientConn) exchange(req *http.Request, t target, u *upstream) (keep, retry bool) {
	reused := u.reused
	u.reused = true
	clientClose := req.Close || !req.ProtoAtLeast(1, 1)

	out := req.WithContext(c.p.ctx)
	out.URL = &url.URL{Path: req.URL.Path, RawPath: req.URL.RawPath, RawQuery: req.URL.RawQuery}
	out.Host = t.hostHeader(80)
	out.Close = false // the upstream connection's life is the proxy's business
	// Trailers end here: one could carry what the header could not (a second Host), and
	// nothing judges them.
	out.Trailer = nil
	out.Header = req.Header.Clone()
	removeHopHeaders(out.Header)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // net/http would add its own; send none
	}
	noBody := req.Body == nil || req.Body == http.NoBody
	body := &clientBody{r: req.Body, src: c.br, flush: u.bw}
	if !noBody {
		out.Body = body
	}

	// The request goes up on its own goroutine while the response comes down: a server may
	// answer (100 Continue, or an error) before it has read the whole body.
	wdone := make(chan error, 1)
	go func() {
		err := out.Write(copyTarget{u.bw})
		if err == nil {
			err = u.bw.Flush()
		}
		if body.err != nil {
			u.tc.Close() // the client left mid-body: nothing will answer this request
		}
		wdone <- err
	}()

	resp, err := c.readResponse(u, out)
	if err != nil {
		u.tc.Close()
		if noBody {
			<-wdone // the request is written or failed: nothing left to wait for
			if reused && u.cc.down.Load() == u.cc.downAtStart && u.cancelled() == "" {
				return false, true
			}
		}
		if berr := body.malformed(); berr != nil {
			// The server did not answer because the client's body made no sense: the
			// client's fault, not the gateway's.
			c.respond(http.StatusBadRequest, nil, "egressd: malformed request body: "+berr.Error()+"\n")
			c.conn.Close()
			<-wdone
			c.closeUpstream(relay.ReasonError)
			return false, false
		}
		c.p.log.Info("HTTP upstream failed", "session", u.sess.ID, "vm", u.sess.VMID, "target", t.String(), "err", err)
		if r := u.cancelled(); r != "" {
			c.cut(req.Method+" http://"+t.hostHeader(80)+"/", u, r)
		} else {
			c.badGateway(t.String(), err)
		}
		if !noBody {
			c.conn.Close() // the writer may be waiting for the rest of the body
			<-wdone
		}
		c.closeUpstream(relay.ReasonError)
		return false, false
	}

	removeHopHeaders(resp.Header)
	resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1
	upKeep := !resp.Close
	resp.Trailer = nil // as the request's: trailers end at the proxy
	if resp.ContentLength < 0 && len(resp.TransferEncoding) == 0 && resp.Body != http.NoBody && !clientClose {
		// A body that ends when the server closes: chunk it, so the client's connection
		// can be kept.
		resp.TransferEncoding = []string{"chunked"}
	}
	resp.Close = clientClose
	resp.Body = &flushingBody{r: resp.Body, src: u.br, dst: c.bw}
	err = resp.Write(copyTarget{c.bw})
	if err == nil {
		err = c.bw.Flush()
	}
	resp.Body.Close()

	// The response is complete. The request is too, unless the server answered without
	// reading the whole body; then neither connection can carry another request.
	if !noBody && !body.eof.Load() {
		u.tc.Close()
		c.conn.Close()
		<-wdone
		c.closeUpstream("")
		return false, false
	}
	werr := <-wdone
	if err != nil || werr != nil || !upKeep || u.cancelled() != "" {
		reason := ""
		if err != nil || werr != nil {
			reason = relay.ReasonError
		}
		c.closeUpstream(reason)
	}
	if err != nil {
		return false, false
	}
	u.cc.downAtStart = u.cc.down.Load()
	return !clientClose && werr == nil, false
}

// readResponse reads the final response to out, passing 1xx interim responses (100
// Continue, 103 Early Hints) on to the client.
func (c *clientConn) readResponse(u *upstream, out *http.Request) (*http.Response, error) {
	for range 10 {
		resp, err := http.ReadResponse(u.br, out)
		if err != nil {
			return nil, err
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, errors.New("the server switched protocols, which the proxy does not relay (Upgrade is not forwarded)")
		case resp.StatusCode >= 200:
			return resp, nil
		}
		removeHopHeaders(resp.Header)
		fmt.Fprintf(c.bw, "HTTP/1.1 %03d %s\r\n", resp.StatusCode, http.StatusText(resp.StatusCode))
		resp.Header.Write(c.bw)
		io.WriteString(c.bw, "\r\n")
		if err := c.bw.Flush(); err != nil {
			return nil, err
		}
	}
	return nil, errors.New("too many interim (1xx) responses")
}

// copyTarget is the writer a message is written to when its body flushes that same
// bufio.Writer before it blocks (clientBody, flushingBody). It hides the buffer's ReadFrom:
// io.Copy would otherwise hand the body a slice of the buffer's own memory to read into,
// and a flush from inside that read moves the buffer under the copy, so that the bytes
// read land behind what was flushed and the header goes out again as the body. With
// ReadFrom hidden, io.Copy reads into a buffer of its own and then writes. WriteByte tells
// Request.Write that the writer is buffered already, so that it adds no buffer of its own,
// which the body's flush would not reach (the header of a request that waits for 100
// Continue would stay in it).
type copyTarget struct{ w *bufio.Writer }

func (t copyTarget) Write(p []byte) (int, error) { return t.w.Write(p) }
func (t copyTarget) WriteByte(b byte) error      { return t.w.WriteByte(b) }

// clientBody is a request body on its way up. Before it waits for the client, it flushes
// what is buffered for the server (the header, for a client that waits for 100 Continue),
// and it keeps the client's read error apart from the server's write errors.
type clientBody struct {
	r     io.ReadCloser
	src   *bufio.Reader
	flush *bufio.Writer
	eof   atomic.Bool // the whole body was read
	err   error       // the client's read error, if any
	// bad is the error of a body whose framing is broken (a bad chunk), set before the
	// writer closes the upstream connection for it.
	bad atomic.Pointer[error]
}

// malformed returns the error of a body whose framing was broken, or nil.
func (b *clientBody) malformed() error {
	if e := b.bad.Load(); e != nil {
		return *e
	}
	return nil
}

func (b *clientBody) Read(p []byte) (int, error) {
	if b.src.Buffered() == 0 {
		if err := b.flush.Flush(); err != nil {
			return 0, err
		}
	}
	n, err := b.r.Read(p)
	switch {
	case err == io.EOF:
		b.eof.Store(true)
	case err != nil:
		b.err = err
		if framingError(err) {
			b.bad.Store(&err)
		}
	}
	return n, err
}

// framingError tells a body that makes no sense (net/http's chunked reader refusing a
// chunk) from a client that left or stalled.
func framingError(err error) bool {
	var ne net.Error
	return !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) && !errors.As(err, &ne)
}

func (b *clientBody) Close() error { return b.r.Close() }

// flushingBody is a response body on its way down: before it waits for the server, it
// flushes what is buffered for the client, so that a streamed response (server-sent
// events, a slow download) reaches the client as it comes, and a fast one in full buffers.
type flushingBody struct {
	r   io.ReadCloser
	src *bufio.Reader
	dst *bufio.Writer
}

func (b *flushingBody) Read(p []byte) (int, error) {
	if b.src.Buffered() == 0 {
		if err := b.dst.Flush(); err != nil {
			return 0, err
		}
	}
	return b.r.Read(p)
}

func (b *flushingBody) Close() error { return b.r.Close() }

// countingConn is the upstream connection as its buffers see it: it counts bytes each way
// and moves the idle deadline with every read and write.
type countingConn struct {
	tc          *net.TCPConn
	idle        time.Duration
	up, down    atomic.Int64
	downAtStart int64 // down when the current exchange began
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.tc.SetReadDeadline(time.Now().Add(c.idle))
	n, err := c.tc.Read(p)
	c.down.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.tc.SetWriteDeadline(time.Now().Add(c.idle))
	n, err := c.tc.Write(p)
	c.up.Add(int64(n))
	return n, err
}

// clip shortens what a client sent before it goes into a message.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// cut answers a request whose upstream connection was cut while it was in flight: by a
// tightened policy (the refusal of the policy now, with its code), by the end of the session
// (no_policy: nothing allows it any more), or by the proxy's shutdown (503, no decision).
// The close reason is never a reason code, so it never reaches X-Egress-Reason.
func (c *clientConn) cut(what string, u *upstream, closeReason string) {
	switch closeReason {
	case closeShutdown:
		c.respond(http.StatusServiceUnavailable, nil, "egressd: "+what+" was cut: egressd is shutting down\n")
		return
	case view.CancelSessionEnded:
		c.refuse(what, u.sess, policy.Refused(policy.ReasonNoPolicy, "the session ended, or its VM was deleted, while the request was in flight"))
		return
	}
	if d := effectiveNow(u.sess).Decide(u.conn); !d.Allow {
		c.refuse(what, u.sess, d)
		return
	}
	// Cut for a policy that allows it again by now: the client may simply retry.
	c.respond(http.StatusServiceUnavailable, nil, "egressd: "+what+" was cut by a policy change; retry\n")
}
