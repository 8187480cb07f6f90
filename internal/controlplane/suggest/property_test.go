package suggest

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/publicsuffix"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// The universe of the property test: names that collapse (x.test, example.co.uk), names
// that must not (github.io), a parent among its children, and ports of both kinds.
var (
	propHosts = []string{"a.x.test", "b.x.test", "c.d.x.test", "x.test", "y.test", "p.github.io", "q.github.io",
		"r.github.io", "a.example.co.uk", "b.example.co.uk", "c.example.co.uk", "bad.test"}
	// propProbes are never attempted: a suggestion must not open them, siblings aside.
	propProbes = append(slices.Clone(propHosts), "zz.x.test", "other.test", "s.github.io", "d.example.co.uk", "e.y.test")
	propPorts  = []uint16{80, 443, 22, 5432}
)

func randomPolicy(r *rand.Rand) policy.Policy {
	p := policy.Policy{AllowHTTP: r.IntN(3) == 0, AllowHTTPS: r.IntN(2) == 0}
	for _, h := range propHosts {
		if r.IntN(6) == 0 {
			p.AllowedDomains = append(p.AllowedDomains, h)
		}
		if r.IntN(15) == 0 {
			p.DeniedDomains = append(p.DeniedDomains, h)
		}
		if r.IntN(10) == 0 {
			p.AllowedTCP = append(p.AllowedTCP, h+":22")
		}
	}
	if r.IntN(5) == 0 {
		p.AllowedDomains = append(p.AllowedDomains, "*.y.test")
	}
	if r.IntN(4) == 0 {
		p.Mode = policy.Monitor
	}
	if r.IntN(5) == 0 {
		p.AllowedCIDRs = []string{"198.51.100.0/24"}
	}
	p.AllowPackageManagers = r.IntN(5) == 0 // the preset's hosts are not in the universe: it must stay as it is
	return p
}

// TestSuggestionProperty: for random policies and attempts, the merged policy (judged on its
// own, by the policy package)
//   - allows every recorded denial of the layer that an entry can lift, and still denies
//     those that the suggestion calls not allowable;
//   - allows everything the layer's policy allowed (a suggestion never narrows);
//   - opens nothing that was not denied, except the siblings under a collapsed wildcard,
//     and the hosts a flag reaches that the policy already listed or allowed on the other
//     web port (each said in a note).
func TestSuggestionProperty(t *testing.T) {
	env, err := policy.NewEnv(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(15, 29))
	for iter := 0; iter < 600; iter++ {
		sp := norm(t, randomPolicy(r))
		layers := []policy.NamedPolicy{session(sp)}
		if r.IntN(2) == 0 {
			layers = append(layers, vm(norm(t, randomPolicy(r))))
		}
		// A third of the runs are transparent mode: another session's policy applies too,
		// first in report order, and the records name no session.
		shared := r.IntN(3) == 0
		if shared {
			layers = append([]policy.NamedPolicy{session(norm(t, randomPolicy(r)))}, layers...)
		}
		var as []attempt
		for n := r.IntN(25); n > 0; n-- {
			h := propHosts[r.IntN(len(propHosts))]
			if r.IntN(4) == 0 {
				as = append(as, attempt{host: h, dns: true})
			} else {
				as = append(as, web(h, propPorts[r.IntN(len(propPorts))]))
			}
		}
		recs := decided(t, env, layers, as...)
		in := Input{Scope: client.ScopeSession, ID: "s-1", Policy: &sp, Records: recs}
		if shared {
			for i := range recs {
				recs[i].SessionID = ""
			}
			in.Records, in.Shared = nil, recs
		}
		got, err := Suggest(env, in)
		if err != nil {
			t.Fatalf("iter %d: %v", iter, err)
		}
		checkProperty(t, env, iter, sp, recs, got)
	}
}

