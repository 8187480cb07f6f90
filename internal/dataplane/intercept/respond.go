package intercept

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// exchange is one request being served: what its record will say, and the answers the
// engine gives itself.
type exchange struct {
	w     http.ResponseWriter
	st    *connState
	start time.Time

	method, path string
	host         string // the request's host when it is not the SNI (421)
	decision     policy.Decision
	body         *requestBody // the request's body on its way up, if it has one
	status       int          // sent to the client; 0 until a final header went
	up           atomic.Int64 // request body bytes: the transport reads them on its own goroutine
	down         int64        // response body bytes
	secrets      []string
	ended        string
}

// writeHeader sends the final status.
func (ex *exchange) writeHeader(code int) {
	ex.status = code
	ex.w.WriteHeader(code)
}

// what names the request in a message: "GET https://api.example.com/v1/x".
func (ex *exchange) what() string {
	host := ex.st.c.SNI
	if ex.host != "" {
		host = clip(sanitize(ex.host))
	}
	return clip(sanitize(ex.method)) + " https://" + host + clip(sanitize(ex.path))
}

// refuse answers a denial the way the explicit proxy does: the decision in X-Egress-*
// headers and one line a person can act on, e.g. "egressd: POST https://api.example.com/v1/x
// denied for session ses_x: method_not_allowed: ... — change the session or VM policy".
// The connection stays open for the next request.
func (ex *exchange) refuse(status int, d policy.Decision) {
	ex.decision = d
	fix := "change the session or VM policy"
	switch d.Reason {
	case policy.ReasonHostMismatch:
		fix = "send a request for another host on a connection of its own, whose TLS server name is that host"
	case policy.ReasonBadRequest:
		fix = "fix the request"
	case ReasonSecretNotForHost:
		fix = "send the placeholder only to the secret's domains, or add this host to them"
	case policy.ReasonTooMany:
		fix = "close some of the sandbox's connections first"
	}
	if d.Layer == policy.LayerHard && d.Reason == policy.ReasonHardDeny {
		fix = "no policy can allow this address"
	}
	body := "egressd: " + ex.what() + " denied for " + who(ex.st.c.Source) + ": " + string(d.Reason) + ": " +
		events.Refusal(d) + " — " + fix + "\n"
	h := ex.w.Header()
	h.Set("X-Egress-Decision", events.Deny)
	h.Set("X-Egress-Reason", string(d.Reason))
	if d.Rule != "" {
		h.Set("X-Egress-Rule", sanitize(d.Rule))
	}
	ex.text(status, body)
}

// fail answers a request that was allowed but could not be served: the origin could not
// be reached or verified, or the answer could not be passed on.
func (ex *exchange) fail(status int, why string) {
	ex.w.Header().Set("X-Egress-Decision", events.Allow)
	ex.text(status, "egressd: "+ex.what()+" was allowed, but "+why+"\n")
}

// text writes a whole plain-text answer.
func (ex *exchange) text(status int, body string) {
	h := ex.w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	ex.writeHeader(status)
	n, _ := io.WriteString(ex.w, body)
	ex.down += int64(n)
}

// upstreamFailed answers a request whose round trip failed: a dial the policy refused
// (403, its decision), a client that stopped sending its body (408), a certificate that
// did not verify (502, saying so), an origin that could not be reached (502) or did not
// answer in time (504). A request that was cut, or whose client left, is aborted: nobody
// reads an answer, and the server must not make up one of its own.
func (ex *exchange) upstreamFailed(r *http.Request, err error) {
	var denied *DeniedError
	switch {
	case len(ex.body.trailerRefused()) > 0:
		names := ex.body.trailerRefused()
		ex.secrets = names
		ex.refuse(http.StatusForbidden, policy.Refused(ReasonSecretNotForHost,
			"secret "+strings.Join(names, ", ")+" goes only to its own domains, and "+ex.st.c.SNI+" is not one of them (in the trailer)"))
	case ex.body.stalled():
		ex.fail(http.StatusRequestTimeout, "the request body stalled: nothing came for "+ex.st.e.cfg.IdleTimeout.String())
	case errors.As(err, &denied) && denied.Decision.Reason == policy.ReasonTooMany:
		ex.refuse(http.StatusTooManyRequests, denied.Decision)
	case errors.As(err, &denied):
		ex.refuse(http.StatusForbidden, denied.Decision)
	case r.Context().Err() != nil:
		ex.abort(r, err)
	default:
		if verr, ok := verifyError(err); ok {
			ex.fail(http.StatusBadGateway, "the origin's TLS certificate did not verify ("+clip(verr.Error())+
				"): the gateway trusts the system's roots and --upstream-ca-file")
			break
		}
		status, why := http.StatusBadGateway, "the origin could not be reached: "
		if isTimeout(err) {
			status, why = http.StatusGatewayTimeout, "the origin did not answer in time: "
		}
		// The error may quote the origin's malformed answer, which may echo the value put
		// in: the message and the log carry the placeholder instead.
		msg := redactText(err.Error(), ex.st.putsNow())
		ex.fail(status, why+clip(msg))
		ex.st.e.log.Info("intercepted request failed upstream", "host", ex.st.c.SNI, "vm", ex.st.c.Source.VMID,
			"session", ex.st.c.Source.SessionID, "err", msg)
	}
}

// abort ends a response that broke off mid-way: the client must not take the part it got
// for the whole (HTTP/1.1: the connection closes; HTTP/2: the stream is reset).
func (ex *exchange) abort(r *http.Request, err error) {
	var ce *clientError
	switch {
	case r.Context().Err() != nil:
		ex.ended = ex.st.cutReason()
	case errors.As(err, &ce):
		ex.ended = "client"
	default:
		ex.ended = "upstream"
	}
	panic(http.ErrAbortHandler)
}

// finish records the exchange. It runs deferred, on an aborted response too.
func (ex *exchange) finish() {
	st := ex.st
	d := ex.decision
	rec := Record{
		Record: events.Decided(events.KindRequest, st.c.Source,
			policy.Conn{Host: st.c.SNI, Port: 443, Transport: policy.TCP}, d),
		Method:  clip(ex.method),
		Path:    ex.path,
		Status:  ex.status,
		Secrets: ex.secrets,
		Ended:   ex.ended,
	}
	rec.BytesUp, rec.BytesDown = ex.up.Load(), ex.down
	rec.DurationMS = events.Millis(time.Since(ex.start))
	st.e.sink.Request(rec)
}

// who names the sandbox in a message.
func who(s events.Source) string {
	if s.SessionID != "" {
		return "session " + s.SessionID
	}
	return "VM " + s.VMID
}

// sanitize keeps a header value or a message on one line whatever a client sent.
func sanitize(v string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, v)
}

// clip shortens what a client sent before it goes into a message.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
