package intercept

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/policy"
)

// copyBuf is the size of the buffers response bodies are copied through.
const copyBuf = 32 << 10

// Rules of the engine's own refusals.
const (
	ruleHost    = "a request on an intercepted connection must be for its TLS server name"
	ruleConnect = "CONNECT is not served inside an intercepted connection"
)

// handler is the HTTP handler of every intercepted connection; it finds the connection in
// the request's context.
type handler struct{}

func (handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st, _ := r.Context().Value(stateKey{}).(*connState)
	if st == nil || !st.handlers.enter() {
		panic(http.ErrAbortHandler) // the connection is ending: no answer
	}
	defer st.handlers.leave()
	st.requests.Add(1)
	ex := &exchange{w: w, st: st, start: time.Now(), method: r.Method}
	// finish runs when a panic (an aborted response) goes through, too: every request is
	// recorded.
	defer ex.finish()
	st.serve(ex, r)
}

// serve decides one request and forwards it, or refuses it.
func (st *connState) serve(ex *exchange, r *http.Request) {
	sni := st.c.SNI
	forward, judged, perr := requestPath(r.URL)
	ex.path = recordedPath(judged)
	if perr != nil {
		ex.path = recordedPath(r.URL.Path)
	}
	if !st.sameHost(r.Host) {
		ex.host = r.Host
		ex.refuse(http.StatusMisdirectedRequest, policy.Refused(policy.ReasonHostMismatch,
			ruleHost+" ("+sni+"), not "+clip(sanitize(r.Host))))
		return
	}
	switch {
	case perr != nil:
		ex.refuse(http.StatusBadRequest, policy.Refused(policy.ReasonBadRequest, perr.Error()))
		return
	case r.Method == http.MethodConnect:
		ex.refuse(http.StatusBadRequest, policy.Refused(policy.ReasonBadRequest, ruleConnect))
		return
	}
	// The path decided is the one that goes up, escaped as sent (dot segments resolved):
	// the policy decodes it itself, so the decoded path would be decoded twice ("%252e%252e"
	// a dot segment to the decision, a literal "%2e%2e" segment to the origin).
	d := st.c.Policy.DecideRequest(sni, r.Method, forward)
	if !d.Allow {
		ex.refuse(http.StatusForbidden, d)
		return
	}
	ex.decision = d
	if st.c.Secrets != nil {
		scan := secretScan{secrets: st.c.Secrets, host: sni}
		scan.header(r.Header)
		// The parts never rewritten: a placeholder there for another host refuses the
		// request as one in a header value does. The path and query are searched as sent
		// and decoded ("%2D" for '-').
		scan.refuseIn(r.URL.RawPath)
		scan.refuseIn(r.URL.Path)
		scan.refuseIn(r.URL.RawQuery)
		if q, err := url.QueryUnescape(r.URL.RawQuery); err == nil {
			scan.refuseIn(q)
		}
		switch {
		case len(scan.refused) > 0:
			ex.secrets = scan.refused
			ex.refuse(http.StatusForbidden, policy.Refused(ReasonSecretNotForHost,
				"secret "+strings.Join(scan.refused, ", ")+" goes only to its own domains, and "+sni+" is not one of them"))
			return
		case len(scan.invalid) > 0:
			ex.secrets = scan.invalid
			ex.fail(http.StatusBadGateway, "the value of secret "+strings.Join(scan.invalid, ", ")+
				" cannot go in an HTTP header (it holds a control character): rotate it")
			return
		}
		scan.apply(r.Header)
		ex.secrets = scan.applied
		st.remember(scan.put)
	}
	st.forward(ex, r, forward, judged)
}

// sameHost reports whether a request's Host (or :authority) names the connection's SNI:
// the name in NormalizeName form, with no port or port 443.
func (st *connState) sameHost(h string) bool {
	if h == st.c.SNI {
		return true
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		host, port = h, ""
	}
	if port != "" && port != "443" {
		return false
	}
	n, err := policy.NormalizeName(host)
	return err == nil && n == st.c.SNI
}

// Hop-by-hop headers (RFC 9110 §7.6.1, and the proxies' own): they end here, both ways.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// endToEnd copies h without its hop-by-hop headers, those the Connection header names
// included.
func endToEnd(h http.Header) http.Header {
	out := make(http.Header, len(h))
	for k, vv := range h {
		out[k] = vv
	}
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				delete(out, http.CanonicalHeaderKey(name))
			}
		}
	}
	for _, k := range hopHeaders {
		delete(out, k)
	}
	return out
}