func checkProperty(t *testing.T, env *policy.Env, iter int, base policy.Policy, recs []events.Record, got *client.Suggestion) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("iter %d: base %+v\nsuggestion %+v\nmerged %+v\n"+format, append([]any{iter, base, got, got.Policy}, args...)...)
	}
	judge := func(p policy.Policy) *policy.Effective {
		p.Mode = policy.Enforce
		set, err := env.Effective(session(p))
		if err != nil {
			t.Fatal(err)
		}
		return set
	}
	// Only additions to allowed_domains, allowed_tcp and the web flags: nothing else moves.
	m := *got.Policy
	if !reflect.DeepEqual(m.AllowedCIDRs, base.AllowedCIDRs) || !reflect.DeepEqual(m.DeniedDomains, base.DeniedDomains) ||
		m.Mode != base.Mode || m.AllowPackageManagers != base.AllowPackageManagers || !reflect.DeepEqual(m.HTTPRules, base.HTTPRules) {
		fail("a field other than the additions changed")
	}
	for _, d := range base.AllowedDomains {
		if !slices.Contains(m.AllowedDomains, d) {
			fail("allowed_domains lost %s", d)
		}
	}
	for _, e := range base.AllowedTCP {
		if !slices.Contains(m.AllowedTCP, e) {
			fail("allowed_tcp lost %s", e)
		}
	}
	before, after := judge(base), judge(*got.Policy)
	conn := func(h string, port uint16) policy.Conn {
		return policy.Conn{Host: h, Port: port, Transport: policy.TCP, Intercepted: true}
	}
	dnsQ := func(h string) policy.Query { return policy.Query{Name: h, Type: policy.QTypeA} }

	denied := map[string]bool{}    // hosts with a denial of the session layer
	deniedTCP := map[string]bool{} // "host:port" with such a denial on another port
	for _, r := range recs {
		if r.Layer != string(policy.LayerSession) || !(r.Decision == events.Deny || r.WouldDeny) {
			continue
		}
		denied[r.Host] = true
		// What the layer itself says of it: the record's own reason, unless the record is
		// shared (transparent mode), where another session's policy may have reported it.
		shared := r.SessionID == ""
		if r.Kind == events.KindDNS {
			d, bd := after.DecideQuery(dnsQ(r.Host)), before.DecideQuery(dnsQ(r.Host))
			if !shared && bd.Reason != r.Reason {
				fail("DNS %s: recorded %s, judged %s", r.Host, r.Reason, bd.Reason)
			}
			if !bd.Allow && fixable[bd.Reason] && !d.Allow {
				fail("DNS %s (%s) still denied: %+v", r.Host, bd.Reason, d)
			}
			if before.DecideQuery(dnsQ(r.Host)).Reason == policy.ReasonDeniedDomain && d.Allow {
				fail("DNS %s in denied_domains now answered", r.Host)
			}
			continue
		}
		if r.Port != 80 && r.Port != 443 {
			deniedTCP[r.Host+":"+itoa(r.Port)] = true
		}
		d, bd := after.Decide(conn(r.Host, uint16(r.Port))), before.Decide(conn(r.Host, uint16(r.Port)))
		if !shared && bd.Reason != r.Reason {
			fail("%s:%d: recorded %s, judged %s", r.Host, r.Port, r.Reason, bd.Reason)
		}
		if !bd.Allow && fixable[bd.Reason] && !d.Allow {
			fail("%s:%d (%s) still denied: %+v", r.Host, r.Port, bd.Reason, d)
		}
		// The layer's own denied_domains still win (a shared record's may be another session's).
		if before.Decide(conn(r.Host, uint16(r.Port))).Reason == policy.ReasonDeniedDomain && d.Allow {
			fail("%s:%d in denied_domains now allowed", r.Host, r.Port)
		}
	}

	// Wildcards must stand for three or more denied siblings of one registrable domain.
	var wild []client.SuggestedEntry
	for _, e := range append(slices.Clone(got.AllowedDomains), got.AllowedTCP...) {
		if !strings.HasPrefix(e.Entry, "*.") {
			continue
		}
		name, _ := splitEndpoint(e.Entry)
		if !strings.Contains(e.Entry, ":") {
			name = e.Entry
		}
		parent := strings.TrimPrefix(name, "*.")
		if len(e.Names) < siblings {
			fail("wildcard %s stands for %d names", e.Entry, len(e.Names))
		}
		for _, h := range e.Names {
			if rd, _ := publicsuffix.EffectiveTLDPlusOne(h); rd != parent || !denied[h] || !covers(name, h) {
				fail("wildcard %s covers %s (registrable %s, denied %v)", e.Entry, h, rd, denied[h])
			}
		}
		wild = append(wild, e)
	}
	byWildcard := func(h string, port string) bool {
		for _, e := range wild {
			name, p := splitEndpoint(e.Entry)
			if !strings.Contains(e.Entry, ":") {
				name, p = e.Entry, ""
			}
			if covers(name, h) && (port == "" || p == "" || p == port) {
				return true
			}
		}
		return false
	}
	flagOn := map[uint16]bool{}
	for _, f := range got.Flags {
		flagOn[map[string]uint16{"allow_http": 80, "allow_https": 443}[f.Entry]] = true
	}
	listedBefore := func(h string) bool {
		m, _ := env.Compile(base)
		_, ok := m.MatchAllowed(h)
		return ok || len(base.AllowedDomains) == 0
	}

	for _, h := range propProbes {
		for _, port := range propPorts {
			b, a := before.Decide(conn(h, port)), after.Decide(conn(h, port))
			if b.Allow && !a.Allow {
				fail("%s:%d allowed before, denied after: %+v", h, port, a)
			}
			if !a.Allow || b.Allow {
				continue
			}
			ps := itoa(int(port))
			switch {
			case port == 80 || port == 443:
				if denied[h] || byWildcard(h, "") {
					continue
				}
				if flagOn[port] && listedBefore(h) {
					flag := map[uint16]string{80: "allow_http", 443: "allow_https"}[port]
					if !slices.ContainsFunc(got.Notes, func(n string) bool {
						return strings.HasPrefix(n, flag+" applies") || strings.Contains(n, "turning "+flag+" on opens")
					}) {
						fail("%s opens %s:%d with no note saying so: %q", flag, h, port, got.Notes)
					}
					continue
				}
			case deniedTCP[h+":"+ps] || byWildcard(h, ps):
				continue
			}
			fail("%s:%d opened, but nothing denied it (%+v)", h, port, a)
		}
		b, a := before.DecideQuery(dnsQ(h)), after.DecideQuery(dnsQ(h))
		if b.Allow && !a.Allow {
			fail("DNS %s answered before, refused after", h)
		}
		if a.Allow && !b.Allow && !denied[h] && !byWildcard(h, "") {
			fail("DNS %s now answered, but nothing denied it", h)
		}
	}
}
