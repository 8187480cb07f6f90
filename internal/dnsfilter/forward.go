package dnsfilter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// errBusy: MaxInFlight queries are being forwarded already.
var errBusy = errors.New("too many queries in flight")

// warnEvery spaces the log lines about upstream failures: a dead upstream must not turn a
// query flood into a log flood.
const warnEvery = 10 * time.Second

// forward asks the upstream resolver qname (a normalised FQDN, the very name the policy
// judged) of type qtype. The query is built afresh: a new random ID (never the client's),
// RD set, an OPT record of our own and nothing of the client's message (no EDNS option,
// no other section), so that nothing but an allowed name leaves the gateway. It goes over
// UDP, and again over TCP when the answer is truncated, within Timeout. At most
// MaxInFlight queries are forwarded at once; beyond that forward fails at once with
// errBusy, so that a flood costs the gateway neither sockets nor goroutines held open.
func (s *Server) forward(qname string, qtype uint16) (*dns.Msg, error) {
	select {
	case s.sem <- struct{}{}:
	default:
		return nil, errBusy
	}
	defer func() { <-s.sem }()
	up, err := s.upstream()
	if err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype) // a fresh ID from crypto/rand
	m.RecursionDesired = true
	m.SetEdns0(maxUDPSize, false)
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	resp, _, err := s.udp.ExchangeContext(ctx, m, up)
	if err == nil && resp.Truncated {
		resp, _, err = s.tcp.ExchangeContext(ctx, m, up)
	}
	what := strings.TrimSuffix(qname, ".") + " " + dns.TypeToString[qtype]
	if err != nil {
		return nil, fmt.Errorf("asking %s for %s: %w", up, what, err)
	}
	if len(resp.Question) != 1 || resp.Question[0].Qtype != qtype || !strings.EqualFold(resp.Question[0].Name, qname) {
		return nil, fmt.Errorf("asking %s for %s: the answer is for another question", up, what)
	}
	return resp, nil
}

// upstream returns the resolver to ask, reading /etc/resolv.conf once when none is set.
func (s *Server) upstream() (string, error) {
	s.upOnce.Do(func() {
		if s.Upstream != "" {
			s.up = s.Upstream
			if _, _, err := net.SplitHostPort(s.up); err != nil {
				s.up = net.JoinHostPort(s.up, "53")
			}
			return
		}
		cfg, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			s.upErr = fmt.Errorf("no DNS upstream: reading /etc/resolv.conf: %w (set --dns-upstream)", err)
			return
		}
		if len(cfg.Servers) == 0 {
			s.upErr = errors.New("no DNS upstream: /etc/resolv.conf names no nameserver (set --dns-upstream)")
			return
		}
		s.up = net.JoinHostPort(cfg.Servers[0], cfg.Port)
	})
	return s.up, s.upErr
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