// upgradeType is the protocol an HTTP/1.1 request asks to switch to, or "".
func upgradeType(h http.Header) string {
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(name), "upgrade") {
				return h.Get("Upgrade")
			}
		}
	}
	return ""
}

// forward sends an allowed request to the origin and streams the answer back.
func (st *connState) forward(ex *exchange, r *http.Request, path, judged string) {
	sni := st.c.SNI
	out := &http.Request{
		Method:        r.Method,
		URL:           &url.URL{Scheme: "https", Host: sni, Path: judged, RawPath: path, RawQuery: r.URL.RawQuery},
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        endToEnd(r.Header),
		Host:          sni,
		ContentLength: r.ContentLength,
		// The same map as the request's: the server fills in its values when the body
		// ends, before the transport writes them.
		Trailer: r.Trailer,
	}
	if te := r.Header["Te"]; len(te) > 0 && strings.Contains(strings.ToLower(strings.Join(te, ",")), "trailers") {
		out.Header["Te"] = []string{"trailers"} // gRPC needs it to reach the origin
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // the transport would send its own
	}
	// Only a WebSocket upgrade is passed on. After a switch the bytes are opaque, and one to
	// h2c (or any protocol that carries requests) would let the sandbox send requests
	// that nothing decides; without the header, the request is an ordinary one.
	asked := ""
	if r.ProtoMajor == 1 && strings.EqualFold(upgradeType(r.Header), "websocket") {
		asked = upgradeType(r.Header)
		out.Header["Connection"] = []string{"Upgrade"}
		out.Header["Upgrade"] = []string{asked}
	}
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		body := &requestBody{r: r.Body, ex: ex, rc: http.NewResponseController(ex.w), idle: st.e.cfg.IdleTimeout,
			trailer: r.Trailer, secrets: st.c.Secrets, host: sni}
		defer body.over()
		out.Body = body
		ex.body = body
	}

	// Interim responses other than 100 Continue (which the client's server sends itself
	// when the body is first read) are passed on: 103 Early Hints.
	var mu sync.Mutex
	roundTripped := false
	trace := &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			if code == http.StatusContinue || code == http.StatusSwitchingProtocols {
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			if roundTripped {
				return nil
			}
			wh := ex.w.Header()
			// Redacted as the final answer is: an origin may echo the key in a hint.
			for k, vv := range redact(http.Header(h), st.putsNow()) {
				wh[k] = vv
			}
			ex.w.WriteHeader(code)
			clear(wh)
			return nil
		},
	}
	out = out.WithContext(httptrace.WithClientTrace(r.Context(), trace))
	res, err := st.transport().RoundTrip(out)
	mu.Lock()
	roundTripped = true
	mu.Unlock()
	if err != nil {
		ex.upstreamFailed(r, err)
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		st.upgrade(ex, r, res, asked)
		return
	}
	defer res.Body.Close()

	h := ex.w.Header()
	for k, vv := range redact(endToEnd(res.Header), st.putsNow()) {
		h[k] = vv
	}
	var announced map[string]bool
	if len(res.Trailer) > 0 {
		announced = make(map[string]bool, len(res.Trailer))
		keys := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			keys = append(keys, k)
			announced[k] = true
		}
		sort.Strings(keys)
		h["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	ex.writeHeader(res.StatusCode)
	err = st.copyBody(ex, res.Body, res.ContentLength)
	if err == nil && r.Context().Err() != nil {
		// A cut can race with the origin's clean end (the origin saw its request end
		// first): the client's side was cut all the same.
		err = context.Cause(r.Context())
	}
	if err != nil {
		ex.abort(r, err)
	}
	for k, vv := range redact(res.Trailer, st.putsNow()) {
		if !announced[k] {
			k = http.TrailerPrefix + k
		}
		h[k] = vv
	}
}

// copyBody copies a response body to the client, flushing every piece as it comes: a
// stream (server-sent events, a slow download) reaches the client as the origin sends it.
// The last piece of a body of known length is not flushed on its own: the end of the
// response, right after, flushes it with the end (one write fewer for a small answer).
func (st *connState) copyBody(ex *exchange, body io.Reader, length int64) error {
	bp := st.e.bufs.Get().(*[]byte)
	defer st.e.bufs.Put(bp)
	buf := *bp
	rc := http.NewResponseController(ex.w)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			w, werr := ex.w.Write(buf[:n])
			ex.down += int64(w)
			if werr == nil && (length < 0 || ex.down < length) {
				werr = rc.Flush()
			}
			if werr != nil {
				return &clientError{werr}
			}
		}
		switch {
		case rerr == io.EOF:
			return nil
		case rerr != nil:
			return rerr
		}
	}
}

