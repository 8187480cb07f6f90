package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/egressd/egressd/internal/dataplane/dialer"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/relay"
	"github.com/egressd/egressd/internal/dataplane/sni"
	"github.com/egressd/egressd/policy"
)

// connect serves a CONNECT request: parse its target, then openTunnel with the HTTP
// front (403, 502, 200). The connection is the tunnel's from here.
func (c *clientConn) connect(req *http.Request, s *Source) {
	t, err := parseAuthority(req.RequestURI, 0)
	if err != nil {
		c.record(events.KindConnect, s, policy.Conn{Transport: policy.TCP}, deny(policy.ReasonBadRequest, ruleBadTarget), 0)
		c.refuse("CONNECT "+req.RequestURI, s, deny(policy.ReasonBadRequest, err.Error()))
		return
	}
	c.openTunnel(s, t, "CONNECT", c.httpFront(s))
}

// front is how a client is answered before its tunnel carries bytes: what differs between
// an HTTP CONNECT (403, 502 or 504, "200 Connection established") and a SOCKS5 CONNECT
// (a reply code). Everything else, the decision, the dial, the checks of the first bytes,
// the records and the tracking, is openTunnel's, the same for both.
type front struct {
	// refuse answers a denial (the policy's or the proxy's own) of what, e.g.
	// "CONNECT host:port"; the connection is closed after it.
	refuse func(what string, d policy.Decision)
	// unreachable answers an allowed destination (target, host:port) that could not be
	// reached.
	unreachable func(target string, err error)
	// ready answers that the destination is connected (up, nil for an intercepted
	// connection, whose upstream is dialled per request); an error is a client that left.
	ready func(up net.Conn) error
}

// httpFront answers as the HTTP proxy does.
func (c *clientConn) httpFront(s *Source) front {
	return front{
		refuse:      func(what string, d policy.Decision) { c.refuse(what, s, d) },
		unreachable: c.badGateway,
		ready:       func(net.Conn) error { return c.established() },
	}
}

// openTunnel is the one path of a CONNECT, by HTTP or by SOCKS5, once its target t is
// parsed: decide, dial, answer through f, check the TLS server name (on port 443 by name;
// the first bytes to an address, or by name to another port), then relay until the tunnel
// ends; to port 80, serve the HTTP inside instead; to an intercepted host on 443, hand it
// to the interception engine. verb names the front in messages and logs ("CONNECT",
// "SOCKS5 CONNECT"). The connection is the tunnel's from here.
func (c *clientConn) openTunnel(s *Source, t target, verb string, f front) {
	if t.nameErr != nil {
		d := deny(policy.ReasonBadName, t.nameErr.Error())
		c.record(events.KindConnect, s, policy.Conn{Port: t.port, Transport: policy.TCP}, d, 0)
		f.refuse(verb+" "+clip(sanitize(t.host))+":"+itoa(int(t.port)), d)
		return
	}
	what := verb + " " + t.String()
	if t.port == 80 {
		c.httpTunnel(s, t, what, f)
		return
	}
	if t.host != "" && t.port == 443 && c.p.ix.intercepts(s, t.host) {
		c.interceptTunnel(s, t.host, what, f)
		return
	}
	ops := tunnelOps{
		refuse:      func(d policy.Decision) { f.refuse(what, d) },
		unreachable: func(err error) { f.unreachable(t.String(), err) },
		ready:       f.ready,
	}
	switch {
	case t.host == "" || t.port != 443:
		// To an address, or by name to a port other than the web's: a TLS server name is
		// judged at the address dialled, as after a CONNECT to it.
		ops.first = func(judged policy.Conn, d policy.Decision, r *relay.Relay) ([]byte, policy.Conn, policy.Decision, error) {
			return c.peekName(s, judged, d, r)
		}
	default:
		ops.first = func(judged policy.Conn, d policy.Decision, _ *relay.Relay) ([]byte, policy.Conn, policy.Decision, error) {
			prefix, sd := c.checkSNI(t.host)
			if sd.Allow {
				sd = d
			}
			return prefix, judged, sd, nil
		}
	}
	c.tunnel(s, t.conn(), what, ops)
}

// established answers a CONNECT whose destination is connected.
func (c *clientConn) established() error {
	c.conn.SetWriteDeadline(time.Now().Add(c.p.cfg.HandshakeTimeout))
	_, err := io.WriteString(c.conn, "HTTP/1.1 200 Connection established\r\n\r\n")
	c.conn.SetWriteDeadline(time.Time{})
	return err
}

