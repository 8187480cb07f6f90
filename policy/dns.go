package policy

import "strconv"

// DNS query types that the policy treats specially.
const (
	QTypeA     uint16 = 1
	QTypeAAAA  uint16 = 28
	QTypeSVCB  uint16 = 64
	QTypeHTTPS uint16 = 65
)

// qtypeNames names the query types a person is likely to meet in a decision record.
var qtypeNames = map[uint16]string{
	1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 10: "NULL", 12: "PTR", 13: "HINFO", 15: "MX",
	16: "TXT", 17: "RP", 18: "AFSDB", 24: "SIG", 25: "KEY", 28: "AAAA", 29: "LOC", 33: "SRV",
	35: "NAPTR", 37: "CERT", 39: "DNAME", 41: "OPT", 43: "DS", 44: "SSHFP", 46: "RRSIG",
	47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA",
	59: "CDS", 60: "CDNSKEY", 61: "OPENPGPKEY", 64: "SVCB", 65: "HTTPS", 99: "SPF",
	108: "EUI48", 109: "EUI64", 249: "TKEY", 250: "TSIG", 251: "IXFR", 252: "AXFR",
	255: "ANY", 256: "URI", 257: "CAA",
}

// qtypeRules are the Rule strings of refused query types, built once so that a refusal of a
// common type allocates nothing.
var qtypeRules = func() map[uint16]string {
	m := make(map[uint16]string, len(qtypeNames))
	for t, name := range qtypeNames {
		m[t] = qtypeRule(t, name)
	}
	return m
}()

func qtypeRule(t uint16, name string) string {
	if t == QTypeHTTPS || t == QTypeSVCB {
		return name + ": refused so that clients keep a readable SNI (no ECH); only A and AAAA are answered"
	}
	return name + ": only A and AAAA are answered"
}

// QTypeString names a DNS query type: "A", "TXT", "HTTPS", or "TYPE4242" (RFC 3597) for a
// type without a mnemonic here.
func QTypeString(t uint16) string {
	if name, ok := qtypeNames[t]; ok {
		return name
	}
	return "TYPE" + strconv.Itoa(int(t))
}

// DecideQuery judges a DNS query from a sandbox (DESIGN §2.2). Only A and AAAA are
// answered; every other type, HTTPS and SVCB included, is refused by the gateway itself
// (layer "hard", in every mode), since a query that is forwarded can carry data out. A name
// is answered if every layer admits it: it is not in denied_domains, and it matches
// allowed_domains (whatever the web flags say: this is how internal services are reached by
// name), or the preset with allow_package_managers, or any name when a web flag is on with an
// empty allowed_domains. Monitor layers are combined as in Decide. The addresses of the answer
// are then filtered by KeepAnswer.
func (s *Effective) DecideQuery(q Query) Decision {
	if q.Type != QTypeA && q.Type != QTypeAAAA {
		rule, ok := qtypeRules[q.Type]
		if !ok {
			rule = qtypeRule(q.Type, QTypeString(q.Type))
		}
		return Decision{Reason: ReasonQueryType, Rule: rule, Layer: LayerHard, Mode: Enforce}
	}
	if q.Name == "" {
		return Decision{Reason: ReasonNameNotListed, Rule: "the root name has no address", Layer: LayerHard, Mode: Enforce}
	}
	name, d, ok := checkName(q.Name)
	if !ok {
		return d
	}
	return s.combine(func(m *Matcher) verdict { return m.decideName(name) })
}

// decideName is one layer's verdict on a name that a DNS query asks for.
func (m *Matcher) decideName(name string) verdict {
	if rule, ok := m.denied.match(name); ok {
		return verdict{false, ReasonDeniedDomain, rule}
	}
	if rule, ok := m.allowed.match(name); ok {
		return verdict{true, ReasonAllowedDomains, rule}
	}
	if rule, ok := m.matchPreset(name); ok {
		return verdict{true, ReasonAllowPackageManagers, rule}
	}
	if rule, ok := m.matchTCPName(name); ok {
		return verdict{true, ReasonAllowedTCP, rule}
	}
	if m.allowed.empty() {
		switch {
		case m.policy.AllowHTTPS:
			return verdict{true, ReasonAllowHTTPS, ruleAnyHTTPS}
		case m.policy.AllowHTTP:
			return verdict{true, ReasonAllowHTTP, ruleAnyHTTP}
		}
		if m.preset != nil {
			return verdict{false, ReasonNameNotListed, "not in the package manager preset, and " + ruleNameNoWeb}
		}
		return verdict{false, ReasonNameNotListed, ruleNameNoWeb}
	}
	if m.preset != nil {
		return verdict{false, ReasonNameNotListed, ruleNotListedPreset}
	}
	return verdict{false, ReasonNameNotListed, ruleNotListed}
}
