package suggest

import (
	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// notKey groups the denials that no entry lifts: same reason, same destination.
type notKey struct {
	reason          policy.Reason
	layer, kind     string
	host, ip        string
	port            int
	transport, rule string
}

func (b *builder) notAllowable(r *events.Record, reason policy.Reason, rule string) {
	k := notKey{reason: reason, layer: r.Layer, kind: r.Kind, host: r.Host, ip: r.IP, port: r.Port, transport: r.Transport, rule: rule}
	if n, ok := b.not[k]; ok {
		n.Covers++
		return
	}
	b.not[k] = &client.NotAllowable{
		Reason: reason, Layer: r.Layer, Kind: r.Kind, Host: r.Host, IP: r.IP, Port: r.Port, Transport: r.Transport,
		Rule: rule, Covers: 1, Explanation: explain(reason, r),
	}
}

// explain says why no entry of allowed_domains or allowed_tcp lifts a denial, and what a
// person could do instead.
func explain(reason policy.Reason, r *events.Record) string {
	switch reason {
	case policy.ReasonHardDeny:
		return "the address is always denied (loopback, link-local and metadata, multicast, egressd's own addresses, the operator's list): no policy can allow it"
	case policy.ReasonDeniedDomain:
		return "the host is in denied_domains, which wins over every allowance: remove that entry if the host should be reachable (a suggestion never removes one)"
	case policy.ReasonIPLiteral:
		return "the destination was given as an address, not a name: connect by host name, or add the address to allowed_cidrs, which opens every port and protocol to it"
	case policy.ReasonNotPublic:
		return "the name resolved to an address that is not public, and a name never leads into a private network: if this is an internal service, add its range to allowed_cidrs"
	case policy.ReasonNoHost:
		return "the gateway saw no host name (TLS without SNI, HTTP without Host), so nothing can allow it by name: add the address to allowed_cidrs if it must be reached"
	case policy.ReasonPort, policy.ReasonHostNotListed, policy.ReasonHTTPSOff, policy.ReasonHTTPOff, policy.ReasonNoPolicy:
		if r.Host == "" {
			return "the gateway saw only an address, no host name: connect by a name that the DNS filter answers, or add the address to allowed_cidrs"
		}
	case policy.ReasonUDP, policy.ReasonICMP, policy.ReasonTransport:
		return "only allowed_cidrs opens UDP and ICMP (QUIC falls back to TCP): add the range to allowed_cidrs if this traffic must pass"
	case policy.ReasonQueryType:
		return "only A and AAAA queries are answered, whatever the policy says"
	case policy.ReasonMethodNotAllowed, policy.ReasonPathNotAllowed, policy.ReasonBadPath:
		return "the host is allowed but the layer's http_rules refuse this request: edit http_rules (a suggestion does not)"
	case policy.ReasonInterceptionUnavailable:
		return "the host is intercepted (http_rules or a secret) and this gateway does not intercept"
	case policy.ReasonBadName:
		return "the host name is not valid, so no entry can name it"
	}
	return reason.Message() + ": a refusal by the gateway itself, not by the layer's lists"
}
