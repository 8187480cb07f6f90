package proxy

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/egressd/egressd/internal/dialer"
	"github.com/egressd/egressd/internal/events"
	"github.com/egressd/egressd/internal/relay"
	"github.com/egressd/egressd/internal/sni"
	"github.com/egressd/egressd/policy"
)

// connect serves a CONNECT request: decide, dial, answer 200, check the TLS server name
// on port 443, then relay until the tunnel ends. The connection is the tunnel's from here.
func (c *clientConn) connect(req *http.Request, s *Session) {
	what := "CONNECT " + req.RequestURI
	t, err := parseAuthority(req.RequestURI, 0)
	if err != nil {
		c.record(events.KindConnect, s, policy.Conn{Transport: policy.TCP}, deny(ReasonBadRequest, ruleBadTarget), 0)
		c.refuse(what, s, deny(ReasonBadRequest, err.Error()))
		return
	}
	conn := t.conn()
	if t.nameErr != nil {
		d := deny(policy.ReasonBadName, t.nameErr.Error())
		c.record(events.KindConnect, s, policy.Conn{Port: t.port, Transport: policy.TCP}, d, 0)
		c.refuse(what, s, d)
		return
	}
	what = "CONNECT " + t.String()
	c.tunnel(s, conn, what, tunnelOps{
		refuse:      func(d policy.Decision) { c.refuse(what, s, d) },
		unreachable: func(err error) { c.badGateway(t.String(), err) },
		established: func() ([]byte, policy.Decision, error) {
			c.conn.SetWriteDeadline(time.Now().Add(c.p.cfg.HandshakeTimeout))
			_, err := io.WriteString(c.conn, "HTTP/1.1 200 Connection established\r\n\r\n")
			c.conn.SetWriteDeadline(time.Time{})
			if err != nil || conn.Host == "" || conn.Port != 443 {
				return nil, policy.Decision{Allow: true}, err
			}
			prefix, d := c.checkSNI(conn.Host)
			return prefix, d, nil
		},
	})
}

// tunnelOps is what differs between a CONNECT tunnel and a transparent TLS connection.
type tunnelOps struct {
	// refuse answers a denial before the dial (the policy's, or the cap's).
	refuse func(policy.Decision)
	// unreachable answers an allowed destination that could not be reached.
	unreachable func(error)
	// established runs once the destination is connected, and before the allow is
	// recorded. It returns what the destination gets first, or a denial that ends the
	// tunnel before a byte reaches the destination, or the error of a client that left.
	established func() (prefix []byte, d policy.Decision, err error)
}

// tunnel is the one path of the explicit and the transparent proxy from a decision to a
// relay: take one of s's slots, decide conn and dial it (package dialer: to an address
// the gateway resolved and judged itself), register it with s.Live, and relay until it
// ends. The connection is the tunnel's from here.
func (c *clientConn) tunnel(s *Session, conn policy.Conn, what string, ops tunnelOps) {
	if !c.p.acquire(s) {
		d := c.p.tooMany(s)
		c.record(events.KindConnect, s, conn, d, 0)
		ops.refuse(d)
		return
	}
	defer c.p.release(s)

	res, err := c.p.cfg.Dialer.Dial(c.p.ctx, policySet(s), conn)
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
	untrack := s.Live.Track(res.Target, r.Cancel)
	defer untrack()

	// The prefix is what the proxy read before the relay: the ClientHello, and bytes the
	// client sent past it or pipelined after a CONNECT. They go to the destination first.
	prefix, d, werr := ops.established()
	if werr == nil && !d.Allow {
		// The allow is recorded only now, so this connection has one record: this denial.
		d.Rule = sanitize(d.Rule)
		c.record(events.KindConnect, s, res.Target, d, res.Latency())
		c.p.log.Debug("tunnel refused after the ClientHello", "session", s.ID, "vm", s.VMID, "what", what, "reason", d.Reason, "rule", d.Rule)
		r.Cancel(relay.ReasonError) // closes both sides: the client sees its TLS fail
		return
	}
	if buffered := c.br.Buffered(); buffered > 0 {
		b, _ := c.br.Peek(buffered)
		prefix = append(prefix, b...)
	}
	c.record(events.KindConnect, s, res.Target, res.Decision, res.Latency())
	if werr != nil {
		r.Cancel(relay.ReasonError)
	}
	result := r.Run(prefix)
	c.recordClose(s, res.Target, result)
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
		return hello, deny(ReasonNotTLS, ruleNotTLS+": "+err.Error())
	case err != nil:
		// The client left, or sent nothing in time, or the tunnel was cancelled: no
		// ClientHello, no tunnel.
		return hello, deny(ReasonNotTLS, ruleNotTLS+": "+err.Error())
	}
	if n, nerr := policy.NormalizeName(name); nerr != nil || n != host {
		return hello, deny(ReasonSNIMismatch, ruleSNI+" ("+host+"), not "+sanitize(name))
	}
	return hello, policy.Decision{Allow: true}
}
