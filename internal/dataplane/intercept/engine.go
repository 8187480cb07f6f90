package intercept

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/relay"
	"github.com/egressd/egressd/policy"
)

// Defaults of Config.
const (
	DefaultHandshakeTimeout     = 10 * time.Second
	DefaultIdleTimeout          = 10 * time.Minute
	DefaultKeepAliveTimeout     = 2 * time.Minute
	DefaultMaxHeaderBytes       = 64 << 10
	DefaultMaxConcurrentStreams = 100
	DefaultMaxUpstreamConns     = 32
)

// ReasonShutdown is the close reason of a connection ended by Engine.Close or by the
// cancellation of Serve's context.
const ReasonShutdown = "shutdown"

// Certs gives the certificate the engine shows for a name: a leaf minted by egressd's CA
// (or the operator's), cached by the implementation.
type Certs interface {
	Leaf(name string) (*tls.Certificate, error)
}

// Policy decides one request on an intercepted connection: host is the connection's SNI
// (in policy.NormalizeName form), method the request's method as sent, path the path as it
// goes upstream (escaped as the client sent it, dot segments resolved, no query: the form
// policy.Request.Path takes, which the policy decodes once itself). It is called for every request:
// an implementation that reads the current effective policy applies a change to the next
// request.
type Policy interface {
	DecideRequest(host, method, path string) policy.Decision
}

// PolicyFunc is a Policy of a function.
type PolicyFunc func(host, method, path string) policy.Decision

// DecideRequest calls f.
func (f PolicyFunc) DecideRequest(host, method, path string) policy.Decision {
	return f(host, method, path)
}

// Secrets are the secrets a connection's requests may use: the tenant's.
type Secrets interface {
	// Lookup finds the secret whose placeholder is exactly placeholder. ok is false when
	// no secret has it. Secret.ForHost says whether host (the SNI, in NormalizeName form)
	// matches the secret's domains; Value is set only then.
	Lookup(placeholder, host string) (s Secret, ok bool)
}

// Secret is what Secrets.Lookup found.
type Secret struct {
	Name    string
	ForHost bool
	Value   string
}

// Dialer connects to the origin, host on port (always the SNI and 443). It is the
// caller's judged dialer: it resolves the name itself and dials only an address its
// policy allows. A refusal by the policy is a *DeniedError (403); one for the sandbox's
// connection cap a *DeniedError of policy.ReasonTooMany (429).
type Dialer interface {
	Dial(ctx context.Context, host string, port uint16) (net.Conn, error)
}

// DialFunc is a Dialer of a function.
type DialFunc func(ctx context.Context, host string, port uint16) (net.Conn, error)

// Dial calls f.
func (f DialFunc) Dial(ctx context.Context, host string, port uint16) (net.Conn, error) {
	return f(ctx, host, port)
}

// DeniedError is what a Dialer returns when the policy refuses the destination at dial
// time (every address of the name is private, say): the request is answered 403 with
// Decision, and recorded with it.
type DeniedError struct {
	Decision policy.Decision
	Err      error // the dialer's own error, for logs; may be nil
}

