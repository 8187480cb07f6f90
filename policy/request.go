package policy

import (
	"fmt"
	"net/netip"
)

// Request is one HTTP request inside an intercepted connection (DESIGN §2.7): the
// interception engine asks DecideRequest about each one before it forwards it.
type Request struct {
	// Host is the connection's host name: the SNI of an intercepted TLS connection, which
	// the request's Host or :authority must equal (the engine checks that), in NormalizeName
	// form (normalised here if not).
	Host string
	// IP is the upstream address the gateway dialled for the connection, if known; the zero
	// Addr judges the host as a name (no hard denial, no allowed_cidrs, no public check:
	// those were judged when the connection was dialled).
	IP netip.Addr
	// Port is 443 for HTTPS, 80 for plain HTTP: the web flag of the port applies.
	Port uint16
	// Method is the request method as sent. Methods are case-sensitive: "get" is not "GET".
	Method string
	// Path is the request-target in origin form as sent, percent-encoding and all ("/v1/x",
	// "/v1/%2e%2e/admin"); a query after '?' is ignored. DecideRequest decodes it and
	// resolves dot segments itself. "*" is the asterisk-form (OPTIONS *).
	Path string
}

// pathScratch is the stack space for the two readings of a request's path: longer paths
// are read into the heap.
const pathScratch = 512

// DecideRequest judges one HTTP request to an intercepted host (DESIGN §2.7): it is allowed
// only if its host is allowed as for a connection (the web flags, allowed_domains, the
// preset, denied_domains; and, with IP, hard denials, allowed_cidrs and the public check),
// and, in every layer that has http_rules entries for the host, some entry of that layer
// allows its method and path. A layer without an entry for the host does not restrict its
// requests. Monitor layers combine as in Decide (would_deny).
//
// The path is percent-decoded and its dot segments resolved before it is compared, so
// "/v1/../admin" and "/v1/%2e%2e/admin" are "/admin"; a path that servers could read two
// ways ("/v1/..%2Fadmin", "/v1/..;/admin") must be allowed in both readings; prefixes match
// on segment boundaries ("/v1" holds "/v1", "/v1/", "/v1/x", not "/v1x"). A malformed path
// is denied (bad_path) by every layer that has entries for the host.
//
// The decision names the layer and, for a verdict of the rules, the entry
// ("http_rules[2] api.example.com methods GET paths /v1/"); when an entry allows, the reason
// is http_rules. DecideRequest assumes the connection is intercepted: it never answers
// interception_unavailable. It does not allocate for paths up to a few hundred bytes.
func (s *Effective) DecideRequest(r Request) Decision {
	host, d, ok := checkName(r.Host)
	if !ok {
		return d
	}
	ip := r.IP.Unmap().WithZone("")
	if ip.IsValid() {
		if rule, denied := s.class.hardDeny(ip, r.Port); denied {
			return Decision{Reason: ReasonHardDeny, Rule: rule, Layer: LayerHard, Mode: Enforce}
		}
	}
	var sbuf, lbuf [pathScratch]byte
	rp := readRequestPath(r.Path, sbuf[:0], lbuf[:0])
	c := Conn{IP: ip, Port: r.Port, Transport: TCP, Host: host}
	return s.combine(func(m *Matcher) verdict {
		v := m.decide(c, ip, s.class)
		if !v.allow {
			return v
		}
		if rv, has := m.ruleVerdict(host, r.Method, &rp); has {
			return rv
		}
		return v
	})
}

// Intercepts reports whether connections to host must be intercepted (DESIGN §2.7): an
// http_rules entry of some layer, in any mode, names it, or the extra domains of
// WithIntercepted (a tenant's secrets) do. host is in NormalizeName form (normalised here if
// not; an invalid name is not intercepted: Decide denies it anyway). It does not allocate.
func (s *Effective) Intercepts(host string) bool {
	host, _, ok := checkName(host)
	if !ok {
		return false
	}
	for _, l := range s.layers {
		if l.Matcher != nil {
			if _, ok := l.Matcher.firstRule(host); ok {
				return true
			}
		}
	}
	if s.extra != nil {
		_, ok := s.extra.set.match(host)
		return ok
	}
	return false
}

