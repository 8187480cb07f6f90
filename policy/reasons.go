package policy

// Reason says why a decision was taken. It is a stable snake_case code (DESIGN §3): the same
// value in a Decision, an events record, the X-Egress-Reason header, the reason label of the
// metrics and the docs. Only the codes below exist; Message gives the sentence for people.
//
// The list is the one place a code is declared: the policy's own codes and those of the
// data plane's parts (the proxies and the DNS filter), so that a metrics label, a record and
// the docs cannot drift apart. A code is never renamed once released: clients match on it.
type Reason string

// Reasons for allowing: the field of the policy that allows.
const (
	ReasonAllowedCIDRs         Reason = "allowed_cidrs"
	ReasonAllowedDomains       Reason = "allowed_domains"
	ReasonAllowHTTPS           Reason = "allow_https"
	ReasonAllowHTTP            Reason = "allow_http"
	ReasonAllowPackageManagers Reason = "allow_package_managers"
	ReasonHTTPRules            Reason = "http_rules"  // a request that an http_rules entry allows
	ReasonAllowedTCP           Reason = "allowed_tcp" // a name:port that an allowed_tcp entry opens
)

// Reasons for denying, by the policy (Decide, DecideQuery) or by the gateway's own rules.
const (
	ReasonHardDeny      Reason = "hard_deny"             // step 1; Rule names the range
	ReasonDeniedDomain  Reason = "denied_domain"         // Rule names the entry
	ReasonHostNotListed Reason = "host_not_allowed"      // not in allowed_domains (nor the preset)
	ReasonHTTPSOff      Reason = "https_off"             // 443 with allow_https off
	ReasonHTTPOff       Reason = "http_off"              // 80 with allow_http off
	ReasonNotPublic     Reason = "not_public"            // allowed host, private address
	ReasonPort          Reason = "port_not_allowed"      // not 80 or 443, outside allowed_cidrs
	ReasonUDP           Reason = "udp_not_allowed"       // outside allowed_cidrs
	ReasonICMP          Reason = "icmp_not_allowed"      // outside allowed_cidrs
	ReasonTransport     Reason = "transport_not_allowed" // unknown transport
	ReasonIPLiteral     Reason = "ip_literal"            // 80/443 by address
	ReasonNoHost        Reason = "no_host"               // TLS without SNI, HTTP without Host
	ReasonQueryType     Reason = "query_type"            // DNS: only A and AAAA
	ReasonNameNotListed Reason = "name_not_allowed"      // DNS: no rule allows the name
	ReasonNoPolicy      Reason = "no_policy"             // no layer is set, or a sandbox without one
	ReasonBadName       Reason = "bad_name"              // not a name NormalizeName accepts

	// Requests to intercepted hosts (DecideRequest), and connections to them (Decide).
	ReasonMethodNotAllowed        Reason = "method_not_allowed"       // an entry allows the path, none the method
	ReasonPathNotAllowed          Reason = "path_not_allowed"         // no entry for the host allows the path
	ReasonBadPath                 Reason = "bad_path"                 // a path that cannot be judged (see canonicalPath)
	ReasonInterceptionUnavailable Reason = "interception_unavailable" // an intercepted host reached by a connection that would be spliced
)

// Reasons of the data plane's parts: what a connection or query is refused for before, or
// besides, the policy.
const (
	ReasonNameNotFound     Reason = "name_not_found"       // the name has no address (NXDOMAIN, NODATA)
	ReasonResolveFailed    Reason = "resolve_failed"       // the resolver did not answer
	ReasonSNIMismatch      Reason = "sni_mismatch"         // the ClientHello names another host than the CONNECT
	ReasonHostMismatch     Reason = "host_mismatch"        // Host contradicts the URL, the CONNECT or the port
	ReasonNotTLS           Reason = "not_tls"              // 443 that does not start with a ClientHello
	ReasonBadRequest       Reason = "bad_request"          // a request the proxy cannot read or judge
	ReasonTooMany          Reason = "too_many_connections" // the sandbox's connection cap
	ReasonUnknownSandbox   Reason = "unknown_sandbox"      // the source address is no VM's
	ReasonMalformedQuery   Reason = "malformed_query"      // DNS: not one question of opcode QUERY, or EDNS > 0
	ReasonQueryClass       Reason = "query_class"          // DNS: only class IN
	ReasonBusy             Reason = "busy"                 // DNS: too many queries in flight
	ReasonSecretNotForHost Reason = "secret_not_for_host"  // a placeholder toward a host outside its secret's domains
	ReasonSecretOverHTTP   Reason = "secret_over_http"     // a placeholder in a plain-HTTP request
	ReasonAmbiguousStream  Reason = "ambiguous_stream"     // fast path: packets that can be read more than one way
	ReasonNotResolved      Reason = "address_not_resolved" // fast path: the destination was not answered for the TLS server name
)