func (e *DeniedError) Error() string {
	s := "denied by policy: " + string(e.Decision.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *DeniedError) Unwrap() error { return e.Err }

// Sink takes one Record per request. Request must not block: it is called on the
// request's path.
type Sink interface {
	Request(Record)
}

// Discard is a Sink that drops every record.
var Discard Sink = discard{}

type discard struct{}

func (discard) Request(Record) {}

// Record is the decision record of one request on an intercepted connection. Its
// events.Record is of kind events.KindRequest, about the SNI on port 443, with BytesUp and
// BytesDown the request and response body bytes and DurationMS the exchange's duration.
type Record struct {
	events.Record
	Method string `json:"method"`
	// Path is the decided path: percent-decoded, dot segments resolved, never the query;
	// cut at 1,024 bytes.
	Path   string `json:"path"`
	Status int    `json:"status,omitempty"` // the status sent to the client; 0 if none
	// Secrets are the names of the secrets applied to the request, or on a
	// secret_not_for_host denial those refused. Never a value.
	Secrets []string `json:"secrets,omitempty"`
	// Ended says why an exchange ended before its response did: the connection's cut
	// reason, "client" when the client left, "upstream" when the origin broke off.
	Ended string `json:"ended,omitempty"`
}

// Config is what the engine needs. Certs is required; every other zero value works.
type Config struct {
	Certs Certs
	// RootCAs verify the origins' certificates: the system's roots and --upstream-ca-file,
	// built by the caller. nil means the system's roots.
	RootCAs *x509.CertPool
	// Sink gets one record per request; nil discards them.
	Sink   Sink
	Logger *slog.Logger

	// HandshakeTimeout bounds the client's TLS handshake, a request header, and the TLS
	// handshake with an origin; 0 means 10 seconds.
	HandshakeTimeout time.Duration
	// IdleTimeout ends an exchange (or an upgraded stream) in which a side sends, or takes,
	// nothing for this long; 0 means 10 minutes.
	IdleTimeout time.Duration
	// KeepAliveTimeout closes a connection that waits this long for its next request
	// (HTTP/2: without an open stream), and an idle upstream connection; 0 means 2 minutes.
	KeepAliveTimeout time.Duration
	// MaxHeaderBytes bounds a request's header; 0 means 64 KiB.
	MaxHeaderBytes int
	// MaxConcurrentStreams bounds an HTTP/2 client's streams on one connection; 0 means 100.
	MaxConcurrentStreams int
	// MaxUpstreamConns bounds the upstream connections of one client connection (an
	// HTTP/2 client to an HTTP/1.1 origin needs several); 0 means 32.
	MaxUpstreamConns int
}

// Engine serves intercepted connections. Make it with New, call Serve for each
// connection, and end it with Close.
type Engine struct {
	cfg  Config
	log  *slog.Logger
	sink Sink
	srv  *http.Server // serves every connection's HTTP, one listener per connection
	tls  *tls.Config
	bufs sync.Pool // *[]byte of copyBuf bytes, for response bodies

	mu     sync.Mutex
	closed bool
	conns  map[*Conn]struct{}
	wg     sync.WaitGroup
}

// New makes an engine. It fails only without Config.Certs.
func New(cfg Config) (*Engine, error) {
	if cfg.Certs == nil {
		return nil, errors.New("intercept: Config.Certs is required")
	}
	if cfg.Sink == nil {
		cfg.Sink = Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.KeepAliveTimeout <= 0 {
		cfg.KeepAliveTimeout = DefaultKeepAliveTimeout
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.MaxConcurrentStreams <= 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if cfg.MaxUpstreamConns <= 0 {
		cfg.MaxUpstreamConns = DefaultMaxUpstreamConns
	}
	e := &Engine{
		cfg: cfg, log: cfg.Logger.With("component", "intercept"), sink: cfg.Sink,
		conns: make(map[*Conn]struct{}),
	}
	e.bufs.New = func() any { b := make([]byte, copyBuf); return &b }
	e.tls = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: e.certificate,
	}
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	e.srv = &http.Server{
		Handler:           handler{},
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		IdleTimeout:       cfg.KeepAliveTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		Protocols:         protos,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          cfg.MaxConcurrentStreams,
			MaxReceiveBufferPerConnection: 1 << 20,
			MaxReceiveBufferPerStream:     1 << 20,
			WriteByteTimeout:              cfg.IdleTimeout,
		},
		// Each connection's listener carries its context (connListener.ctx): the handler
		// finds the connection's state there, and cancelling it ends every request.
		BaseContext: func(l net.Listener) context.Context { return l.(*connListener).ctx },
		ErrorLog:    slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
	}
	return e, nil
}

// certificate answers the client's ClientHello with the leaf of the SNI its caller judged.
// The ClientHello is the one the caller peeked, so the names agree; a disagreement (which
// would mean another ClientHello) fails the handshake.
func (e *Engine) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	cc, ok := hello.Conn.(*clientConn)
	if !ok {
		return nil, errors.New("intercept: a handshake on a connection the engine did not wrap")
	}
	if n, err := policy.NormalizeName(hello.ServerName); err != nil || n != cc.sni {
		return nil, fmt.Errorf("intercept: the TLS server name is not %s, the name judged", cc.sni)
	}
	return e.cfg.Certs.Leaf(cc.sni)
}

// Conn is one client connection to serve. Set the fields, then call Engine.Serve once;
// Cancel may be called from any goroutine, before or during Serve.
type Conn struct {
	// Client is the sandbox's connection, whose TLS ClientHello was read into Prefix (or
	// not read at all). Serve closes it.
	Client net.Conn
	// Prefix is what the caller already read from Client: the ClientHello and whatever
	// followed it. It is read again first.
	Prefix []byte
	// SNI is the TLS server name, in policy.NormalizeName form, that the caller judged
	// allowed. Every request must be for it; requests go to it on port 443.
	SNI string
	// Source is whom the records are about.
	Source  events.Source
	Policy  Policy
	Secrets Secrets // nil: the tenant has no secrets; placeholders pass as they are
	Dialer  Dialer

	mu     sync.Mutex
	reason string                  // the first Cancel's reason
	cancel context.CancelCauseFunc // set by Serve
}

