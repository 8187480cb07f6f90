package policy

import (
	"net/netip"
	"slices"
)

// Layer names where a decision came from.
type Layer string

const (
	LayerSession Layer = "session" // the session's policy
	LayerVM      Layer = "vm"      // the VM's policy
	LayerDefault Layer = "default" // the operator's default policy, when neither is set
	LayerHard    Layer = "hard"    // the gateway's own rules: hard denials and DNS query types
)

// Transport of a connection attempt.
type Transport string

const (
	TCP  Transport = "tcp"
	UDP  Transport = "udp"
	ICMP Transport = "icmp"
)

// Conn is one connection attempt.
type Conn struct {
	// IP is the destination that would be dialled: for a name, an address the gateway
	// resolved itself. The zero Addr judges Host as a name only: no hard denial, no
	// allowed_cidrs and no public check (the check API without "resolve").
	IP   netip.Addr
	Port uint16
	// Transport is TCP when empty.
	Transport Transport
	// Host is the host name the gateway sees (TLS SNI, HTTP Host, the CONNECT target), in
	// NormalizeName form; "" when it sees none.
	Host string
	// IPLiteral says the client named the destination by address (CONNECT 192.0.2.1:443,
	// http://192.0.2.1/), so that a denial says "IP literal" rather than "no host name".
	IPLiteral bool
	// Intercepted says the caller decides every HTTP request of this connection with
	// DecideRequest (it terminates its TLS, or reads its plain HTTP request by request).
	// Without it, a connection on port 80 or 443 to a host that Intercepts names is denied
	// (interception_unavailable): a path that would splice it must not let its requests
	// through undecided. It changes nothing for other hosts.
	Intercepted bool
}

// Query is one DNS query: a name in NormalizeName form and a numeric type (1 = A, 28 = AAAA,
// 65 = HTTPS...).
type Query struct {
	Name string
	Type uint16
}

// Decision is the outcome for one attempt or query. Reason is a code of the one list
// (reasons.go), fit for a metrics label; Rule is the detail, such as
// "allowed_domains *.example.com" or "loopback 127.0.0.0/8". Mode is the mode of the layer
// whose verdict is reported (enforce for the gateway's own rules): monitor when a monitor
// layer would have denied, or when the only layer that allows is in monitor mode.
type Decision struct {
	Allow     bool
	WouldDeny bool // a monitor layer would have denied it; Allow is true
	Reason    Reason
	Rule      string
	Layer     Layer
	Mode      Mode
}

// Message is the sentence for people that goes with the decision's Reason.
func (d Decision) Message() string { return d.Reason.Message() }

// Rules that carry no entry of a policy: fixed strings, so that denials allocate nothing.
const (
	ruleAnyHTTPS        = "allow_https (any host)"
	ruleAnyHTTP         = "allow_http (any host)"
	ruleNotListed       = "not in allowed_domains"
	ruleNotListedPreset = "not in allowed_domains nor in the package manager preset"
	ruleHTTPSOff        = "allow_https is off"
	ruleHTTPSOffPreset  = "allow_https is off and the host is not in the package manager preset"
	ruleHTTPOff         = "allow_http is off"
	ruleHTTPOffPreset   = "allow_http is off and the host is not in the package manager preset"
	ruleNotPublic       = "the address is not public and not in allowed_cidrs"
	rulePort            = "only TCP 80 and 443 with a host name, allowed_tcp endpoints by name and allowed_cidrs destinations are open"
	ruleUDP             = "UDP goes only to allowed_cidrs (QUIC falls back to TCP)"
	ruleICMP            = "ICMP goes only to allowed_cidrs"
	ruleTransport       = "only TCP, UDP and ICMP are known"
	ruleIPLiteral       = "connect by host name, or add the address to allowed_cidrs"
	ruleIPLiteralTCP    = "connect by a host name that allowed_tcp lists, or add the address to allowed_cidrs"
	ruleNoHost          = "TLS without SNI or HTTP without Host: the gateway needs a name to judge"
	ruleNameNoWeb       = "allowed_domains is empty and allow_http and allow_https are off"
	ruleNoPolicy        = "no layer is set: nothing is allowed"
	ruleBadName         = "the name is not a valid host name (see NormalizeName)"
)

// Layered is one layer of an effective policy. A nil Matcher allows nothing.
type Layered struct {
	Layer   Layer
	Matcher *Matcher
}

// Effective is the effective policy of one sandbox (DESIGN §2.4): the hard denials AND every layer.
// In explicit-proxy mode the layers are the session's policy and its VM's; in transparent
// mode, the VM's and every open session's on that VM. When neither is set the caller passes
// the operator's default policy as LayerDefault. A Effective with no layer denies everything: it
// fails closed.
//
// A Effective is immutable and safe for concurrent use; build a new one when a layer changes and
// publish it through an atomic.Pointer. Decide, DecideQuery and KeepAnswer do not allocate.
type Effective struct {
	class  *classes
	layers []Layered // session layers first, then vm, then the rest, each in the given order
	extra  *Domains  // intercepted besides the layers' http_rules (secrets); nil: none
}

