package proxy

import (
	"net/http"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/relay"
	"github.com/egressd/egressd/policy"
)

// Rules of the proxy's own refusals.
const (
	ruleSNI          = "after CONNECT host:443 the TLS server name must be that host"
	ruleNoSNI        = "TLS without SNI: the gateway needs a name to judge"
	ruleNotTLS       = "a CONNECT to port 443 by name must carry TLS"
	ruleTLSToAddress = "TLS to an address must begin with a ClientHello the gateway can read"
	ruleHost         = "the Host header must name the host of the absolute URL"
	ruleBadTarget    = "the request target must be host:port (CONNECT) or an http:// URL"
)

// deny is a refusal of the proxy's own, decided before or after the policy.
func deny(reason policy.Reason, rule string) policy.Decision { return policy.Refused(reason, rule) }

// eventSource is whom the records of connections from s are about.
func (s *Source) eventSource() events.Source {
	return events.Source{Tenant: s.Tenant, VMID: s.VMID, SessionID: s.ID}
}

// record sends one decision record.
func (c *clientConn) record(kind string, s *Source, conn policy.Conn, d policy.Decision, dial time.Duration) {
	r := events.Decided(kind, s.eventSource(), conn, d)
	if dial > 0 {
		r.DialMS = events.Millis(dial)
	}
	c.p.cfg.Sink.Record(r)
}

// recordClose sends the KindClose record of a connection that a KindConnect allowed.
func (c *clientConn) recordClose(s *Source, conn policy.Conn, res relay.Result) {
	c.p.cfg.Sink.Record(events.Closed(s.eventSource(), conn, res.Up, res.Down, res.Duration, res.Reason))
}

// refuse answers a denial: 403 with the decision in headers and a line a person can act
// on, e.g. "egressd: CONNECT api.example.com:22 denied for session ses_x: port is not
// allowed (only TCP 80 and 443 ...) — change the session or VM policy". In transparent
// mode the line names the VM.
func (c *clientConn) refuse(what string, s *Source, d policy.Decision) {
	status := http.StatusForbidden
	fix := "change the session or VM policy"
	switch d.Reason {
	case policy.ReasonTooMany:
		status = http.StatusTooManyRequests
		fix = "close some of the session's connections first"
	case policy.ReasonBadRequest:
		status = http.StatusBadRequest
		fix = "fix the request"
	case policy.ReasonHostMismatch:
		fix = "send the Host of the URL, or no Host header"
		if s.ID == "" { // transparent: there is no URL but the connection's port
			fix = "send one Host header, with no port or the port the connection went to"
		}
	case policy.ReasonNoHost:
		fix = "send a Host header: the gateway judges HTTP by its host name"
	}
	if d.Layer == policy.LayerHard && d.Reason == policy.ReasonHardDeny {
		fix = "no policy can allow this address"
	}
	body := "egressd: " + what + " denied for " + s.who() + ": " + string(d.Reason) + ": " + events.Refusal(d) + " — " + fix + "\n"
	c.respond(status, []string{"X-Egress-Decision", "deny", "X-Egress-Reason", string(d.Reason), "X-Egress-Rule", d.Rule}, body)
}

// badGateway answers an allowed destination that could not be reached.
func (c *clientConn) badGateway(what string, err error) {
	status := http.StatusBadGateway
	if isTimeout(err) {
		status = http.StatusGatewayTimeout
	}
	c.respond(status, []string{"X-Egress-Decision", "allow"}, "egressd: "+what+" was allowed but could not be reached: "+err.Error()+"\n")
}