// ReasonInfo documents one code.
type ReasonInfo struct {
	Reason  Reason
	Allow   bool   // the code of an allowing decision
	Message string // the sentence for people
}

// reasonList is every code, in the order the docs list them.
var reasonList = []ReasonInfo{
	{ReasonAllowedCIDRs, true, "the destination is inside allowed_cidrs"},
	{ReasonAllowedDomains, true, "the host is in allowed_domains"},
	{ReasonAllowHTTPS, true, "HTTPS is allowed to any host"},
	{ReasonAllowHTTP, true, "HTTP is allowed to any host"},
	{ReasonAllowPackageManagers, true, "the host is a package registry of the preset"},
	{ReasonHTTPRules, true, "the request matches an http_rules entry"},
	{ReasonAllowedTCP, true, "the host and port are in allowed_tcp"},

	{ReasonHardDeny, false, "the address is always denied"},
	{ReasonDeniedDomain, false, "the host is in denied_domains"},
	{ReasonHostNotListed, false, "the host is not allowed"},
	{ReasonHTTPSOff, false, "HTTPS is not allowed"},
	{ReasonHTTPOff, false, "HTTP is not allowed"},
	{ReasonNotPublic, false, "the address is not public"},
	{ReasonPort, false, "the port is not allowed"},
	{ReasonUDP, false, "UDP is not allowed"},
	{ReasonICMP, false, "ICMP is not allowed"},
	{ReasonTransport, false, "the transport is not allowed"},
	{ReasonIPLiteral, false, "an IP literal outside allowed_cidrs"},
	{ReasonNoHost, false, "no host name"},
	{ReasonQueryType, false, "the query type is not answered"},
	{ReasonNameNotListed, false, "the name is not allowed"},
	{ReasonNoPolicy, false, "no policy allows it"},
	{ReasonBadName, false, "the host name is invalid"},
	{ReasonMethodNotAllowed, false, "the method is not allowed for this path"},
	{ReasonPathNotAllowed, false, "the path is not allowed"},
	{ReasonBadPath, false, "the request path is malformed"},
	{ReasonInterceptionUnavailable, false, "the host's requests must be inspected, which this gateway cannot do yet"},

	{ReasonNameNotFound, false, "the name has no address"},
	{ReasonResolveFailed, false, "the name could not be resolved"},
	{ReasonSNIMismatch, false, "the TLS server name does not match the CONNECT host"},
	{ReasonHostMismatch, false, "the Host header does not match the destination"},
	{ReasonNotTLS, false, "not TLS"},
	{ReasonBadRequest, false, "a bad request"},
	{ReasonTooMany, false, "too many connections"},
	{ReasonUnknownSandbox, false, "the source is no known sandbox"},
	{ReasonMalformedQuery, false, "a malformed DNS query"},
	{ReasonQueryClass, false, "the query class is not answered"},
	{ReasonBusy, false, "too many DNS queries in flight"},
	{ReasonSecretNotForHost, false, "the request carries a secret's placeholder toward a host outside the secret's domains"},
	{ReasonSecretOverHTTP, false, "the request carries a secret's placeholder over plain HTTP"},
	{ReasonAmbiguousStream, false, "the connection's first packets could be read more than one way"},
	{ReasonNotResolved, false, "the destination is not an address the gateway answered this sandbox for the TLS server name"},
}

var reasonInfo = func() map[Reason]ReasonInfo {
	m := make(map[Reason]ReasonInfo, len(reasonList))
	for _, r := range reasonList {
		m[r.Reason] = r
	}
	return m
}()

// Reasons lists every code with its sentence, in the docs' order.
func Reasons() []ReasonInfo { return append([]ReasonInfo(nil), reasonList...) }

// Known reports whether r is one of the codes.
func (r Reason) Known() bool {
	_, ok := reasonInfo[r]
	return ok
}

// Message is r's sentence for people ("the host is not allowed"); the code itself for an
// unknown one.
func (r Reason) Message() string {
	if i, ok := reasonInfo[r]; ok {
		return i.Message
	}
	return string(r)
}

// Refused is a denial by the gateway itself rather than by a layer's policy: a malformed
// request, an unknown sandbox, a limit. It is reported from the "hard" layer, in enforce
// mode: no policy can lift it.
func Refused(reason Reason, rule string) Decision {
	return Decision{Reason: reason, Rule: rule, Layer: LayerHard, Mode: Enforce}
}