// clientError is a failure to write to the client, as opposed to one to read the origin.
type clientError struct{ err error }

func (e *clientError) Error() string { return "writing to the client: " + e.err.Error() }
func (e *clientError) Unwrap() error { return e.err }

// upgrade passes a 101 on to the client and copies raw bytes both ways: the origin's until
// it ends (then everything closes), the client's until it ends (the origin may go on
// answering). Only an HTTP/1.1 client asks this, for the protocol it named.
func (st *connState) upgrade(ex *exchange, r *http.Request, res *http.Response, asked string) {
	back, ok := res.Body.(io.ReadWriteCloser)
	got := redactText(upgradeType(res.Header), st.putsNow()) // it may go into a message
	if !ok || asked == "" || !strings.EqualFold(got, asked) {
		res.Body.Close()
		ex.fail(http.StatusBadGateway, "the origin switched protocols to "+clip(sanitize(got))+" when "+clip(sanitize(asked))+" was asked")
		return
	}
	conn, brw, err := http.NewResponseController(ex.w).Hijack()
	if err != nil {
		back.Close()
		ex.fail(http.StatusBadGateway, "the switch of protocols cannot be passed on: "+err.Error())
		return
	}
	ex.status = http.StatusSwitchingProtocols
	closeBoth := func() {
		conn.Close()
		back.Close()
	}
	defer closeBoth()
	stop := context.AfterFunc(r.Context(), closeBoth) // a cut ends the stream
	defer stop()

	h := redact(endToEnd(res.Header), st.putsNow())
	h["Connection"] = []string{"Upgrade"}
	h["Upgrade"] = []string{got}
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	h.Write(brw)
	brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		ex.ended = "client"
		return
	}
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		// brw.Reader first: what the client sent right after its request is in it.
		n, err := io.Copy(back, brw.Reader)
		ex.up.Add(n)
		if err != nil {
			closeBoth()
		}
	}()
	n, _ := io.Copy(conn, back)
	ex.down += n
	closeBoth()
	<-upDone
	if r.Context().Err() != nil {
		ex.ended = st.cutReason()
	}
}

// requestBody is a request body on its way up: counted, and with a read deadline of the
// idle timeout from each read, so that a client that stops sending cannot hold the
// exchange. Once the handler is over, the deadlines are the server's again.
type requestBody struct {
	r    io.ReadCloser
	ex   *exchange
	rc   *http.ResponseController
	idle time.Duration

	// What the trailer is checked with, at the body's end.
	trailer http.Header
	secrets Secrets
	host    string

	mu      sync.Mutex
	refused []string // secrets whose placeholders the trailer carried to another host
	done    bool     // the handler returned, or the body ended
	err     error    // the client's read error, other than the end
}

func (b *requestBody) Read(p []byte) (int, error) {
	b.deadline(time.Now().Add(b.idle))
	n, err := b.r.Read(p)
	b.ex.up.Add(int64(n))
	if err == io.EOF {
		// The trailer is known once the body ended, and the transport sends it after
		// this EOF: a placeholder in it for another host ends the request instead (the
		// origin gets a body that never ends, never the trailer).
		if names := trailerRefused(b.secrets, b.host, b.trailer); len(names) > 0 {
			b.mu.Lock()
			b.refused = names
			b.mu.Unlock()
			err = errTrailerRefused
		}
	}
	if err != nil {
		b.over()
		if err != io.EOF {
			b.mu.Lock()
			b.err = err
			b.mu.Unlock()
		}
	}
	return n, err
}

// errTrailerRefused ends a request body whose trailer carries a placeholder to a host that
// is not its secret's.
var errTrailerRefused = errors.New("the request's trailer carries a secret's placeholder for another host")

// trailerRefused returns the secrets whose placeholders the trailer carried to another host.
func (b *requestBody) trailerRefused() []string {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.refused
}

// stalled reports whether the client stopped sending the body for the idle timeout.
func (b *requestBody) stalled() bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err != nil && isTimeout(b.err)
}

func (b *requestBody) deadline(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.rc.SetReadDeadline(t)
	}
}

// over clears the deadline, for good: after the body's end the HTTP/1.1 server reads the
// connection in the background to see the client leave, and must not time out.
func (b *requestBody) over() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.done = true
		b.rc.SetReadDeadline(time.Time{})
	}
}

// Close leaves the request's body to the server, which closes it after the handler: the
// transport closes what it sent, maybe before the client's body was read.
func (b *requestBody) Close() error { return nil }
