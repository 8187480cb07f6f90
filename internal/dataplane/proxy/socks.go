package proxy

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/resolve"
	"github.com/egressd/egressd/internal/dataplane/socks5"
	"github.com/egressd/egressd/policy"
)

// ruleSOCKSCommand is the refusal of a SOCKS5 command other than CONNECT.
const ruleSOCKSCommand = "the SOCKS5 listener serves CONNECT only (no BIND, no UDP ASSOCIATE)"

// ServeSOCKS accepts SOCKS5 connections (RFC 1928, with the username/password method of RFC
// 1929: username = session ID, password = its token, as in the session's socks_url) on ln
// and serves each on its own goroutine until ln fails or the proxy is shut down; it then
// returns ErrClosed. A SOCKS5 CONNECT is served as an HTTP CONNECT to the same host:port
// is, on the same path (openTunnel), with the same records and the same cuts; see the
// package doc. ln must hand out *net.TCPConn.
func (p *Proxy) ServeSOCKS(ln net.Listener) error {
	if p.cfg.Sessions == nil {
		return errors.New("proxy: ServeSOCKS needs Config.Sessions")
	}
	return p.accept(ln, (*clientConn).serveSOCKS)
}

// serveSOCKS serves one SOCKS5 connection: the handshake within HandshakeTimeout, then
// the CONNECT.
func (c *clientConn) serveSOCKS() {
	defer c.finish()
	s, req, ok := c.socksHandshake()
	if !ok {
		return
	}
	if req.Cmd != socks5.CmdConnect {
		d := deny(policy.ReasonBadRequest, ruleSOCKSCommand)
		c.record(events.KindConnect, s, socksConn(req), d, 0)
		c.socksReply(socks5.CommandNotSupported, nil)
		return
	}
	c.openTunnel(s, socksTarget(req), "SOCKS5 CONNECT", c.socksFront(s))
}

// socksHandshake reads the greeting, the credentials and the request, answering what
// comes before the request's reply. A client that does not offer username/password gets
// "no acceptable method"; wrong credentials, status 1 (the proxy's 407: logged, not
// recorded, as no session is known); anything malformed, a close.
func (c *clientConn) socksHandshake() (*Source, socks5.Request, bool) {
	c.cr.mode = modeRaw
	c.conn.SetDeadline(time.Now().Add(c.p.cfg.HandshakeTimeout))
	defer c.conn.SetDeadline(time.Time{})
	fail := func(stage string, err error) (*Source, socks5.Request, bool) {
		c.p.log.Debug("SOCKS5 handshake failed", "stage", stage, "client", c.conn.RemoteAddr().String(), "err", err)
		return nil, socks5.Request{}, false
	}
	methods, err := socks5.ReadGreeting(c.br)
	if err != nil {
		return fail("greeting", err)
	}
	if !slices.Contains(methods, socks5.MethodUserPass) {
		socks5.WriteMethod(c.conn, socks5.MethodNoAcceptable)
		return fail("greeting", errors.New("the client does not offer username/password (the session ID and token of its socks_url)"))
	}
	if err := socks5.WriteMethod(c.conn, socks5.MethodUserPass); err != nil {
		return fail("greeting", err)
	}
	id, token, err := socks5.ReadCredentials(c.br)
	if err != nil {
		return fail("credentials", err)
	}
	s, err := c.p.cfg.Sessions.Authenticate(id, token)
	if err != nil {
		socks5.WriteAuthStatus(c.conn, false)
		c.p.log.Debug("SOCKS5 credentials refused", "session", id, "client", c.conn.RemoteAddr().String(), "err", err)
		return nil, socks5.Request{}, false
	}
	if err := socks5.WriteAuthStatus(c.conn, true); err != nil {
		return fail("credentials", err)
	}
	req, err := socks5.ReadRequest(c.br)
	if err != nil {
		var se *socks5.Error
		if errors.As(err, &se) {
			c.socksReply(se.Reply, nil)
		}
		return fail("request", err)
	}
	return s, req, true
}

// socksTarget is the request's destination as a CONNECT's target: a name normalised by
// policy.NormalizeName, or an IP literal; a name that is an address ("203.0.113.7" as ATYP
// 3) is that address, as in a CONNECT.
func socksTarget(q socks5.Request) target {
	if q.Addr.IsValid() {
		return target{ip: q.Addr.Unmap(), port: q.Port}
	}
	return hostTarget(q.Host, q.Port)
}

// socksConn is the request as a connection attempt, for the record of a refused command.
func socksConn(q socks5.Request) policy.Conn {
	t := socksTarget(q)
	if t.nameErr != nil {
		return policy.Conn{Port: t.port, Transport: policy.TCP}
	}
	return t.conn()
}

// socksFront answers a SOCKS5 CONNECT: every denial is "connection not allowed by ruleset"
// (the record says why), a destination that cannot be reached its reply code, and a
// connected one "succeeded" with the address the gateway's connection is bound to.
func (c *clientConn) socksFront(s *Source) front {
	return front{
		refuse: func(what string, d policy.Decision) {
			c.p.log.Debug("SOCKS5 CONNECT denied", "session", s.ID, "what", what, "reason", d.Reason, "rule", d.Rule)
			c.socksReply(socks5.NotAllowed, nil)
		},
		unreachable: func(_ string, err error) { c.socksReply(unreachableReply(err), nil) },
		ready:       func(up net.Conn) error { return c.socksReply(socks5.Succeeded, up) },
	}
}

// socksReply writes a reply, with up's local address as the bound address when up is set.
func (c *clientConn) socksReply(rep socks5.Reply, up net.Conn) error {
	var bound netip.AddrPort
	if up != nil {
		if a, ok := up.LocalAddr().(*net.TCPAddr); ok {
			bound = a.AddrPort()
		}
	}
	c.conn.SetWriteDeadline(time.Now().Add(c.p.cfg.HandshakeTimeout))
	defer c.conn.SetWriteDeadline(time.Time{})
	return socks5.WriteReply(c.conn, rep, bound)
}

// unreachableReply is the reply code of a dial that failed.
func unreachableReply(err error) socks5.Reply {
	switch {
	case errors.Is(err, resolve.ErrNotFound), errors.Is(err, resolve.ErrNoAddress),
		errors.Is(err, syscall.EHOSTUNREACH), isTimeout(err):
		return socks5.HostUnreachable
	case errors.Is(err, syscall.ENETUNREACH):
		return socks5.NetworkUnreachable
	case errors.Is(err, syscall.ECONNREFUSED):
		return socks5.ConnectionRefused
	}
	return socks5.GeneralFailure
}
