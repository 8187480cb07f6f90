package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// maxWarningsPerKind bounds the warnings about list entries, so that a list of 10,000
// overlapping entries does not produce a 10,000-line answer.
const maxWarningsPerKind = 5

// Normalize validates p and returns it in normal form (see Policy), with defaults filled in:
// names in NormalizePattern form, CIDRs in canonical form (10.0.0.0/8, ::ffff:a.b.c.d as
// a.b.c.d/32), each list sorted, without duplicates and never nil, and Mode set; http_rules
// keep their order, each entry normalised (see HTTPRule). Errors are *FieldError naming the
// field and the index of the entry in the input ("allowed_domains[3]",
// "http_rules[2].methods[0]").
//
// warnings are sentences for the API's "warnings": a policy that is valid but probably not
// what its author meant (allowed_domains with every web flag off, a name both allowed and
// denied, allowed_cidrs reaching into hard-denied ranges, http_rules for hosts the policy
// does not allow, monitor mode).
func (p Policy) Normalize() (Policy, []string, error) {
	return p.normalizeFor(true, nil)
}

// NormalizeFor is Normalize for a gateway whose address classes are c: the warning about
// allowed_cidrs reaching into hard-denied ranges leaves out what c lifts, so a loopback range
// that the operator passed in --public-cidrs (public there, not denied) draws no warning.
func (p Policy) NormalizeFor(c *Classifier) (Policy, []string, error) {
	return p.normalizeFor(true, c)
}

// normalize does Normalize; limits false skips the MaxDomains/MaxCIDRs checks, which bound
// what a client may store, not what Compile can handle.
func (p Policy) normalize(limits bool) (Policy, []string, error) {
	return p.normalizeFor(limits, nil)
}

func (p Policy) normalizeFor(limits bool, c *Classifier) (Policy, []string, error) {
	var err error
	out := Policy{
		AllowPackageManagers: p.AllowPackageManagers,
		AllowHTTP:            p.AllowHTTP,
		AllowHTTPS:           p.AllowHTTPS,
	}
	switch p.Mode {
	case "", Enforce:
		out.Mode = Enforce
	case Monitor:
		out.Mode = Monitor
	default:
		return Policy{}, nil, &FieldError{Field: "mode", Message: fmt.Sprintf("%q is not a mode; use \"enforce\" (the default) or \"monitor\"", p.Mode)}
	}
	if out.AllowedDomains, err = normalizePatterns("allowed_domains", p.AllowedDomains, limits); err != nil {
		return Policy{}, nil, err
	}
	if out.DeniedDomains, err = normalizePatterns("denied_domains", p.DeniedDomains, limits); err != nil {
		return Policy{}, nil, err
	}
	prefixes, err := parseCIDRs("allowed_cidrs", p.AllowedCIDRs, limits)
	if err != nil {
		return Policy{}, nil, err
	}
	out.AllowedCIDRs = make([]string, len(prefixes))
	for i, pr := range prefixes {
		out.AllowedCIDRs[i] = pr.String()
	}
	if out.AllowedTCP, err = normalizeTCP(p.AllowedTCP, limits); err != nil {
		return Policy{}, nil, err
	}
	if out.HTTPRules, err = normalizeHTTPRules(p.HTTPRules, limits); err != nil {
		return Policy{}, nil, err
	}
	return out, out.warnings(prefixes, c), nil
}