// notIntercepted is the decision on a connection to host that Decide allowed (d) but that
// would not be intercepted: if host must be intercepted, it is denied with
// interception_unavailable, reported from the first enforce layer whose http_rules name it,
// else from the extra domains (layer hard); when only monitor layers name it, the
// connection is let through with would_deny, since no enforced rule restricts its requests.
// ok is false when host is not intercepted.
func (s *Effective) notIntercepted(host string, d Decision) (Decision, bool) {
	var monitored *Layered
	var monitorRule string
	for i, l := range s.layers {
		if l.Matcher == nil {
			continue
		}
		r, ok := l.Matcher.firstRule(host)
		if !ok {
			continue
		}
		if !l.Matcher.monitor {
			return Decision{Reason: ReasonInterceptionUnavailable, Rule: r.rule, Layer: l.Layer, Mode: Enforce}, true
		}
		if monitored == nil {
			monitored, monitorRule = &s.layers[i], r.rule
		}
	}
	if s.extra != nil {
		if rule, ok := s.extra.set.match(host); ok {
			return Decision{Reason: ReasonInterceptionUnavailable, Rule: rule, Layer: LayerHard, Mode: Enforce}, true
		}
	}
	if monitored == nil {
		return Decision{}, false
	}
	if d.WouldDeny {
		return d, true // already a would-be denial: keep the first reason
	}
	return Decision{Allow: true, WouldDeny: true, Reason: ReasonInterceptionUnavailable, Rule: monitorRule,
		Layer: monitored.Layer, Mode: Monitor}, true
}

// Domains is a compiled, immutable set of domain patterns (NormalizePattern form), each
// with the Rule string that a decision it causes reports. It carries the domains that are
// intercepted besides http_rules: a tenant's secrets (DESIGN §2.7).
type Domains struct {
	set domainSet[string]
}

// CompileDomains compiles patterns (names or "*." wildcards, normalised here by the one
// normaliser), rules[i] being the Rule string of patterns[i] ("secret OPENAI_KEY
// api.openai.com"); with rules nil, each reports "intercepted <pattern>". When two entries
// have the same pattern, the first one's rule is kept. Errors name the index of the pattern.
func CompileDomains(patterns, rules []string) (*Domains, error) {
	if rules != nil && len(rules) != len(patterns) {
		return nil, fmt.Errorf("policy: %d domain patterns but %d rules", len(patterns), len(rules))
	}
	norm := make([]string, 0, len(patterns))
	vals := make([]string, 0, len(patterns))
	seen := make(map[string]bool, len(patterns))
	for i, p := range patterns {
		n, err := NormalizePattern(p)
		if err != nil {
			return nil, &FieldError{Field: fmt.Sprintf("domains[%d]", i), Message: err.Error()}
		}
		if seen[n] {
			continue
		}
		seen[n] = true
		rule := "intercepted " + n
		if rules != nil {
			rule = rules[i]
		}
		norm, vals = append(norm, n), append(vals, rule)
	}
	return &Domains{set: newDomainSet(norm, vals)}, nil
}

// Match reports the rule of the pattern that matches host (NormalizeName form), if any; a
// nil *Domains matches nothing.
func (d *Domains) Match(host string) (rule string, ok bool) {
	if d == nil {
		return "", false
	}
	return d.set.match(host)
}

// WithIntercepted returns the effective policy s with extra intercepted as well: the
// domains of the tenant's secrets, which are intercepted whether or not a rule names them.
// s is not changed; nil extra returns s.
func (s *Effective) WithIntercepted(extra *Domains) *Effective {
	if extra == nil {
		return s
	}
	out := *s
	out.extra = extra
	return &out
}