// httpTunnel serves a CONNECT to port 80. Such a tunnel carries HTTP, so it is never relayed
// as raw bytes (DESIGN §4): the destination is decided and dialled as for any CONNECT, and
// then the requests inside are read one by one and each goes the plain-HTTP path, decided
// anew, on the upstream connection the CONNECT opened while it goes to the same place. A
// request for another host than the CONNECT's is refused; inside a CONNECT to an address,
// a Host name is judged at that address (forwardOrigin).
func (c *clientConn) httpTunnel(s *Source, t target, what string, f front) {
	u, ok := c.dialUpstream(events.KindConnect, s, t, what, f)
	if !ok {
		return
	}
	if f.ready(u.tc) != nil {
		return
	}
	for {
		// The client may hold the tunnel before its first request, as between requests.
		req, hdr, err := c.readRequest(false)
		if err != nil {
			c.readFailed(err)
			return
		}
		if !c.forwardOrigin(req, hdr, s, 80, &t) {
			return
		}
	}
}

// tunnelOps is what differs between a CONNECT tunnel and a transparent TLS connection.
type tunnelOps struct {
	// refuse answers a denial before the dial (the policy's, or the cap's).
	refuse func(policy.Decision)
	// unreachable answers an allowed destination that could not be reached.
	unreachable func(error)
	// ready, if set, runs once the destination up is connected, before a byte moves (the
	// CONNECT's 200, the SOCKS5 success); an error is a client that left.
	ready func(up net.Conn) error
	// first reads what the client sends first, while the destination's bytes already flow
	// to it, and judges what it shows: the connection as judged (with a name that its
	// first bytes gave, say) and the decision on it, which is recorded; a denial ends the
	// tunnel before a byte reaches the destination. It returns the bytes it read, which go
	// to the destination first; an error is a client that left or a tunnel that ended.
	first func(judged policy.Conn, d policy.Decision, r *relay.Relay) (prefix []byte, _ policy.Conn, _ policy.Decision, err error)
}

// errRefused ends a relay whose first bytes were refused.
var errRefused = errors.New("refused after the first bytes")

// tunnel is the one path of the explicit and the transparent proxy from a decision to a
// relay: take one of s's slots, decide conn and dial it (package dialer: to an address
// the gateway resolved and judged itself), register it with s.Live, and relay until it
// ends. The connection is the tunnel's from here.
func (c *clientConn) tunnel(s *Source, conn policy.Conn, what string, ops tunnelOps) {
	if !c.p.acquire(s) {
		d := c.p.tooMany(s)
		c.record(events.KindConnect, s, conn, d, 0)
		ops.refuse(d)
		return
	}
	defer c.p.release(s)

	res, err := c.p.cfg.Dialer.Dial(c.p.ctx, effectiveNow(s), conn)
	switch {
	case errors.Is(err, dialer.ErrDenied):
		c.record(events.KindConnect, s, res.Target, res.Decision, 0)
		ops.refuse(res.Decision)
		return
	case err != nil:
		// Allowed, but unreachable: an allowed connect is always followed by its close.
		c.record(events.KindConnect, s, res.Target, res.Decision, res.Latency())
		c.recordClose(s, res.Target, relay.Result{Reason: relay.ReasonError})
		c.p.log.Info("destination unreachable", "session", s.ID, "vm", s.VMID, "what", what, "err", err)
		ops.unreachable(err)
		return
	}

	r := &relay.Relay{Client: c.conn, Upstream: res.Conn, Idle: c.p.cfg.IdleTimeout}
	c.mu.Lock()
	c.relay = r
	aborted := c.aborted
	c.mu.Unlock()
	if aborted != "" {
		r.Cancel(aborted)
	}
	judged, d := res.Target, res.Decision
	untrack := s.Live.Track(judged, r.Cancel)
	defer func() { untrack() }()

	if ops.ready != nil {
		if err := ops.ready(res.Conn); err != nil {
			c.record(events.KindConnect, s, judged, d, res.Latency())
			r.Cancel(relay.ReasonError)
			c.recordClose(s, judged, r.Run(nil))
			return
		}
	}
	refused := false
	result := r.RunAfter(func() ([]byte, error) {
		prefix, jc, jd, err := ops.first(judged, d, r)
		if jc != judged {
			// Tracked as what it now is too: a policy that denies the name cuts it, and so
			// does one that denies what it was opened as (an address the client chose,
			// which the name alone would not have been dialled to).
			opened, named := untrack, s.Live.Track(jc, r.Cancel)
			judged, untrack = jc, func() { opened(); named() }
		}
		if err == nil && !jd.Allow {
			// The allow is recorded only now, so this connection has one record: this denial.
			refused = true
			jd.Rule = sanitize(jd.Rule)
			c.record(events.KindConnect, s, judged, jd, res.Latency())
			c.p.log.Debug("tunnel refused after the client's first bytes", "session", s.ID, "vm", s.VMID, "what", what, "reason", jd.Reason, "rule", jd.Rule)
			return nil, errRefused // closes both sides: the client sees its TLS fail
		}
		// What the proxy read before the relay: the ClientHello, and bytes the client sent
		// past it or pipelined after a CONNECT. They go to the destination first.
		if buffered := c.br.Buffered(); buffered > 0 {
			b, _ := c.br.Peek(buffered)
			prefix = append(prefix, b...)
		}
		c.record(events.KindConnect, s, judged, jd, res.Latency())
		return prefix, err
	})
	if !refused {
		c.recordClose(s, judged, result)
	}
}