// NewEffective builds the effective policy of the layers, with c's address classes (nil means the
// zero Classifier). c must not change afterwards.
func NewEffective(c *Classifier, layers ...Layered) *Effective {
	s := &Effective{class: compileClassifier(c), layers: slices.Clone(layers)}
	slices.SortStableFunc(s.layers, func(a, b Layered) int { return layerRank(a.Layer) - layerRank(b.Layer) })
	return s
}

// layerRank orders layers for reports: the session first, then the VM, then the rest. A
// denial is reported from the session before the VM because the session's policy is the
// one a client most likely just set.
func layerRank(l Layer) int {
	switch l {
	case LayerSession:
		return 0
	case LayerVM:
		return 1
	}
	return 2
}

// verdict is one layer's answer.
type verdict struct {
	allow  bool
	reason Reason
	rule   string
}

// Decide judges one connection attempt (DESIGN §2.2). The hard denials come first and no mode
// lifts them. Then every layer decides on its own, and the decision is the AND of theirs:
// a denial by an enforce layer denies (the session's is reported before the VM's); a denial
// by a monitor layer only sets WouldDeny; when every layer allows, the first one's reason is
// reported.
func (s *Effective) Decide(c Conn) Decision {
	if c.Host != "" {
		host, d, ok := checkName(c.Host)
		if !ok {
			if !ipLiteral(c.Host) {
				return d
			}
			host, c.IPLiteral = "", true // "CONNECT 192.0.2.1:443" passed as a host name
		}
		c.Host = host
	}
	ip := c.IP.Unmap().WithZone("")
	if ip.IsValid() {
		if rule, denied := s.class.hardDeny(ip, c.Port); denied {
			return Decision{Reason: ReasonHardDeny, Rule: rule, Layer: LayerHard, Mode: Enforce}
		}
	}
	d := s.combine(func(m *Matcher) verdict { return m.decide(c, ip, s.class) })
	if d.Allow && !c.Intercepted && c.Host != "" && (c.Port == 443 || c.Port == 80) && (c.Transport == TCP || c.Transport == "") {
		if nd, ok := s.notIntercepted(c.Host, d); ok {
			return nd
		}
	}
	return d
}

// checkName makes sure a name from a caller is in normal form. Callers normalise names with
// NormalizeName; should one forget, the name is normalised here (allocating, on this rare
// path only), so that "EXAMPLE.com" cannot slip past a denied_domains entry "example.com".
// A name that cannot be normalised is denied.
func checkName(name string) (string, Decision, bool) {
	if n, ok := fastName(name); ok {
		return n, Decision{}, true
	}
	n, err := slowName(name)
	if err != nil {
		return "", Decision{Reason: ReasonBadName, Rule: ruleBadName, Layer: LayerHard, Mode: Enforce}, false
	}
	return n, Decision{}, true
}

// combine applies judge to every layer and ANDs the verdicts. When every layer allows, the
// first layer's verdict is reported, or the first that an http_rules entry gave.
func (s *Effective) combine(judge func(*Matcher) verdict) Decision {
	if len(s.layers) == 0 {
		return Decision{Reason: ReasonNoPolicy, Rule: ruleNoPolicy, Layer: LayerDefault, Mode: Enforce}
	}
	var first, monitorDeny Decision
	haveMonitorDeny := false
	for i, l := range s.layers {
		var v verdict
		monitor := false
		if l.Matcher == nil {
			v = verdict{reason: ReasonNoPolicy, rule: ruleNoPolicy}
		} else {
			v = judge(l.Matcher)
			monitor = l.Matcher.monitor
		}
		d := Decision{Allow: v.allow, Reason: v.reason, Rule: v.rule, Layer: l.Layer, Mode: Enforce}
		if monitor {
			d.Mode = Monitor
		}
		switch {
		case !v.allow && !monitor:
			return d // layers are in report order: the first enforce denial is the one to show
		case !v.allow && !haveMonitorDeny:
			monitorDeny, haveMonitorDeny = d, true
		case i == 0, v.allow && v.reason == ReasonHTTPRules && first.Reason != ReasonHTTPRules:
			// A request allowed by an http_rules entry reports that entry, the most
			// specific allowance, even when an earlier layer allowed it by host only.
			first = d
		}
	}
	if haveMonitorDeny {
		monitorDeny.Allow, monitorDeny.WouldDeny = true, true
		return monitorDeny
	}
	return first // every layer allowed, the first one included
}