func normalizePatterns(field string, in []string, limits bool) ([]string, error) {
	if limits && len(in) > MaxDomains {
		return nil, &FieldError{Field: field, Message: fmt.Sprintf("has %d entries; the limit is %d", len(in), MaxDomains)}
	}
	out := make([]string, len(in))
	for i, s := range in {
		n, err := NormalizePattern(s)
		if err != nil {
			msg := err.Error()
			if _, perr := ParseCIDR(s); perr == nil && field == "denied_domains" {
				msg = fmt.Sprintf("%q is an address, and denied_domains holds host names: an address is denied unless allowed_cidrs lists it", s)
			}
			return nil, &FieldError{Field: fmt.Sprintf("%s[%d]", field, i), Message: msg}
		}
		out[i] = n
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// parseCIDRs parses a list of CIDRs into sorted, unique prefixes.
func parseCIDRs(field string, in []string, limits bool) ([]netip.Prefix, error) {
	if limits && len(in) > MaxCIDRs {
		return nil, &FieldError{Field: field, Message: fmt.Sprintf("has %d entries; the limit is %d", len(in), MaxCIDRs)}
	}
	out := make([]netip.Prefix, len(in))
	for i, s := range in {
		p, err := ParseCIDR(s)
		if err != nil {
			return nil, &FieldError{Field: fmt.Sprintf("%s[%d]", field, i), Message: err.Error()}
		}
		out[i] = p
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out), nil
}

// warnings explains what a normalised policy does that its author may not expect.
func (p Policy) warnings(prefixes []netip.Prefix, c *Classifier) []string {
	var ws []string
	if len(p.AllowedDomains) > 0 && !p.AllowHTTP && !p.AllowHTTPS && !p.AllowPackageManagers {
		ws = append(ws, "allowed_domains is set but allow_http, allow_https and allow_package_managers are all off: "+
			"the listed names only get DNS answers, and connecting to them needs their addresses in allowed_cidrs")
	}
	if len(p.AllowedDomains) > 0 && len(p.DeniedDomains) > 0 {
		denied := newDomainSet(p.DeniedDomains, make([]struct{}, len(p.DeniedDomains)))
		var both []string
		for _, a := range p.AllowedDomains {
			if denied.covers(a) {
				both = append(both, a)
			}
		}
		for i, a := range both {
			if i == maxWarningsPerKind {
				ws = append(ws, fmt.Sprintf("%d more allowed_domains entries are also denied by denied_domains", len(both)-i))
				break
			}
			ws = append(ws, fmt.Sprintf("%s is in allowed_domains and denied by denied_domains: denied_domains wins, so it is never allowed", a))
		}
	}
	n := 0
	for _, pr := range prefixes {
		var hits []string
		for _, h := range builtinHard {
			if h.prefix.Overlaps(pr) && !(h.liftable && c.publicCovers(narrower(h.prefix, pr))) {
				hits = append(hits, h.rules[direct])
			}
		}
		if len(hits) == 0 {
			continue
		}
		if n++; n > maxWarningsPerKind {
			ws = append(ws, "more allowed_cidrs entries include hard-denied addresses: hard denials still apply")
			break
		}
		ws = append(ws, fmt.Sprintf("allowed_cidrs %s includes %s: hard denials still apply, so those addresses stay denied", pr, strings.Join(hits, ", ")))
	}
	ws = append(ws, p.ruleWarnings()...)
	if p.Mode == Monitor {
		ws = append(ws, "mode is monitor: denials are recorded as would-be denials but traffic is let through (an enforce layer still applies, and hard denials always do)")
	}
	return ws
}

// narrower is the smaller of two overlapping prefixes: their intersection.
func narrower(a, b netip.Prefix) netip.Prefix {
	if a.Bits() >= b.Bits() {
		return a
	}
	return b
}

// publicCovers reports whether every address of p is inside c.Public, which may take several
// of its ranges (127.0.0.0/26 and 127.0.0.64/26 cover 127.0.0.0/25).
func (c *Classifier) publicCovers(p netip.Prefix) bool {
	if c == nil {
		return false
	}
	p = p.Masked()
	inside := false // some Public range lies strictly inside p
	for _, q := range c.Public {
		q = unmapPrefix(q.Masked())
		if q.Addr().BitLen() != p.Addr().BitLen() {
			continue
		}
		if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			return true
		}
		if q.Bits() > p.Bits() && p.Contains(q.Addr()) {
			inside = true
		}
	}
	if !inside {
		return false
	}
	// Each half must be covered; only halves holding a Public range recurse further, so
	// this takes at most one step per bit per range.
	lo := netip.PrefixFrom(p.Addr(), p.Bits()+1)
	b := p.Addr().AsSlice()
	b[p.Bits()/8] |= 0x80 >> (p.Bits() % 8)
	hiAddr, _ := netip.AddrFromSlice(b)
	return c.publicCovers(lo) && c.publicCovers(netip.PrefixFrom(hiAddr, p.Bits()+1))
}