// checkSNI reads the ClientHello and requires its server name to be host. It returns the
// bytes read (the prefix for the destination) and, on a refusal, the denial.
func (c *clientConn) checkSNI(host string) ([]byte, policy.Decision) {
	c.cr.mode = modeRaw
	c.conn.SetReadDeadline(time.Now().Add(c.p.cfg.HandshakeTimeout))
	name, hello, err := sni.ServerName(c.br)
	c.conn.SetReadDeadline(time.Time{})
	switch {
	case errors.Is(err, sni.ErrNoServerName):
		return hello, deny(policy.ReasonNoHost, ruleNoSNI)
	case errors.Is(err, sni.ErrNotTLS), errors.Is(err, sni.ErrMalformed), errors.Is(err, sni.ErrTooLarge):
		return hello, deny(policy.ReasonNotTLS, ruleNotTLS+": "+err.Error())
	case err != nil:
		// The client left, or sent nothing in time, or the tunnel was cancelled: no
		// ClientHello, no tunnel.
		return hello, deny(policy.ReasonNotTLS, ruleNotTLS+": "+err.Error())
	}
	if n, nerr := policy.NormalizeName(name); nerr != nil || n != host {
		return hello, deny(policy.ReasonSNIMismatch, ruleSNI+" ("+host+"), not "+sanitize(name))
	}
	return hello, policy.Decision{Allow: true}
}

// peekName is the first look at a tunnel to an IP literal (allowed by allowed_cidrs, or in
// monitor mode), or by name to a port other than 443 (open by an allowed_tcp entry, or
// because the name's addresses are inside allowed_cidrs). A name is judged wherever it is seen (DESIGN §4): when the
// client's first bytes are a TLS ClientHello with a server name, the tunnel is judged again
// as that name at the address dialled, as policy.Set.Decide judges a connection with both,
// so that denied_domains holds there too, and the record carries the name. What else it
// may be passes as it is, with the address's decision:
//
//   - The wait for the first byte has no deadline of its own: the destination's bytes
//     flow meanwhile (a server that speaks first), and a tunnel where nothing moves for
//     IdleTimeout is closed.
//   - A first byte other than a TLS handshake or alert record's (0x16, 0x15: what a
//     crypto/tls server accepts first, skipping warning alerts) is another protocol: the
//     address is all there is to judge. So is TLS without a server name.
//   - Bytes that begin as such a record but are no ClientHello the proxy reads (an alert
//     first, a record version other than 3.x, cut, larger than sni.MaxHelloBytes,
//     malformed, or not complete within HandshakeTimeout) are refused: the destination
//     might read a name in them that the proxy could not.
//   - Only the first bytes are read: TLS started later inside another protocol (STARTTLS)
//     is not seen, as in any tunnel to an address.
func (c *clientConn) peekName(s *Source, conn policy.Conn, d policy.Decision, r *relay.Relay) ([]byte, policy.Conn, policy.Decision, error) {
	c.cr.mode = modeRaw
	if c.br.Buffered() == 0 {
		if err := r.WaitClient(); err != nil {
			return nil, conn, d, err
		}
	}
	// WaitClient returned: the byte is there (a backstop deadline where it cannot wait).
	c.conn.SetReadDeadline(time.Now().Add(c.p.cfg.IdleTimeout))
	b, err := c.br.Peek(1)
	c.conn.SetReadDeadline(time.Time{})
	switch {
	case errors.Is(err, io.EOF):
		return nil, conn, d, nil // the client ended without a byte: the relay passes the end on
	case err != nil:
		return nil, conn, d, err
	case b[0] != 0x16 && b[0] != 0x15:
		return nil, conn, d, nil
	}
	c.conn.SetReadDeadline(time.Now().Add(c.p.cfg.HandshakeTimeout))
	name, hello, err := sni.ServerName(c.br)
	c.conn.SetReadDeadline(time.Time{})
	switch {
	case errors.Is(err, sni.ErrNoServerName):
		return hello, conn, d, nil
	case err != nil:
		return hello, conn, deny(policy.ReasonNotTLS, ruleTLSToAddress+": "+err.Error()), nil
	}
	host, err := policy.NormalizeName(name)
	if err != nil {
		return hello, conn, deny(policy.ReasonBadName, "TLS server name "+clip(sanitize(name))+": "+err.Error()), nil
	}
	named := conn
	named.Host, named.IPLiteral = host, false
	return hello, named, atAddress(effectiveNow(s).Decide(named), d), nil
}
