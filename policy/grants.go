package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Grant is an allowance that ends by itself (DESIGN §2.8), as the compiler sees it: entries
// that are added to one layer's allowed_domains, allowed_tcp and allowed_cidrs until
// ExpiresAt, and the grant's ID, which the rule of every decision it makes names ("grant
// gr_x: allowed_domains example.com"), so that events say which grant let a connection through.
//
// A grant only ever adds: the layer's flags stay as they are (web ports follow them), its
// denied_domains still win, and an empty allowed_domains ("any host" while a web flag is on)
// stays empty, since adding a name to it would narrow it.
type Grant struct {
	ID        string    `json:"id"`
	Domains   []string  `json:"domains"`
	TCP       []string  `json:"tcp"`
	CIDRs     []string  `json:"cidrs"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Limits of one grant: the limits of the lists it adds to.
const (
	MaxGrantDomains = MaxDomains
	MaxGrantTCP     = MaxTCP
	MaxGrantCIDRs   = MaxCIDRs
)

// NormalizeGrant validates a grant's entries with the functions that validate a policy's
// (NormalizePattern, NormalizeEndpoint, ParseCIDR) and returns them in normal form: sorted,
// without duplicates, never nil. Errors are *FieldError naming "domains[i]", "tcp[i]" or
// "cidrs[i]"; a grant with no entry at all is an error too (it would add nothing).
func NormalizeGrant(g Grant) (Grant, error) {
	var err error
	if g.Domains, err = normalizeGrantList("domains", g.Domains, MaxGrantDomains, NormalizePattern); err != nil {
		return Grant{}, err
	}
	if g.TCP, err = normalizeGrantList("tcp", g.TCP, MaxGrantTCP, NormalizeEndpoint); err != nil {
		return Grant{}, err
	}
	if g.CIDRs, err = normalizeGrantList("cidrs", g.CIDRs, MaxGrantCIDRs, func(s string) (string, error) {
		p, err := ParseCIDR(s)
		return p.String(), err
	}); err != nil {
		return Grant{}, err
	}
	if len(g.Domains)+len(g.TCP)+len(g.CIDRs) == 0 {
		return Grant{}, &FieldError{Message: "the grant is empty: give at least one entry in domains, tcp or cidrs"}
	}
	return g, nil
}

func normalizeGrantList(field string, in []string, limit int, norm func(string) (string, error)) ([]string, error) {
	if len(in) > limit {
		return nil, &FieldError{Field: field, Message: fmt.Sprintf("has %d entries; the limit is %d", len(in), limit)}
	}
	out := make([]string, 0, len(in))
	for i, s := range in {
		n, err := norm(s)
		if err != nil {
			return nil, &FieldError{Field: fmt.Sprintf("%s[%d]", field, i), Message: err.Error()}
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// grantRule is the rule a decision made by a grant's entry reports.
func grantRule(id, rule string) string { return "grant " + id + ": " + rule }

// addsDomains reports whether grants' domains are added to p's allowed_domains: not when
// the list is empty while a web flag is on, for then it allows any host already and a name
// added to it would narrow it.
func addsDomains(p Policy) bool {
	return len(p.AllowedDomains) > 0 || !(p.AllowHTTP || p.AllowHTTPS)
}

// CompileGrants compiles p as Compile does, with the entries of grants added to it, each
// entry's rule naming its grant. The policy's own entry wins the rule where both name the
// same pattern, and of two grants the first one given. Entries must be normalised
// (NormalizeGrant); one that is not is an error, as a broken stored policy is.
func CompileGrants(p Policy, preset *Preset, grants []Grant) (*Matcher, error) {
	m, err := Compile(p, preset)
	if err != nil || len(grants) == 0 {
		return m, err
	}
	np := m.policy
	var (
		domains, domainRules []string
		tcp, tcpRules        []string
	)
	// Later entries overwrite earlier ones in a domainSet: grants last first, the policy last.
	for i := len(grants) - 1; i >= 0; i-- {
		g := grants[i]
		if addsDomains(np) {
			for _, d := range g.Domains {
				if _, err := NormalizePattern(d); err != nil {
					return nil, fmt.Errorf("grant %s: domains: %w", g.ID, err)
				}
				domains = append(domains, d)
				domainRules = append(domainRules, grantRule(g.ID, "allowed_domains "+d))
			}
		}
	}
	if len(domains) > 0 {
		domains = append(domains, np.AllowedDomains...)
		domainRules = append(domainRules, prefixed("allowed_domains ", np.AllowedDomains)...)
		m.allowed = newDomainSet(domains, domainRules)
	}
	// allowed_tcp: matchTCP takes the first entry of a name's list that has the port, so
	// the policy's entries come first, then the grants in order.
	for _, e := range np.AllowedTCP {
		tcp, tcpRules = append(tcp, e), append(tcpRules, "allowed_tcp "+e)
	}
	seenPrefix := map[netip.Prefix]bool{}
	for _, pr := range m.prefixes {
		seenPrefix[pr] = true
	}
	for _, g := range grants {
		for _, e := range g.TCP {
			if _, err := NormalizeEndpoint(e); err != nil {
				return nil, fmt.Errorf("grant %s: tcp: %w", g.ID, err)
			}
			tcp, tcpRules = append(tcp, e), append(tcpRules, grantRule(g.ID, "allowed_tcp "+e))
		}
		for _, c := range g.CIDRs {
			pr, err := ParseCIDR(c)
			if err != nil {
				return nil, fmt.Errorf("grant %s: cidrs: %w", g.ID, err)
			}
			if seenPrefix[pr] {
				continue // the policy's (or an earlier grant's) rule stays the one reported
			}
			seenPrefix[pr] = true
			m.prefixes = append(m.prefixes, pr)
			m.cidrRules = append(m.cidrRules, grantRule(g.ID, "allowed_cidrs "+pr.String()))
		}
	}
	m.tcp = compileTCPRules(tcp, tcpRules)
	m.cidrs = newPrefixSet(m.prefixes)
	return m, nil
}

// withGrants is p with the entries of grants added, for Explain: what the layer allows
// while they last.
func withGrants(p Policy, grants []Grant) Policy {
	if len(grants) == 0 {
		return p
	}
	add := addsDomains(p)
	p.AllowedDomains = slices.Clone(p.AllowedDomains)
	p.AllowedTCP = slices.Clone(p.AllowedTCP)
	p.AllowedCIDRs = slices.Clone(p.AllowedCIDRs)
	for _, g := range grants {
		if add {
			p.AllowedDomains = append(p.AllowedDomains, g.Domains...)
		}
		p.AllowedTCP = append(p.AllowedTCP, g.TCP...)
		p.AllowedCIDRs = append(p.AllowedCIDRs, g.CIDRs...)
	}
	for _, l := range []*[]string{&p.AllowedDomains, &p.AllowedTCP, &p.AllowedCIDRs} {
		slices.Sort(*l)
		*l = slices.Compact(*l)
	}
	return p
}

// NextExpiry is the earliest ExpiresAt of grants, zero if there is none: when the layers
// they belong to must be compiled again without it.
func NextExpiry(grants []Grant) time.Time {
	var t time.Time
	for _, g := range grants {
		if !g.ExpiresAt.IsZero() && (t.IsZero() || g.ExpiresAt.Before(t)) {
			t = g.ExpiresAt
		}
	}
	return t
}
