package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MaxTCP bounds allowed_tcp, like MaxDomains bounds the name lists (DESIGN §2.3).
const MaxTCP = 10000

// NormalizeEndpoint validates one allowed_tcp entry (DESIGN §2.6) and returns it in normal
// form: "name:port", the name as NormalizePattern gives it (wildcards allowed), the port in
// decimal without leading zeros. It rejects, with a message a person can act on, an entry
// without a port, a port outside 1–65535 or a range of ports, and an IP literal, which
// belongs in allowed_cidrs (an address is reachable on every port there).
func NormalizeEndpoint(s string) (string, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		if ipLiteral(s) {
			return "", fmt.Errorf("%q is an address: allowed_tcp holds name:port entries; put the address in allowed_cidrs", s)
		}
		return "", fmt.Errorf("%q has no port: write name:port, e.g. github.com:22", s)
	}
	host, port := s[:i], s[i+1:]
	if ipLiteral(host) || ipLiteral(s) {
		return "", fmt.Errorf("%q names an address: allowed_tcp holds name:port entries; put the address in allowed_cidrs, where it is open on every port", s)
	}
	p, err := parsePort(port)
	if err != nil {
		return "", fmt.Errorf("%q: %v", s, err)
	}
	name, err := NormalizePattern(host)
	if err != nil {
		return "", err
	}
	return name + ":" + strconv.Itoa(int(p)), nil
}

// parsePort reads a port of an allowed_tcp entry: decimal digits only, 1 to 65535.
func parsePort(s string) (uint16, error) {
	switch {
	case s == "":
		return 0, fmt.Errorf("the port is empty: write name:port, e.g. github.com:22")
	case strings.ContainsAny(s, "-,"):
		return 0, fmt.Errorf("port %q: one port per entry, no ranges or lists: write one entry per port", s)
	case strings.Trim(s, "0123456789") != "":
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	case len(s) > 1 && s[0] == '0':
		return 0, fmt.Errorf("port %q has a leading zero: write %s", s, strings.TrimLeft(s, "0"))
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

// splitEndpoint splits a normalised entry into its name pattern and port.
func splitEndpoint(e string) (string, uint16) {
	i := strings.LastIndexByte(e, ':')
	p, _ := strconv.ParseUint(e[i+1:], 10, 16)
	return e[:i], uint16(p)
}

func normalizeTCP(in []string, limits bool) ([]string, error) {
	const field = "allowed_tcp"
	if limits && len(in) > MaxTCP {
		return nil, &FieldError{Field: field, Message: fmt.Sprintf("has %d entries; the limit is %d", len(in), MaxTCP)}
	}
	out := make([]string, len(in))
	for i, s := range in {
		n, err := NormalizeEndpoint(s)
		if err != nil {
			return nil, &FieldError{Field: fmt.Sprintf("%s[%d]", field, i), Message: err.Error()}
		}
		out[i] = n
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// tcpPort is one port that a name pattern of allowed_tcp opens, with the rule a decision
// reports ("allowed_tcp *.db.example.com:5432").
type tcpPort struct {
	port uint16
	rule string
}

// compileTCP builds the allowed_tcp lookup: for each name pattern, the ports of every entry
// that matches the names under it, its own first, then those of the wildcards above it,
// nearest first. domainSet.match returns only the most specific pattern, so each pattern
// carries the ports of the wildcards that also match its names ("*.a.com:1" and
// "*.b.a.com:2" both open x.b.a.com).
func compileTCP(entries []string) domainSet[[]tcpPort] {
	return compileTCPRules(entries, prefixed("allowed_tcp ", entries))
}

// compileTCPRules is compileTCP with the rule of each entry given (a grant's names the grant).
func compileTCPRules(entries, rules []string) domainSet[[]tcpPort] {
	own := map[string][]tcpPort{}
	var patterns []string
	for i, e := range entries {
		name, port := splitEndpoint(e)
		if _, ok := own[name]; !ok {
			patterns = append(patterns, name)
		}
		own[name] = append(own[name], tcpPort{port, rules[i]})
	}
	values := make([][]tcpPort, len(patterns))
	for i, p := range patterns {
		v := slices.Clone(own[p])
		for rest := strings.TrimPrefix(p, wildcardPrefix); ; {
			j := strings.IndexByte(rest, '.')
			if j < 0 {
				break
			}
			rest = rest[j+1:]
			v = append(v, own[wildcardPrefix+rest]...)
		}
		values[i] = v
	}
	return newDomainSet(patterns, values)
}

// matchTCP reports the allowed_tcp rule that opens host on port, if any; host must be in
// NormalizeName form. It does not allocate.
func (m *Matcher) matchTCP(host string, port uint16) (string, bool) {
	ports, ok := m.tcp.match(host)
	if !ok {
		return "", false
	}
	for _, p := range ports {
		if p.port == port {
			return p.rule, true
		}
	}
	return "", false
}

// matchTCPName reports the first allowed_tcp rule that names host, on any port.
func (m *Matcher) matchTCPName(host string) (string, bool) {
	if ports, ok := m.tcp.match(host); ok && len(ports) > 0 {
		return ports[0].rule, true
	}
	return "", false
}

// TCPPorts returns the ports, other than the web ports 80 and 443, on which Decide allows
// name (in NormalizeName form) by allowed_tcp in every layer, judged on the name alone:
// what the transparent gateway opens in the kernel for the addresses a DNS answer gave for
// name (DESIGN §2.6), each address then judged with Decide. Web ports are left out because
// the gateway never forwards them: they go to its proxy, which judges the name it sees.
// The result is sorted, and empty when no layer lists name.
func (s *Effective) TCPPorts(name string) []uint16 {
	var ports []uint16
	for _, l := range s.layers {
		if l.Matcher == nil {
			return nil
		}
		if ps, ok := l.Matcher.tcp.match(name); ok {
			for _, p := range ps {
				if p.port != 80 && p.port != 443 {
					ports = append(ports, p.port)
				}
			}
		}
	}
	slices.Sort(ports)
	ports = slices.Compact(ports)
	out := ports[:0]
	for _, p := range ports {
		if d := s.Decide(Conn{Host: name, Port: p, Transport: TCP}); d.Allow {
			out = append(out, p)
		}
	}
	return out
}

// IntersectEndpoints returns the allowed_tcp entries whose name:port both lists allow: per
// port, the intersection of the name patterns (IntersectDomains). Both lists must be
// normalised. Unlike allowed_domains, an empty list allows nothing, so the result is empty.
func IntersectEndpoints(a, b []string) []string {
	byPort := func(l []string) map[uint16][]string {
		m := map[uint16][]string{}
		for _, e := range l {
			n, p := splitEndpoint(e)
			m[p] = append(m[p], n)
		}
		return m
	}
	ma, mb := byPort(a), byPort(b)
	out := []string{}
	for p, na := range ma {
		nb, ok := mb[p]
		if !ok {
			continue
		}
		for _, n := range IntersectDomains(na, nb) {
			out = append(out, n+":"+strconv.Itoa(int(p)))
		}
	}
	slices.Sort(out)
	return out
}