// decide is one layer's verdict on a connection; ip is unmapped (zero: judge the name only)
// and cl says what counts as public.
func (m *Matcher) decide(c Conn, ip netip.Addr, cl *classes) verdict {
	if c.Host != "" {
		// denied_domains wins over everything, allowed_cidrs included, wherever a name is seen.
		if rule, ok := m.denied.match(c.Host); ok {
			return verdict{false, ReasonDeniedDomain, rule}
		}
	}
	if ip.IsValid() {
		if i := m.cidrs.lookup(ip); i >= 0 {
			return verdict{true, ReasonAllowedCIDRs, m.cidrRules[i]}
		}
	}
	switch c.Transport {
	case TCP, "":
	case UDP:
		return verdict{false, ReasonUDP, ruleUDP}
	case ICMP:
		return verdict{false, ReasonICMP, ruleICMP}
	default:
		return verdict{false, ReasonTransport, ruleTransport}
	}
	if c.Host != "" {
		// allowed_tcp opens name:port whatever the web flags say; the address, as for the
		// web, must be public or inside allowed_cidrs (DESIGN §2.6).
		if rule, ok := m.matchTCP(c.Host, c.Port); ok {
			if ip.IsValid() && !cl.isPublic(ip) {
				return verdict{false, ReasonNotPublic, ruleNotPublic}
			}
			return verdict{true, ReasonAllowedTCP, rule}
		}
	}
	if c.Port != 80 && c.Port != 443 {
		if c.Host == "" && c.IPLiteral {
			return verdict{false, ReasonIPLiteral, ruleIPLiteralTCP}
		}
		return verdict{false, ReasonPort, rulePort}
	}
	if c.Host == "" {
		if c.IPLiteral {
			return verdict{false, ReasonIPLiteral, ruleIPLiteral}
		}
		return verdict{false, ReasonNoHost, ruleNoHost}
	}
	v := m.web(c.Host, c.Port)
	if v.allow && ip.IsValid() && !cl.isPublic(ip) {
		// The address was not in allowed_cidrs (step 2 would have allowed it): a name must not
		// lead into a private network.
		return verdict{false, ReasonNotPublic, ruleNotPublic}
	}
	return v
}

// web is step 3 for host on port 80 or 443, denied_domains already checked.
func (m *Matcher) web(host string, port uint16) verdict {
	flag := port == 443 && m.policy.AllowHTTPS || port == 80 && m.policy.AllowHTTP
	if flag {
		if m.allowed.empty() {
			if port == 443 {
				return verdict{true, ReasonAllowHTTPS, ruleAnyHTTPS}
			}
			return verdict{true, ReasonAllowHTTP, ruleAnyHTTP}
		}
		if rule, ok := m.allowed.match(host); ok {
			return verdict{true, ReasonAllowedDomains, rule}
		}
	}
	if rule, ok := m.matchPreset(host); ok {
		return verdict{true, ReasonAllowPackageManagers, rule}
	}
	withPreset := m.preset != nil
	switch {
	case flag && withPreset:
		return verdict{false, ReasonHostNotListed, ruleNotListedPreset}
	case flag:
		return verdict{false, ReasonHostNotListed, ruleNotListed}
	case port == 443 && withPreset:
		return verdict{false, ReasonHTTPSOff, ruleHTTPSOffPreset}
	case port == 443:
		return verdict{false, ReasonHTTPSOff, ruleHTTPSOff}
	case withPreset:
		return verdict{false, ReasonHTTPOff, ruleHTTPOffPreset}
	}
	return verdict{false, ReasonHTTPOff, ruleHTTPOff}
}

// KeepAnswer reports whether an address from a DNS answer may be given to the sandbox
// (DESIGN §2.2): it is not hard-denied (egressd's own addresses included), and for every
// enforce layer it is public or inside that layer's allowed_cidrs. Monitor layers strip
// nothing: the connection that follows is judged, and recorded, by Decide. With no layer,
// nothing is kept.
func (s *Effective) KeepAnswer(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if !a.IsValid() || len(s.layers) == 0 {
		return false
	}
	if _, denied := s.class.hardDeny(a, 0); denied {
		return false
	}
	public := s.class.isPublic(a)
	for _, l := range s.layers {
		if l.Matcher == nil {
			return false
		}
		if public || l.Matcher.monitor {
			continue
		}
		if l.Matcher.cidrs.lookup(a) < 0 {
			return false
		}
	}
	return true
}

// AllowedPrefixes returns the destinations that every layer allows by allowed_cidrs (the
// intersection of the layers' lists), for the firewall rules that forward such traffic
// without the proxy. Hard denials are not subtracted: the firewall puts them first. With no
// layer, or a nil Matcher, the result is empty.
func (s *Effective) AllowedPrefixes() []netip.Prefix {
	if len(s.layers) == 0 {
		return []netip.Prefix{}
	}
	var out []netip.Prefix
	for i, l := range s.layers {
		if l.Matcher == nil {
			return []netip.Prefix{}
		}
		if i == 0 {
			out = minimalPrefixes(slices.Clone(l.Matcher.prefixes))
		} else {
			out = IntersectPrefixes(out, l.Matcher.prefixes)
		}
	}
	return out
}
