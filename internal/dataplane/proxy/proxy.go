package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/egressd/egressd/internal/dataplane/dialer"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// Defaults of Config.
const (
	DefaultMaxTunnelsPerSession = 1024
	DefaultHandshakeTimeout     = 10 * time.Second
	DefaultIdleTimeout          = 10 * time.Minute
	DefaultKeepAliveTimeout     = 2 * time.Minute
	DefaultMaxHeaderBytes       = 64 << 10
)

// Config is what the proxy needs. Sessions (for Serve) or Sandboxes (for ServeTransparent)
// is required; every other zero value works.
type Config struct {
	// Sessions checks the Proxy-Authorization credentials of every request (Serve).
	Sessions Sessions
	// Sandboxes finds the sandbox a transparent connection comes from (ServeTransparent).
	Sandboxes Sandboxes
	// OriginalDst returns where a transparent connection was going before the firewall
	// redirected it to the proxy; nil means the socket's SO_ORIGINAL_DST (Linux). Tests
	// inject their own.
	OriginalDst func(*net.TCPConn) (netip.AddrPort, error)
	// Dialer resolves, judges and dials destinations; nil means a zero dialer.Dialer (the
	// system's first nameserver, 10-second timeout).
	Dialer *dialer.Dialer
	// Sink gets one record per decision and per closed connection; nil discards them.
	Sink events.Sink
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Interception, if set, hands CONNECTs to intercepted hosts on port 443 to the
	// interception engine; nil splices every tunnel.
	Interception *Interception

	// MaxTunnelsPerSession bounds a session's open connections through the proxy (CONNECT
	// tunnels and plain-HTTP upstream connections), and in transparent mode a VM's (TLS
	// tunnels and plain-HTTP upstream connections); 0 means 1024.
	MaxTunnelsPerSession int
	// HandshakeTimeout bounds reading a request's header and, after a CONNECT to port 443
	// or on a transparent connection to port 443, the TLS ClientHello; 0 means 10 seconds.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a tunnel, or a plain-HTTP exchange, in which no byte moved for
	// this long; 0 means 10 minutes.
	IdleTimeout time.Duration
	// KeepAliveTimeout closes a client connection that sent no new request for this long
	// after its last response; 0 means 2 minutes.
	KeepAliveTimeout time.Duration
	// MaxHeaderBytes bounds a request's header; 0 means 64 KiB.
	MaxHeaderBytes int
}

// Proxy is the explicit proxy, and the transparent one. Create it with New, Serve (or
// ServeTransparent) it on listeners, and end it with Shutdown or Close.
type Proxy struct {
	cfg Config
	log *slog.Logger
	ix  *interception // nil without Config.Interception

	ctx    context.Context // ends at Close: in-flight dials stop
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*clientConn]struct{}
	tunnels   map[string]int // open tunnels by Session.key
	idle      chan struct{}  // closed when conns becomes empty during Shutdown
	wg        sync.WaitGroup
}

// New makes a proxy. It fails only on a Config with neither Sessions nor Sandboxes.
func New(cfg Config) (*Proxy, error) {
	if cfg.Sessions == nil && cfg.Sandboxes == nil {
		return nil, errors.New("proxy: Config.Sessions or Config.Sandboxes is required")
	}
	if cfg.OriginalDst == nil {
		cfg.OriginalDst = originalDst
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &dialer.Dialer{}
	}
	if cfg.Sink == nil {
		cfg.Sink = events.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxTunnelsPerSession <= 0 {
		cfg.MaxTunnelsPerSession = DefaultMaxTunnelsPerSession
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
	ctx, cancel := context.WithCancel(context.Background())
	return &Proxy{
		cfg: cfg, log: cfg.Logger.With("component", "proxy"),
		ix:  newInterception(cfg.Interception),
		ctx: ctx, cancel: cancel,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*clientConn]struct{}),
		tunnels:   make(map[string]int),
	}, nil
}

// ErrClosed is returned by Serve after Shutdown or Close.
var ErrClosed = errors.New("proxy: closed")

// Serve accepts connections on ln and serves each on its own goroutine until ln fails or
// the proxy is shut down; it then returns ErrClosed. ln must hand out *net.TCPConn (a TCP
// listener): tunnels splice the raw connections.
func (p *Proxy) Serve(ln net.Listener) error {
	if p.cfg.Sessions == nil {
		return errors.New("proxy: Serve needs Config.Sessions")
	}
	return p.accept(ln, (*clientConn).serve)
}

// accept runs ln's accept loop, serving each connection with serve on its own goroutine.
func (p *Proxy) accept(ln net.Listener, serve func(*clientConn)) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.listeners[ln] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.listeners, ln)
		p.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.isClosed() {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				// Out of file descriptors, say: wait and try again, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				p.log.Warn("accept failed; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("proxy: accept: %w", err)
		}
		backoff = 0
		tc, ok := c.(*net.TCPConn)
		if !ok {
			p.log.Error("the listener does not hand out TCP connections; closing", "type", fmt.Sprintf("%T", c))
			c.Close()
			continue
		}
		cc := newClientConn(p, tc)
		if !p.add(cc) {
			tc.Close()
			return ErrClosed
		}
		go func() {
			defer p.remove(cc)
			serve(cc)
		}()
	}
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

func (p *Proxy) add(c *clientConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	p.wg.Add(1)
	return true
}

func (p *Proxy) remove(c *clientConn) {
	p.mu.Lock()
	delete(p.conns, c)
	if len(p.conns) == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	p.mu.Unlock()
	p.wg.Done()
}

// stopAccepting closes the listeners and marks the proxy closed.
func (p *Proxy) stopAccepting() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for ln := range p.listeners {
		ln.Close()
	}
}

// Shutdown stops accepting, closes connections that wait for a request, lets the others
// finish their request or tunnel until ctx ends, then closes what is left as Close does.
// Tunnels rarely finish on their own: pass a deadline.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.stopAccepting()
	p.mu.Lock()
	for c := range p.conns {
		if c.idle.Load() {
			c.conn.Close() // waiting for a request that it will not get
		}
	}
	idle := make(chan struct{})
	if len(p.conns) == 0 {
		close(idle)
	} else {
		p.idle = idle
	}
	p.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
	}
	return p.Close()
}

// Close stops accepting and closes every connection at once; tunnels end with the close
// reason "shutdown". It returns when every connection's goroutine is done.
func (p *Proxy) Close() error {
	p.stopAccepting()
	p.cancel()
	p.mu.Lock()
	conns := make([]*clientConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.abort(closeShutdown)
	}
	p.wg.Wait()
	return nil
}

// acquire takes one of the session's (transparent: the VM's) tunnel slots.
func (p *Proxy) acquire(s *Source) bool {
	k := s.key()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tunnels[k] >= p.cfg.MaxTunnelsPerSession {
		return false
	}
	p.tunnels[k]++
	return true
}

func (p *Proxy) release(s *Source) {
	k := s.key()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tunnels[k]--; p.tunnels[k] <= 0 {
		delete(p.tunnels, k)
	}
}

// tooMany is the refusal of a connection over the cap.
func (p *Proxy) tooMany(s *Source) policy.Decision {
	return deny(policy.ReasonTooMany, s.who()+" has "+itoa(p.cfg.MaxTunnelsPerSession)+" open connections through the proxy, the limit")
}
