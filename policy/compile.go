package policy

import (
	"fmt"
	"net/netip"
	"slices"
)

// Matcher is one compiled policy: immutable, built once by Compile when a policy is set, and
// then read by any number of goroutines without locks (the data path holds it, or the Effective
// that holds it, in an atomic.Pointer). Every lookup is allocation-free; the rule strings that
// decisions report are computed here, once.
type Matcher struct {
	policy  Policy
	monitor bool

	allowed domainSet[string] // pattern → "allowed_domains <pattern>"
	denied  domainSet[string] // pattern → "denied_domains <pattern>"

	prefixes  []netip.Prefix
	cidrs     prefixSet
	cidrRules []string // "allowed_cidrs <prefix>", by index in prefixes

	preset *presetMatcher // nil unless AllowPackageManagers

	tcp domainSet[[]tcpPort] // allowed_tcp by name pattern

	rules domainSet[[]*compiledRule] // http_rules by domain pattern
}

// Compile validates p as Normalize does and compiles it, with preset as the package-manager
// registry list (nil means BuiltinPreset). The limits MaxDomains and MaxCIDRs are not applied
// here: they bound what a client may store (Normalize applies them at the API), while an
// operator's own policy may be larger. Compile is linear in the size of the policy, up to the
// sort; 100,000 domains compile in a fraction of a second.
func Compile(p Policy, preset *Preset) (*Matcher, error) {
	np, _, err := p.normalize(false)
	if err != nil {
		return nil, err
	}
	m := &Matcher{policy: np, monitor: np.Mode == Monitor}
	m.allowed = newDomainSet(np.AllowedDomains, prefixed("allowed_domains ", np.AllowedDomains))
	m.denied = newDomainSet(np.DeniedDomains, prefixed("denied_domains ", np.DeniedDomains))
	// normalize leaves canonical strings; parsing them again cannot fail.
	m.prefixes = make([]netip.Prefix, len(np.AllowedCIDRs))
	for i, s := range np.AllowedCIDRs {
		m.prefixes[i] = netip.MustParsePrefix(s)
	}
	m.cidrs = newPrefixSet(m.prefixes)
	m.cidrRules = prefixed("allowed_cidrs ", np.AllowedCIDRs)
	m.rules = compileRules(np.HTTPRules)
	m.tcp = compileTCP(np.AllowedTCP)
	if np.AllowPackageManagers {
		if preset == nil {
			preset = builtin()
		} else if err := preset.Validate(); err != nil {
			return nil, fmt.Errorf("package-manager preset: %w", err)
		}
		m.preset = preset.matcher()
	}
	return m, nil
}

func prefixed(prefix string, ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = prefix + s
	}
	return out
}

// Policy returns the normalised policy m was compiled from (a copy: changing it does not
// change m).
func (m *Matcher) Policy() Policy {
	p := m.policy
	p.AllowedDomains = slices.Clone(p.AllowedDomains)
	p.AllowedCIDRs = slices.Clone(p.AllowedCIDRs)
	p.DeniedDomains = slices.Clone(p.DeniedDomains)
	p.AllowedTCP = slices.Clone(p.AllowedTCP)
	p.HTTPRules = cloneRules(p.HTTPRules)
	return p
}

// Mode returns the policy's mode, without copying the policy.
func (m *Matcher) Mode() Mode { return m.policy.Mode }

// Prefixes returns the policy's allowed_cidrs as prefixes (a copy), for the firewall rules
// that forward CIDR traffic without the proxy.
func (m *Matcher) Prefixes() []netip.Prefix { return slices.Clone(m.prefixes) }

// MatchCIDR reports the allowed_cidrs rule that holds ip ("allowed_cidrs 10.0.0.0/8"), if
// any. IPv4-mapped addresses match as the IPv4 address they hold.
func (m *Matcher) MatchCIDR(ip netip.Addr) (rule string, ok bool) {
	if i := m.cidrs.lookup(ip.Unmap().WithZone("")); i >= 0 {
		return m.cidrRules[i], true
	}
	return "", false
}

// MatchAllowed reports the allowed_domains rule that matches host ("allowed_domains
// *.example.com"), if any; host must be in NormalizeName form.
func (m *Matcher) MatchAllowed(host string) (rule string, ok bool) { return m.allowed.match(host) }

// MatchDenied reports the denied_domains rule that matches host, if any; host must be in
// NormalizeName form.
func (m *Matcher) MatchDenied(host string) (rule string, ok bool) { return m.denied.match(host) }

// matchPreset reports the preset rule that matches host, when allow_package_managers is on.
func (m *Matcher) matchPreset(host string) (string, bool) {
	if m.preset == nil {
		return "", false
	}
	e, ok := m.preset.match(host)
	return e.rule, ok
}
