package dnsfilter

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/resolve"
	"github.com/egressd/egressd/policy"
)

// Defaults of the Server's zero-valued fields.
const (
	// DefaultTimeout bounds forwarding one query, whichever servers the resolver asks:
	// under the 5 seconds a glibc stub waits, so that the sandbox gets SERVFAIL rather
	// than a timeout of its own.
	DefaultTimeout = 4 * time.Second
	// DefaultMaxInFlight bounds the queries being forwarded upstream at once.
	DefaultMaxInFlight = 256
	// DefaultMaxTTL caps the TTL of every record given to a sandbox, so that a policy
	// change (and a changed upstream answer) reaches the sandbox's cache within it.
	DefaultMaxTTL = 300 * time.Second
)

// maxUDPSize is the largest answer sent over UDP, whatever buffer a client advertises: the
// DNS Flag Day 2020 size, which avoids IP fragmentation; a larger answer is truncated (TC)
// and the client asks again over TCP. It is also the size advertised in our OPT records.
const maxUDPSize = 1232

// ErrServerClosed is returned by Serve and ServeListener after Shutdown.
var ErrServerClosed = errors.New("dnsfilter: server closed")

// VMs finds the sandbox that sends from a source address. VMByAddr returns the sandbox's
// tenant, its vm_id and its effective policy now (in transparent mode the VM's policy AND
// every open session's on it), or ok false when no sandbox has that address. A nil set
// with ok true denies every query. It is called once per query and must not block.
type VMs interface {
	VMByAddr(src netip.Addr) (tenant, vmID string, set *policy.Effective, ok bool)
}

// VMsFunc adapts a function to VMs.
type VMsFunc func(src netip.Addr) (tenant, vmID string, set *policy.Effective, ok bool)

// VMByAddr calls f.
func (f VMsFunc) VMByAddr(src netip.Addr) (string, string, *policy.Effective, bool) { return f(src) }

// Server is the transparent gateway's filtering DNS server; see the package documentation.
// It is a dns.Handler. Set the fields before the first Serve or ServeListener and do not
// change them afterwards. The zero value refuses every query (no VMs: every source is
// unknown) and resolves the system's way (package resolve).
type Server struct {
	// VMs identifies the sandbox behind a query's source address; nil knows none.
	VMs VMs
	// Resolver answers the allowed queries; nil means a resolve.Resolver that resolves the
	// system's way. egressd passes its one resolver (--dns-upstream, or the system's).
	Resolver Exchanger
	// TCP, when set, is told of every answer with addresses before the sandbox gets it
	// (allowed_tcp in transparent mode); nil: nobody is.
	TCP TCPOpener
	// Sink takes one record per query; nil means events.Discard.
	Sink events.Sink
	// Logger reports upstream failures (at most one line every 10 seconds); nil means
	// slog.Default().
	Logger *slog.Logger
	// Timeout bounds forwarding one query; 0 means DefaultTimeout.
	Timeout time.Duration
	// MaxInFlight bounds the queries forwarded upstream at once; a query beyond it is
	// answered SERVFAIL at once. 0 means DefaultMaxInFlight.
	MaxInFlight int
	// MaxTTL caps the TTLs of answers; 0 means DefaultMaxTTL.
	MaxTTL time.Duration

	initOnce sync.Once
	sem      chan struct{} // one token per query being forwarded
	ctx      context.Context
	cancel   context.CancelFunc
	maxTTL   uint32

	defaultResolver resolve.Resolver

	lastWarn atomic.Int64 // unix nanoseconds of the last upstream warning

	mu      sync.Mutex
	closed  bool
	servers []*served
}

// served is one listener being served.
type served struct {
	srv     *dns.Server
	started chan struct{} // closed once the dns.Server accepts queries
	done    chan struct{} // closed when ActivateAndServe returned
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		n := s.MaxInFlight
		if n <= 0 {
			n = DefaultMaxInFlight
		}
		s.sem = make(chan struct{}, n)
		s.ctx, s.cancel = context.WithCancel(context.Background())
		ttl := s.MaxTTL
		if ttl <= 0 {
			ttl = DefaultMaxTTL
		}
		s.maxTTL = uint32(min(ttl/time.Second, 1<<31-1))
	})
}

// Serve answers DNS over UDP on pc until Shutdown, then returns ErrServerClosed. pc is
// typically a *net.UDPConn bound to the gateway address on port 53.
func (s *Server) Serve(pc net.PacketConn) error {
	return s.serve(&dns.Server{PacketConn: pc})
}

// ServeListener answers DNS over TCP on ln until Shutdown, then returns ErrServerClosed.
func (s *Server) ServeListener(ln net.Listener) error {
	return s.serve(&dns.Server{Listener: ln})
}

func (s *Server) serve(srv *dns.Server) error {
	s.init()
	srv.Handler = s
	srv.UDPSize = dns.DefaultMsgSize // the read buffer: room for a query with EDNS options
	srv.MsgAcceptFunc = acceptQuery
	srv.MsgInvalidFunc = func([]byte, error) {} // miekg/dns answers FORMERR (or nothing) itself
	e := &served{srv: srv, started: make(chan struct{}), done: make(chan struct{})}
	srv.NotifyStartedFunc = func() { close(e.started) }
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.servers = append(s.servers, e)
	s.mu.Unlock()
	err := srv.ActivateAndServe()
	close(e.done)
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrServerClosed
	}
	return err
}

// acceptQuery lets every request through to ServeDNS, which answers (and records) what it
// does not serve: only responses are dropped, unanswered. miekg/dns's default would answer
// FORMERR itself, without a record.
func acceptQuery(h dns.Header) dns.MsgAcceptAction {
	const qr = 1 << 15
	if h.Bits&qr != 0 {
		return dns.MsgIgnore
	}
	return dns.MsgAccept
}

// Shutdown stops every listener, waits until the queries being answered are done or ctx
// ends, then cancels the upstream exchanges still running. Serve and ServeListener return
// ErrServerClosed afterwards.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	s.closed = true
	list := s.servers
	s.servers = nil
	s.mu.Unlock()
	defer s.cancel()
	var errs []error
	for _, e := range list {
		select {
		case <-e.started:
		case <-e.done:
			continue // failed to start: nothing to stop
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := e.srv.ShutdownContext(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
