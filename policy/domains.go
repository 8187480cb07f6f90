package policy

import (
	"slices"
	"strings"
)

// domainSet matches host names against patterns (NormalizePattern form) without allocating:
// an exact-name map, and a map of wildcard suffixes ("*.example.com" is stored as
// "example.com") probed with every proper suffix of the host that starts after a dot. Map
// lookups with a substring of the host as key do not copy it, so a match costs one hash per
// label. Each pattern carries a value of type V computed once, at compile time, such as the
// rule string a decision reports.
type domainSet[V any] struct {
	exact map[string]V
	wild  map[string]V
}

// newDomainSet builds the set of patterns; values[i] belongs to patterns[i].
func newDomainSet[V any](patterns []string, values []V) domainSet[V] {
	d := domainSet[V]{exact: map[string]V{}, wild: map[string]V{}}
	for i, p := range patterns {
		if suffix, ok := strings.CutPrefix(p, wildcardPrefix); ok {
			d.wild[suffix] = values[i]
		} else {
			d.exact[p] = values[i]
		}
	}
	return d
}

func (d *domainSet[V]) empty() bool { return len(d.exact) == 0 && len(d.wild) == 0 }

// match returns the value of the pattern that matches host: the exact name first, then the
// wildcard with the longest suffix, which is the most specific one.
func (d *domainSet[V]) match(host string) (V, bool) {
	if v, ok := d.exact[host]; ok {
		return v, true
	}
	return d.matchWild(host)
}

// matchWild tries only the wildcards: "*.s" matches every name strictly under s.
func (d *domainSet[V]) matchWild(host string) (V, bool) {
	if len(d.wild) > 0 {
		for rest := host; ; {
			i := strings.IndexByte(rest, '.')
			if i < 0 {
				break
			}
			rest = rest[i+1:]
			if !strings.Contains(rest, ".") {
				break // a wildcard suffix has at least two labels
			}
			if v, ok := d.wild[rest]; ok {
				return v, true
			}
		}
	}
	var zero V
	return zero, false
}

// covers reports whether every name that pattern matches is matched by d.
func (d *domainSet[V]) covers(pattern string) bool {
	suffix, wild := strings.CutPrefix(pattern, wildcardPrefix)
	if !wild {
		_, ok := d.match(pattern)
		return ok
	}
	if _, ok := d.wild[suffix]; ok {
		return true
	}
	_, ok := d.matchWild(suffix)
	return ok
}

// IntersectDomains returns the patterns for the names that both lists match, sorted, without
// duplicates and without a pattern that another one covers. The intersection of
// "*.a.com" and "x.a.com" is "x.a.com"; of "*.a.com" and "*.b.a.com" it is "*.b.a.com".
// Both lists must be in NormalizePattern form. An empty list matches no name here, so it
// gives an empty result: the policy meaning of an empty allowed_domains ("any host") is the
// caller's to apply, as Explain does.
func IntersectDomains(a, b []string) []string {
	da := newDomainSet(a, make([]struct{}, len(a)))
	db := newDomainSet(b, make([]struct{}, len(b)))
	out := []string{}
	for _, p := range a {
		if db.covers(p) {
			out = append(out, p)
		}
	}
	for _, p := range b {
		if da.covers(p) {
			out = append(out, p)
		}
	}
	return minimalPatterns(out)
}

// minimalPatterns sorts ps and drops duplicates and patterns that another one covers.
func minimalPatterns(ps []string) []string {
	slices.Sort(ps)
	ps = slices.Compact(ps)
	wild := newDomainSet(nil, []struct{}(nil))
	for _, p := range ps {
		if s, ok := strings.CutPrefix(p, wildcardPrefix); ok {
			wild.wild[s] = struct{}{}
		}
	}
	out := ps[:0]
	for _, p := range ps {
		// A pattern is redundant if a wildcard strictly above it exists.
		name := strings.TrimPrefix(p, wildcardPrefix)
		if _, ok := wild.matchWild(name); ok {
			continue
		}
		out = append(out, p)
	}
	return out
}
