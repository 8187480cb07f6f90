package policy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// HTTPRule is one entry of a policy's http_rules (DESIGN §2.7): the requests allowed to the
// hosts that Domain matches. A domain that any layer's rules name is intercepted: the gateway
// decides each HTTP request to it on its method and path, besides the host rules that decide
// every connection.
//
// In normal form (Normalize): Domain is in NormalizePattern form; Methods are upper-case
// HTTP method tokens, sorted, without duplicates; Paths are path prefixes in the canonical
// form of NormalizeRulePath, sorted, without duplicates. An empty Methods means any method,
// an empty Paths any path; both are never nil.
type HTTPRule struct {
	Domain  string   `json:"domain"`
	Methods []string `json:"methods"`
	Paths   []string `json:"paths"`
}

// Limits of http_rules (DESIGN §2.7), applied by Normalize as the other list limits are.
const (
	MaxHTTPRules   = 1000 // entries of http_rules
	MaxRuleMethods = 100  // methods of one entry
	MaxRulePaths   = 100  // paths of one entry
	maxMethodLen   = 32   // bytes of one method: the longest registered one has 17
)

// isTchar reports whether c may be part of an HTTP token (RFC 9110 §5.6.2), such as a method.
func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// NormalizeMethod validates a method of an http_rules entry. Methods are case-sensitive
// (RFC 9110 §9.1) and rules name them in upper case, the form every client sends for the
// standard ones, so "get" is an error that suggests "GET" rather than a rule that never
// matches. A method is an HTTP token of upper-case letters, digits and the token symbols;
// "*" is refused: an empty list already means any method.
func NormalizeMethod(s string) (string, error) {
	switch {
	case s == "":
		return "", errors.New(`the method is empty; give an HTTP method such as "GET"`)
	case s == "*":
		return "", errors.New(`"*" is not a method; leave methods out (or empty) to allow every method`)
	case len(s) > maxMethodLen:
		return "", fmt.Errorf("the method is %d bytes long; a method is at most %d", len(s), maxMethodLen)
	}
	lower := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isTchar(c) {
			return "", fmt.Errorf("%q is not an HTTP method: a method is a token of letters, digits and !#$%%&'*+-.^_`|~ (no spaces)", s)
		}
		lower = lower || 'a' <= c && c <= 'z'
	}
	if lower {
		return "", fmt.Errorf("%q is not upper case: methods are case-sensitive and rules give them in upper case; did you mean %q?", s, strings.ToUpper(s))
	}
	return s, nil
}

