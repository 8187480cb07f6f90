package dnsfilter

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/miekg/dns"
)

// errBusy: MaxInFlight queries are being forwarded already.
var errBusy = errors.New("too many queries in flight")

// warnEvery spaces the log lines about upstream failures: a dead upstream must not turn a
// query flood into a log flood.
const warnEvery = 10 * time.Second

// Exchanger asks a question upstream and returns the answer; *resolve.Resolver, egressd's
// one resolver, is the one the gateway uses, so that a sandbox is answered from the same
// source the dialer resolves with.
type Exchanger interface {
	Exchange(ctx context.Context, qname string, qtype uint16) (*dns.Msg, error)
}

// forward asks the resolver qname (a normalised FQDN, the very name the policy judged) of
// type qtype. The resolver builds the query afresh (a new random ID, never the client's;
// nothing of the client's message), so that nothing but an allowed name leaves the gateway.
// At most MaxInFlight queries are forwarded at once; beyond that forward fails at once with
// errBusy, so that a flood costs the gateway neither sockets nor goroutines held open.
func (s *Server) forward(qname string, qtype uint16) (*dns.Msg, error) {
	select {
	case s.sem <- struct{}{}:
	default:
		return nil, errBusy
	}
	defer func() { <-s.sem }()
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	return s.resolver().Exchange(ctx, qname, qtype)
}

func (s *Server) resolver() Exchanger {
	if s.Resolver != nil {
		return s.Resolver
	}
	return &s.defaultResolver
}

// warn logs an upstream failure, at most once every warnEvery.
func (s *Server) warn(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := s.lastWarn.Load()
	if now-last < int64(warnEvery) || !s.lastWarn.CompareAndSwap(last, now) {
		return
	}
	l := s.Logger
	if l == nil {
		l = slog.Default()
	}
	l.Warn(msg, args...)
}
