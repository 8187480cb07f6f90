// Package secrets is the gateway's live picture of tenants' secrets with their values opened
// (DESIGN §2.7), for the interception engine that puts a secret's value on a request in place
// of its placeholder. A Book loads every secret from the store, opens each value with the
// secrets key, and follows the store's change log, so that a rotation applies to the next
// request and a deleted secret is gone at once. The data path reads a tenant's Set through an
// atomic pointer, without a lock.
//
// Values are held only in memory, only here. A Secret never prints its value: its String,
// GoString and slog LogValue show the name alone, so that a log line or an error that mentions
// a secret cannot carry what it protects.
package secrets

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
)

// Secret is one secret of a tenant with its value in the clear.
type Secret struct {
	Tenant      string
	Name        string
	Placeholder string
	// Domains are the host patterns (policy.NormalizePattern form: "api.example.com" or
	// "*.example.com") that the value may go to.
	Domains []string
	// Value is the secret itself. It is nil when the sealed value did not open (Err says
	// why): a request that carries the placeholder must then be refused, not sent with it.
	Value []byte
	Err   error
}

// String names the secret without its value.
func (s *Secret) String() string { return fmt.Sprintf("secret %q of tenant %q", s.Name, s.Tenant) }

// GoString is String: %#v must not print the value either.
func (s *Secret) GoString() string { return s.String() }

// LogValue is what slog writes for a secret: its tenant and name.
func (s *Secret) LogValue() slog.Value {
	return slog.GroupValue(slog.String("tenant", s.Tenant), slog.String("name", s.Name))
}

// Matches reports whether the value may go to host, a name in policy.NormalizeName form.
func (s *Secret) Matches(host string) bool {
	for _, p := range s.Domains {
		if matchPattern(p, host) {
			return true
		}
	}
	return false
}

// matchPattern: "example.com" matches only example.com; "*.example.com" matches every name
// under it, at any depth, and not example.com itself (DESIGN §2.3).
func matchPattern(pattern, host string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return len(host) > len(suffix) && strings.HasSuffix(host, suffix)
	}
	return pattern == host
}

// Set is one tenant's secrets at one moment. A published Set is never changed: a change
// publishes a new one. The zero value (and nil) is the empty set.
type Set struct {
	all           []*Secret          // by name
	byPlaceholder map[string]*Secret // every secret, by placeholder
	exact         map[string][]*Secret
	wild          map[string][]*Secret // "*.example.com" under ".example.com"
}

// newSet indexes secrets, which are sorted by name.
func newSet(all []*Secret) *Set {
	s := &Set{all: all, byPlaceholder: map[string]*Secret{}, exact: map[string][]*Secret{}, wild: map[string][]*Secret{}}
	for _, se := range all {
		s.byPlaceholder[se.Placeholder] = se
		for _, p := range se.Domains {
			if suffix, ok := strings.CutPrefix(p, "*"); ok {
				s.wild[suffix] = append(s.wild[suffix], se)
			} else {
				s.exact[p] = append(s.exact[p], se)
			}
		}
	}
	return s
}

// All is every secret of the tenant, by name: what a request is searched for, since a
// placeholder toward a host that is not its secret's must be refused (secret_not_for_host).
// The caller must not change the slice.
func (s *Set) All() []*Secret {
	if s == nil {
		return nil
	}
	return s.all
}

// Len is the number of secrets.
func (s *Set) Len() int { return len(s.All()) }

// ByPlaceholder finds the secret whose placeholder p is, or nil.
func (s *Set) ByPlaceholder(p string) *Secret {
	if s == nil {
		return nil
	}
	return s.byPlaceholder[p]
}

// For lists the secrets whose values may go to host (in policy.NormalizeName form), by name,
// without duplicates. It costs a map lookup per label of host.
func (s *Set) For(host string) []*Secret {
	if s == nil || len(s.all) == 0 {
		return nil
	}
	var out []*Secret
	add := func(list []*Secret) {
		for _, se := range list {
			if !slices.Contains(out, se) {
				out = append(out, se)
			}
		}
	}
	add(s.exact[host])
	for i := strings.IndexByte(host, '.'); i >= 0; {
		add(s.wild[host[i:]])
		next := strings.IndexByte(host[i+1:], '.')
		if next < 0 {
			break
		}
		i += 1 + next
	}
	if len(out) > 1 {
		slices.SortFunc(out, func(a, b *Secret) int { return strings.Compare(a.Name, b.Name) })
	}
	return out
}

// Intercepts reports whether some secret names host: such a host is intercepted, so that its
// requests can carry the secret.
func (s *Set) Intercepts(host string) bool { return len(s.For(host)) > 0 }