// normalizeHTTPRules validates and normalises a policy's http_rules. The entries keep their
// order (decisions name an entry by its index, "http_rules[2]", which must be the index a
// reader finds in the stored policy); two entries that say the same thing are both kept.
// Within an entry, methods and paths are sorted and duplicates dropped, as in every list of
// a policy. limits false skips the count limits, as for the other lists.
func normalizeHTTPRules(in []HTTPRule, limits bool) ([]HTTPRule, error) {
	if limits && len(in) > MaxHTTPRules {
		return nil, &FieldError{Field: "http_rules", Message: fmt.Sprintf("has %d entries; the limit is %d", len(in), MaxHTTPRules)}
	}
	out := make([]HTTPRule, len(in))
	for i, r := range in {
		n, err := r.normalize(i, limits)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

func (r HTTPRule) normalize(i int, limits bool) (HTTPRule, error) {
	field := "http_rules[" + strconv.Itoa(i) + "]"
	var out HTTPRule
	if r.Domain == "" {
		return out, &FieldError{Field: field + ".domain", Message: "is missing or empty; an entry needs the domain whose requests it allows"}
	}
	d, err := NormalizePattern(r.Domain)
	if err != nil {
		return out, &FieldError{Field: field + ".domain", Message: err.Error()}
	}
	out.Domain = d
	if limits && len(r.Methods) > MaxRuleMethods {
		return out, &FieldError{Field: field + ".methods", Message: fmt.Sprintf("has %d methods; the limit is %d", len(r.Methods), MaxRuleMethods)}
	}
	if limits && len(r.Paths) > MaxRulePaths {
		return out, &FieldError{Field: field + ".paths", Message: fmt.Sprintf("has %d paths; the limit is %d", len(r.Paths), MaxRulePaths)}
	}
	out.Methods = make([]string, len(r.Methods))
	for j, m := range r.Methods {
		if out.Methods[j], err = NormalizeMethod(m); err != nil {
			return out, &FieldError{Field: field + ".methods[" + strconv.Itoa(j) + "]", Message: err.Error()}
		}
	}
	out.Paths = make([]string, len(r.Paths))
	for j, p := range r.Paths {
		if out.Paths[j], err = NormalizeRulePath(p); err != nil {
			return out, &FieldError{Field: field + ".paths[" + strconv.Itoa(j) + "]", Message: err.Error()}
		}
	}
	slices.Sort(out.Methods)
	out.Methods = slices.Compact(out.Methods)
	slices.Sort(out.Paths)
	out.Paths = slices.Compact(out.Paths)
	return out, nil
}

// cloneRules copies rules deeply.
func cloneRules(rs []HTTPRule) []HTTPRule {
	if rs == nil {
		return nil
	}
	out := make([]HTTPRule, len(rs))
	for i, r := range rs {
		out[i] = HTTPRule{Domain: r.Domain, Methods: slices.Clone(r.Methods), Paths: slices.Clone(r.Paths)}
	}
	return out
}

// ruleWarnings says which entries name a host that the policy's own host rules never allow:
// their requests are denied before any rule is consulted.
func (p Policy) ruleWarnings() []string {
	if len(p.HTTPRules) == 0 {
		return nil
	}
	if !p.AllowHTTP && !p.AllowHTTPS && !p.AllowPackageManagers {
		return []string{"http_rules is set but allow_http, allow_https and allow_package_managers are all off: " +
			"the rules' hosts are denied before any rule is consulted (http_rules only narrow what the host rules allow)"}
	}
	allowed := newDomainSet(p.AllowedDomains, make([]struct{}, len(p.AllowedDomains)))
	denied := newDomainSet(p.DeniedDomains, make([]struct{}, len(p.DeniedDomains)))
	var ws []string
	n := 0
	add := func(format string, args ...any) {
		if n++; n <= maxWarningsPerKind {
			ws = append(ws, fmt.Sprintf(format, args...))
		}
	}
	for i, r := range p.HTTPRules {
		switch {
		case denied.covers(r.Domain):
			add("http_rules[%d] names %s, which denied_domains denies: no request to it is allowed", i, r.Domain)
		case !allowed.empty() && !allowed.covers(r.Domain) && !p.AllowPackageManagers:
			add("http_rules[%d] names %s, which allowed_domains does not (wholly) allow: requests to a host it does not allow "+
				"are denied before any rule is consulted (http_rules only narrow what the host rules allow)", i, r.Domain)
		}
	}
	if n > maxWarningsPerKind {
		ws = append(ws, fmt.Sprintf("%d more http_rules entries name hosts that this policy does not allow", n-maxWarningsPerKind))
	}
	return ws
}

// compiledRule is one http_rules entry, compiled: what DecideRequest reads.
type compiledRule struct {
	methods []string // sorted; empty: any
	paths   []string // canonical prefixes; empty: any
	rule    string   // the Rule a decision reports: "http_rules[2] api.example.com methods GET paths /v1/"
}

func (r *compiledRule) matchMethod(m string) bool {
	if len(r.methods) == 0 {
		return true
	}
	for _, x := range r.methods {
		if x == m {
			return true
		}
	}
	return false
}

// matchPath reports whether the canonical path p is inside one of the rule's prefixes; star
// is the asterisk-form "*", which only a rule without paths allows.
func (r *compiledRule) matchPath(p []byte, star bool) bool {
	if len(r.paths) == 0 {
		return true
	}
	if star {
		return false
	}
	for _, x := range r.paths {
		if pathHasPrefix(p, x) {
			return true
		}
	}
	return false
}

// compileRules groups the entries by domain pattern, for the lookup of every entry that
// names a host (an exact name and any number of wildcards above it).
func compileRules(rs []HTTPRule) domainSet[[]*compiledRule] {
	byPattern := map[string][]*compiledRule{}
	var patterns []string
	for i, r := range rs {
		c := &compiledRule{methods: r.Methods, paths: r.Paths, rule: describeRule(i, r)}
		if _, ok := byPattern[r.Domain]; !ok {
			patterns = append(patterns, r.Domain)
		}
		byPattern[r.Domain] = append(byPattern[r.Domain], c)
	}
	values := make([][]*compiledRule, len(patterns))
	for i, p := range patterns {
		values[i] = byPattern[p]
	}
	return newDomainSet(patterns, values)
}

// maxDescribed bounds the methods and paths that a rule's description lists.
const maxDescribed = 5

// describeRule is the Rule string of decisions taken by entry i: its index, so that a reader
// finds it in the layer's policy, and what it allows.
func describeRule(i int, r HTTPRule) string {
	var b strings.Builder
	b.WriteString("http_rules[")
	b.WriteString(strconv.Itoa(i))
	b.WriteString("] ")
	b.WriteString(r.Domain)
	list := func(what, anyOf string, xs []string) {
		b.WriteString(" ")
		if len(xs) == 0 {
			b.WriteString(anyOf)
			return
		}
		b.WriteString(what)
		b.WriteString(" ")
		for j, x := range xs {
			if j == maxDescribed {
				fmt.Fprintf(&b, " and %d more", len(xs)-j)
				break
			}
			if j > 0 {
				b.WriteString(",")
			}
			b.WriteString(x)
		}
	}
	list("methods", "any method", r.Methods)
	list("paths", "any path", r.Paths)
	return b.String()
}

// nextMatch walks the patterns of d that match host: the exact name first, then every
// wildcard from the most specific up. Start with from = -1 and pass back the next it
// returns; ok is false at the end. It does not allocate.
func (d *domainSet[V]) nextMatch(host string, from int) (v V, next int, ok bool) {
	if from < 0 {
		from = 0
		if v, ok := d.exact[host]; ok {
			return v, 0, true
		}
	}
	for len(d.wild) > 0 {
		i := strings.IndexByte(host[from:], '.')
		if i < 0 {
			break
		}
		from += i + 1
		rest := host[from:]
		if !strings.Contains(rest, ".") {
			break // a wildcard suffix has at least two labels
		}
		if v, ok := d.wild[rest]; ok {
			return v, from, true
		}
	}
	var zero V
	return zero, len(host), false
}

// firstRule returns the first compiled entry of m that names host, if any.
func (m *Matcher) firstRule(host string) (*compiledRule, bool) {
	if m.rules.empty() {
		return nil, false
	}
	rs, _, ok := m.rules.nextMatch(host, -1)
	if !ok {
		return nil, false
	}
	return rs[0], true
}

// ruleVerdict is the verdict of m's http_rules on a request to host, which its host rules
// allow. has is false when no entry of m names host: m then does not restrict the host's
// requests. A request is allowed when an entry allows its method and path, the path in both
// readings (each reading may be allowed by another entry: the request is allowed however the
// origin reads the path).
func (m *Matcher) ruleVerdict(host, method string, rp *requestPath) (v verdict, has bool) {
	if m.rules.empty() {
		return verdict{}, false
	}
	var first, allowed, strictOnly, methodOnly, pathOnly *compiledRule
	okStrict, okLoose := false, false     // some entry allows method and path
	pathStrict, pathLoose := false, false // some entry allows the path, whatever the method
	for rs, cur, ok := m.rules.nextMatch(host, -1); ok; rs, cur, ok = m.rules.nextMatch(host, cur) {
		if first == nil {
			first = rs[0]
		}
		if rp.bad != pathOK {
			break // the entries cannot judge a path that is not one
		}
		for _, r := range rs {
			mm := r.matchMethod(method)
			ps := r.matchPath(rp.strict, rp.star)
			pl := r.matchPath(rp.loose, rp.star)
			pathStrict, pathLoose = pathStrict || ps, pathLoose || pl
			if mm {
				okStrict, okLoose = okStrict || ps, okLoose || pl
				if ps && pl && allowed == nil {
					allowed = r
				}
				if ps && strictOnly == nil {
					strictOnly = r
				}
				if pathOnly == nil {
					pathOnly = r
				}
			} else if ps && pl && methodOnly == nil {
				methodOnly = r
			}
		}
	}
	switch {
	case first == nil:
		return verdict{}, false
	case rp.bad != pathOK:
		return verdict{false, ReasonBadPath, badPathRules[rp.bad]}, true
	case rp.star && !okStrict:
		return verdict{false, ReasonPathNotAllowed, ruleStar}, true
	case okStrict && okLoose:
		if allowed == nil {
			allowed = strictOnly // each reading allowed by another entry: report the strict one's
		}
		return verdict{true, ReasonHTTPRules, allowed.rule}, true
	case pathStrict && pathLoose:
		if methodOnly == nil {
			methodOnly = first
		}
		return verdict{false, ReasonMethodNotAllowed, methodOnly.rule}, true
	}
	if pathOnly == nil {
		pathOnly = first
	}
	return verdict{false, ReasonPathNotAllowed, pathOnly.rule}, true
}