// Cancel ends the connection: the client connection, its upstream connections and its
// requests in flight. Serve returns soon after, with reason as Result.Reason (the first
// reason given wins).
func (c *Conn) Cancel(reason string) {
	c.mu.Lock()
	if c.reason == "" {
		c.reason = reason
	}
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel(errCut)
	}
}

var errCut = errors.New("intercept: the connection was cut")

// cancelled returns Cancel's reason, or "".
func (c *Conn) cancelled() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// Result is what Serve did.
type Result struct {
	// Up and Down are the bytes from and to the client on its connection (TLS included,
	// Prefix in Up), for the caller's close record.
	Up, Down int64
	Duration time.Duration
	Requests int64
	// Proto is the protocol the client chose: "h2" or "http/1.1" ("" before a handshake).
	Proto string
	// Reason says why the connection ended: relay.ReasonEOF (the client or a timeout
	// closed it), relay.ReasonError (a failed handshake: Err says why), ReasonShutdown, or
	// Cancel's reason.
	Reason string
	Err    error
}

// Serve serves c until it ends, and closes it. See the package documentation.
func (e *Engine) Serve(ctx context.Context, c *Conn) Result {
	start := time.Now()
	parent := ctx
	cc := newClientConn(c.Client, c.Prefix, c.SNI, e.cfg.IdleTimeout)
	res := func(reason string, err error) Result {
		cc.Close()
		if r := c.cancelled(); r != "" {
			reason = r
		} else if parent.Err() != nil {
			reason = ReasonShutdown
		}
		return Result{Up: cc.up.Load(), Down: cc.down.Load(), Duration: time.Since(start), Reason: reason, Err: err}
	}
	if c.Policy == nil || c.Dialer == nil || c.SNI == "" {
		return res(relay.ReasonError, errors.New("intercept: Conn.SNI, Conn.Policy and Conn.Dialer are required"))
	}
	if !e.add(c) {
		return res(ReasonShutdown, nil)
	}
	defer e.remove(c)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	c.mu.Lock()
	c.cancel = cancel
	if c.reason != "" {
		cancel(errCut)
	}
	c.mu.Unlock()
	// Whatever ends the context closes the client connection: the server's reads fail,
	// and every request on it ends with the context.
	stop := context.AfterFunc(ctx, func() { cc.Close() })
	defer stop()

	tc := tls.Server(cc, e.tls)
	cc.SetDeadline(time.Now().Add(e.cfg.HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		return res(relay.ReasonError, fmt.Errorf("intercept: TLS handshake with the client: %w", err))
	}
	cc.SetDeadline(time.Time{})

	st := &connState{e: e, c: c, proto: tc.ConnectionState().NegotiatedProtocol}
	if st.proto != "h2" {
		st.proto = "http/1.1"
	}
	st.ctx = context.WithValue(ctx, stateKey{}, st)
	// The server reads and answers requests until the connection closes (the client, a
	// timeout, Cancel); then the listener's second Accept fails and Serve returns.
	e.srv.Serve(&connListener{conn: tc, done: cc.closed, ctx: st.ctx})
	cancel(errConnDone) // requests still in flight end now
	st.handlers.wait()
	st.closeUpstream()

	r := res(relay.ReasonEOF, nil)
	r.Requests, r.Proto = st.requests.Load(), st.proto
	return r
}

var errConnDone = errors.New("intercept: the client connection ended")

func (e *Engine) add(c *Conn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.conns[c] = struct{}{}
	e.wg.Add(1)
	return true
}

func (e *Engine) remove(c *Conn) {
	e.mu.Lock()
	delete(e.conns, c)
	e.mu.Unlock()
	e.wg.Done()
}

// Close ends every connection being served (reason ReasonShutdown) and refuses new ones;
// it returns once every Serve has returned.
func (e *Engine) Close() error {
	e.mu.Lock()
	e.closed = true
	conns := make([]*Conn, 0, len(e.conns))
	for c := range e.conns {
		conns = append(conns, c)
	}
	e.mu.Unlock()
	for _, c := range conns {
		c.Cancel(ReasonShutdown)
	}
	e.wg.Wait()
	return nil
}

// connListener hands the server one connection, and then fails its next Accept once that
// connection has closed, which ends the server's Serve for it.
type connListener struct {
	conn   net.Conn
	handed bool // Accept is called from one goroutine, Serve's
	done   <-chan struct{}
	ctx    context.Context
}

func (l *connListener) Accept() (net.Conn, error) {
	if !l.handed {
		l.handed = true
		return l.conn, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

// Close does nothing: the server closes the listener when its Serve returns, and the
// connection is the server's (or a hijacker's) to close.
func (l *connListener) Close() error   { return nil }
func (l *connListener) Addr() net.Addr { return l.conn.LocalAddr() }
