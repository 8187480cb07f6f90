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

	if !c.p.acquire(s.ID) {
		d := deny(ReasonTooMany, "the session has "+itoa(c.p.cfg.MaxTunnelsPerSession)+" open connections through the proxy, the limit")
		c.record(events.KindConnect, s, conn, d, 0)
		c.refuse(what, s, d)
		return
	}
	defer c.p.release(s.ID)

	res, err := c.p.cfg.Dialer.Dial(c.p.ctx, policySet(s), conn)
	switch {
	case errors.Is(err, dialer.ErrDenied):
		c.record(events.KindConnect, s, res.Target, res.Decision, 0)
		c.refuse(what, s, res.Decision)
		return
	case err != nil:
		// Allowed, but unreachable: an allowed connect is always followed by its close.
		c.record(events.KindConnect, s, res.Target, res.Decision, res.Latency())
		c.recordClose(s, res.Target, relay.Result{Reason: relay.ReasonError})
		c.p.log.Info("CONNECT destination unreachable", "session", s.ID, "target", t.String(), "err", err)
		c.badGateway(t.String(), err)
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

	c.conn.SetWriteDeadline(time.Now().Add(c.p.cfg.HandshakeTimeout))
	_, werr := io.WriteString(c.conn, "HTTP/1.1 200 Connection established\r\n\r\n")
	c.conn.SetWriteDeadline(time.Time{})

	// The prefix is what the proxy read past the CONNECT request: bytes the client
	// pipelined, and on port 443 the ClientHello. They go to the destination first.
	var prefix []byte
	if werr == nil && conn.Host != "" && conn.Port == 443 {
		var d policy.Decision
		if prefix, d = c.checkSNI(conn.Host); !d.Allow {
			// The allow is recorded only now, so this CONNECT has one record: this denial.
			d.Rule = sanitize(d.Rule)
			c.record(events.KindConnect, s, res.Target, d, res.Latency())
			c.p.log.Debug("CONNECT refused after the ClientHello", "session", s.ID, "target", t.String(), "reason", d.Reason, "rule", d.Rule)
			r.Cancel(relay.ReasonError) // closes both sides: the client sees its TLS fail
			return
		}
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
