package suggest

import (
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// attempt is one connection attempt or DNS query of the test's sandbox.
type attempt struct {
	host string
	port uint16
	ip   string // the resolved address, or the literal with no host
	dns  bool
	udp  bool
}

func web(host string, port uint16) attempt { return attempt{host: host, port: port} }

// decided makes the records the gateway would: each attempt decided by the effective policy
// of the layers that are set (session first), through the one record builder.
func decided(t *testing.T, env *policy.Env, layers []policy.NamedPolicy, as ...attempt) []events.Record {
	t.Helper()
	set, err := env.Effective(layers...)
	if err != nil {
		t.Fatal(err)
	}
	src := events.Source{Tenant: "t", VMID: "vm-1", SessionID: "s-1"}
	var out []events.Record
	for i, a := range as {
		var r events.Record
		if a.dns {
			q := policy.Query{Name: a.host, Type: policy.QTypeA}
			r = events.Decided(events.KindDNS, src, policy.Conn{Host: a.host}, set.DecideQuery(q))
			r.QType = "A"
		} else {
			c := policy.Conn{Host: a.host, Port: a.port, Transport: policy.TCP, Intercepted: true}
			if a.udp {
				c.Transport = policy.UDP
			}
			if a.ip != "" {
				c.IP = netip.MustParseAddr(a.ip)
				c.IPLiteral = a.host == ""
			}
			r = events.Decided(events.KindConnect, src, c, set.Decide(c))
		}
		r.Seq = uint64(i + 1)
		out = append(out, r)
	}
	return out
}

func session(p policy.Policy) policy.NamedPolicy {
	return policy.NamedPolicy{Layer: policy.LayerSession, Policy: p}
}

func vm(p policy.Policy) policy.NamedPolicy {
	return policy.NamedPolicy{Layer: policy.LayerVM, Policy: p}
}

func norm(t *testing.T, p policy.Policy) policy.Policy {
	t.Helper()
	n, _, err := p.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func entries(es []client.SuggestedEntry) []string {
	out := []string{}
	for _, e := range es {
		s := e.Entry + "=" + itoa(e.Covers)
		if len(e.Names) > 0 {
			s += "(" + strings.Join(e.Names, " ") + ")"
		}
		out = append(out, s)
	}
	return out
}

func itoa(n int) string { return strconv.Itoa(n) }

func notAllowed(ns []client.NotAllowable) []string {
	out := []string{}
	for _, n := range ns {
		out = append(out, string(n.Reason)+" "+n.Host+n.IP+"="+itoa(n.Covers))
	}
	return out
}

func TestSuggest(t *testing.T) {
	env, err := policy.NewEnv(&policy.Classifier{Public: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	denyAll := policy.DenyAll()
	httpsAny := policy.Policy{AllowHTTPS: true}
	listed := policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test", "other.example.test"}}
	monitor := policy.Policy{Mode: policy.Monitor}
	denied := policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"ok.test"}, DeniedDomains: []string{"bad.test", "*.bad.test"}}

	for _, tc := range []struct {
		name     string
		scope    string
		layers   []policy.NamedPolicy // as they were when the attempts were made
		now      *policy.Policy       // the layer's policy now (nil: the first layer's, as above)
		unset    bool                 // the layer has no policy
		other    bool                 // the other layer is set
		attempts []attempt

		flags, domains, tcp []string
		not                 []string
		others              []client.LayerCount
		already             int
		notes               []string // substrings, each of some note
		wantPolicy          func(p *policy.Policy) bool
	}{{
		name:   "deny all: flags, names and an endpoint",
		layers: []policy.NamedPolicy{session(denyAll)},
		attempts: []attempt{web("a.example.test", 443), web("a.example.test", 443), web("b.example.test", 80),
			web("git.example.test", 22)},
		flags:   []string{"allow_http=1", "allow_https=2"},
		domains: []string{"a.example.test=2", "b.example.test=1"},
		tcp:     []string{"git.example.test:22=1"},
		wantPolicy: func(p *policy.Policy) bool {
			return p.AllowHTTP && p.AllowHTTPS && slices.Equal(p.AllowedDomains, []string{"a.example.test", "b.example.test"}) &&
				slices.Equal(p.AllowedTCP, []string{"git.example.test:22"}) && p.Mode == policy.Enforce
		},
	}, {
		name:   "three siblings collapse; the parent stays itself",
		layers: []policy.NamedPolicy{session(listed)},
		attempts: []attempt{web("a.x.test", 443), web("b.x.test", 443), web("c.d.x.test", 443), web("c.d.x.test", 443),
			web("x.test", 443), web("y.test", 443)},
		domains: []string{"*.x.test=4(a.x.test b.x.test c.d.x.test)", "x.test=1", "y.test=1"},
	}, {
		name:     "two siblings do not collapse",
		layers:   []policy.NamedPolicy{session(listed)},
		attempts: []attempt{web("a.x.test", 443), web("b.x.test", 443)},
		domains:  []string{"a.x.test=1", "b.x.test=1"},
	}, {
		name:   "a shared hosting suffix never collapses",
		layers: []policy.NamedPolicy{session(listed)},
		attempts: []attempt{web("a.github.io", 443), web("b.github.io", 443), web("c.github.io", 443),
			web("a.example.co.uk", 443), web("b.example.co.uk", 443), web("c.example.co.uk", 443)},
		domains: []string{"*.example.co.uk=3(a.example.co.uk b.example.co.uk c.example.co.uk)", "a.github.io=1", "b.github.io=1", "c.github.io=1"},
	}, {
		name:   "tcp siblings collapse per port",
		layers: []policy.NamedPolicy{session(denyAll)},
		attempts: []attempt{web("a.db.x.test", 5432), web("b.db.x.test", 5432), web("c.x.test", 5432),
			web("a.db.x.test", 22)},
		tcp: []string{"*.x.test:5432=3(a.db.x.test b.db.x.test c.x.test)", "a.db.x.test:22=1"},
	}, {
		name:     "a listed host needs only its flag; the note names the other listed hosts",
		layers:   []policy.NamedPolicy{session(listed)},
		attempts: []attempt{web("api.example.test", 80)},
		flags:    []string{"allow_http=1"},
		notes:    []string{"opens port 80 (HTTP) to other.example.test too"},
	}, {
		name:     "a wildcard made for the hosts a flag is turned on for is not 'more'",
		layers:   []policy.NamedPolicy{session(policy.Policy{AllowedDomains: []string{"keep.test"}})},
		attempts: []attempt{web("a.x.test", 443), web("b.x.test", 443), web("c.x.test", 443)},
		flags:    []string{"allow_https=3"},
		domains:  []string{"*.x.test=3(a.x.test b.x.test c.x.test)"},
		notes:    []string{"opens port 443 (HTTPS) to keep.test too."},
	}, {
		name:     "no hosts listed: the flag alone, said to open every host",
		layers:   []policy.NamedPolicy{session(httpsAny)},
		attempts: []attempt{web("a.example.test", 80), web("b.example.test", 80)},
		flags:    []string{"allow_http=2"},
		notes:    []string{"opens port 80 (HTTP) to every public host"},
		wantPolicy: func(p *policy.Policy) bool {
			return p.AllowHTTP && p.AllowHTTPS && len(p.AllowedDomains) == 0 // never narrows HTTPS
		},
	}, {
		name:     "the VM's denials are not the session's",
		layers:   []policy.NamedPolicy{session(httpsAny), vm(listed)},
		attempts: []attempt{web("a.example.test", 443), web("git.example.test", 22)},
		tcp:      []string{"git.example.test:22=1"}, // the session denied that one first
		others:   []client.LayerCount{{Layer: "vm", Covers: 1}},
	}, {
		name:     "the VM's own suggestion takes them",
		scope:    client.ScopeVM,
		layers:   []policy.NamedPolicy{vm(listed), session(httpsAny)},
		attempts: []attempt{web("a.example.test", 443)},
		domains:  []string{"a.example.test=1"},
	}, {
		name:   "not allowable: hard, denied_domains, IP literal, private address, UDP, query type",
		layers: []policy.NamedPolicy{session(denied)},
		attempts: []attempt{{ip: "169.254.169.254", port: 80}, web("bad.test", 443), web("x.bad.test", 443), {ip: "203.0.113.9", port: 443},
			{host: "ok.test", port: 443, ip: "198.51.100.7"}, {ip: "203.0.113.9", port: 53, udp: true}, {host: "ok.test", ip: "203.0.113.9", port: 443}},
		not: []string{"denied_domain bad.test=1", "denied_domain x.bad.test=1", "hard_deny 169.254.169.254=1",
			"ip_literal 203.0.113.9=1", "not_public ok.test198.51.100.7=1", "udp_not_allowed 203.0.113.9=1"},
		wantPolicy: func(p *policy.Policy) bool {
			return slices.Equal(p.AllowedDomains, []string{"ok.test"}) && len(p.AllowedCIDRs) == 0
		},
	}, {
		// A sandbox controls its names' answers: a name that resolved to the metadata address
		// or into a private range is never suggested, even beside names that are.
		name:   "not allowable: names that resolved to the metadata address or a private range",
		layers: []policy.NamedPolicy{session(denied)},
		attempts: []attempt{{host: "meta.test", port: 80, ip: "169.254.169.254"}, {host: "meta.test", port: 443, ip: "169.254.169.254"},
			{host: "inner.test", port: 443, ip: "10.1.2.3"}, {host: "inner.test", port: 22, ip: "10.1.2.3"},
			{host: "loop.test", port: 443, ip: "127.0.0.1"}},
		not: []string{"hard_deny loop.test127.0.0.1=1", "hard_deny meta.test169.254.169.254=1", "hard_deny meta.test169.254.169.254=1",
			"not_public inner.test10.1.2.3=1", "not_public inner.test10.1.2.3=1"},
		wantPolicy: func(p *policy.Policy) bool {
			return slices.Equal(p.AllowedDomains, []string{"ok.test"}) && len(p.AllowedTCP) == 0 && len(p.AllowedCIDRs) == 0
		},
	}, {
		name:     "monitor: would-be denials, and the mode stays",
		layers:   []policy.NamedPolicy{session(monitor)},
		attempts: []attempt{web("a.example.test", 443), web("a.example.test", 22)},
		flags:    []string{"allow_https=1"},
		domains:  []string{"a.example.test=1"},
		tcp:      []string{"a.example.test:22=1"},
		wantPolicy: func(p *policy.Policy) bool {
			return p.Mode == policy.Monitor && p.AllowHTTPS
		},
	}, {
		name:     "already allowed by the policy as it is now",
		layers:   []policy.NamedPolicy{session(denyAll)},
		now:      &listed,
		attempts: []attempt{web("api.example.test", 443), web("new.example.test", 443)},
		domains:  []string{"new.example.test=1"},
		already:  1,
	}, {
		name:     "a denied_domains entry removed since: judged anew",
		layers:   []policy.NamedPolicy{session(denied)},
		now:      &policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"ok.test"}},
		attempts: []attempt{web("bad.test", 443), web("x.bad.test", 443), web("bad.test", 22)},
		domains:  []string{"bad.test=1", "x.bad.test=1"},
		tcp:      []string{"bad.test:22=1"},
	}, {
		name:     "denied for another reason now",
		layers:   []policy.NamedPolicy{session(listed)},
		now:      &policy.Policy{AllowHTTPS: true, DeniedDomains: []string{"a.example.test"}},
		attempts: []attempt{web("a.example.test", 443)},
		not:      []string{"denied_domain a.example.test=1"},
	}, {
		name:   "DNS: a name seen only there is listed; a query for an endpoint's name counts there",
		layers: []policy.NamedPolicy{session(denyAll)},
		attempts: []attempt{{host: "only.dns.test", dns: true}, {host: "only.dns.test", dns: true},
			{host: "git.example.test", dns: true}, web("git.example.test", 22),
			{host: "a.example.test", dns: true}, web("a.example.test", 443)},
		flags:   []string{"allow_https=1"},
		domains: []string{"a.example.test=2", "only.dns.test=2"},
		tcp:     []string{"git.example.test:22=2"},
		notes:   []string{"1 of the names were seen only in DNS queries"},
	}, {
		name:     "no session policy and a VM policy: nothing is the session's",
		layers:   []policy.NamedPolicy{vm(listed)},
		unset:    true,
		other:    true,
		attempts: []attempt{web("a.example.test", 443)},
		others:   []client.LayerCount{{Layer: "vm", Covers: 1}},
		notes:    []string{"has no policy and the other layer is set"},
		wantPolicy: func(p *policy.Policy) bool {
			return p == nil
		},
	}, {
		name:     "a layer cleared since: its old denials are no longer its own",
		scope:    client.ScopeVM,
		layers:   []policy.NamedPolicy{vm(listed)},
		unset:    true,
		attempts: []attempt{web("a.example.test", 443)},
		already:  1,
	}, {
		name:     "no layer set: the default's denials, from the default",
		layers:   nil,
		unset:    true,
		attempts: []attempt{web("a.example.test", 443)},
		flags:    []string{"allow_https=1"},
		domains:  []string{"a.example.test=1"},
		notes:    []string{"starts from the operator's default policy"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			scope := cmpOr(tc.scope, client.ScopeSession)
			recs := decided(t, env, tc.layers, tc.attempts...)
			in := Input{Scope: scope, ID: "x", Records: recs, OtherLayerSet: tc.other}
			if !tc.unset {
				p := tc.layers[0].Policy
				if tc.now != nil {
					p = *tc.now
				}
				p = norm(t, p)
				in.Policy, in.Revision = &p, 7
			}
			got, err := Suggest(env, in)
			if err != nil {
				t.Fatal(err)
			}
			check := func(what string, got, want []string) {
				t.Helper()
				if want == nil {
					want = []string{}
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s = %q, want %q", what, got, want)
				}
			}
			check("flags", entries(got.Flags), tc.flags)
			check("allowed_domains", entries(got.AllowedDomains), tc.domains)
			check("allowed_tcp", entries(got.AllowedTCP), tc.tcp)
			check("not_allowable", sortedCopy(notAllowed(got.NotAllowable)), tc.not)
			if want := cmpOr2(tc.others); !reflect.DeepEqual(got.OtherLayers, want) {
				t.Errorf("other_layers = %+v, want %+v", got.OtherLayers, want)
			}
			if got.AlreadyAllowed != tc.already {
				t.Errorf("already_allowed = %d, want %d", got.AlreadyAllowed, tc.already)
			}
			if got.Decisions != len(tc.attempts)-allowedCount(recs) {
				t.Errorf("decisions = %d of %d records", got.Decisions, len(recs))
			}
			for _, n := range tc.notes {
				if !slices.ContainsFunc(got.Notes, func(s string) bool { return strings.Contains(s, n) }) {
					t.Errorf("no note says %q: %q", n, got.Notes)
				}
			}
			if changed := len(got.Flags)+len(got.AllowedDomains)+len(got.AllowedTCP) > 0; got.Changed != changed {
				t.Errorf("changed = %v with %d flags, %d domains, %d tcp", got.Changed, len(got.Flags), len(got.AllowedDomains), len(got.AllowedTCP))
			}
			if tc.wantPolicy != nil && !tc.wantPolicy(got.Policy) {
				t.Errorf("merged policy: %+v", got.Policy)
			}
			if got.PolicySet == tc.unset || (!tc.unset && got.Revision != 7) {
				t.Errorf("policy_set %v, revision %d", got.PolicySet, got.Revision)
			}
		})
	}
}

func allowedCount(rs []events.Record) int {
	n := 0
	for _, r := range rs {
		if r.Decision == events.Allow && !r.WouldDeny {
			n++
		}
	}
	return n
}

func sortedCopy(ss []string) []string {
	ss = slices.Clone(ss)
	slices.Sort(ss)
	return ss
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func cmpOr2(ls []client.LayerCount) []client.LayerCount {
	if ls == nil {
		return []client.LayerCount{}
	}
	return ls
}

// TestSuggestSkipsAllowedAndCloseRecords: allowed decisions and close records are no denials;
// a truncated read says so.
func TestSuggestSkipsAllowedAndCloseRecords(t *testing.T) {
	recs := []events.Record{
		{Kind: events.KindConnect, Decision: events.Allow, Layer: "session", Reason: policy.ReasonAllowHTTPS, Host: "a.test", Port: 443},
		{Kind: events.KindClose, Decision: events.Allow, Host: "a.test", Port: 443},
		{Kind: events.KindClose, Decision: events.Deny, Layer: "session", Reason: policy.ReasonHTTPSOff, Host: "b.test", Port: 443},
	}
	p := norm(t, policy.Policy{AllowHTTPS: true})
	got, err := Suggest(nil, Input{Scope: client.ScopeSession, ID: "s", Policy: &p, Records: recs, Truncated: true})
	if err != nil {
		t.Fatal(err)
	}
	if got.Decisions != 0 || got.Changed || !reflect.DeepEqual(*got.Policy, p) {
		t.Fatalf("got %+v", got)
	}
	if !got.Truncated || !slices.ContainsFunc(got.Notes, func(s string) bool { return strings.Contains(s, "ask again with since") }) {
		t.Fatalf("truncated read not said: %+v", got.Notes)
	}
}

// TestSuggestSharedRecords: in transparent mode records name the VM only, and every open
// session's policy applies. A session's suggestion takes those its own policy denies, and
// counts the others as another session's.
func TestSuggestSharedRecords(t *testing.T) {
	env, err := policy.NewEnv(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mine := norm(t, policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"a.test", "b.test", "e.test"}, DeniedDomains: []string{"f.test"}})
	theirs := norm(t, policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"a.test", "c.test", "f.test"}, DeniedDomains: []string{"e.test"}})
	recs := decided(t, env, []policy.NamedPolicy{session(theirs), session(mine)},
		web("a.test", 443), web("b.test", 443), web("c.test", 443), web("d.test", 443), web("git.test", 22),
		web("e.test", 443), web("f.test", 443))
	for i := range recs {
		recs[i].SessionID = "" // as the transparent gateway records them
	}
	got, err := Suggest(env, Input{Scope: client.ScopeSession, ID: "s-1", Policy: &mine, Shared: recs})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"c.test=1", "d.test=1"}; !reflect.DeepEqual(entries(got.AllowedDomains), want) {
		t.Errorf("allowed_domains %q, want %q", entries(got.AllowedDomains), want)
	}
	if want := []string{"git.test:22=1"}; !reflect.DeepEqual(entries(got.AllowedTCP), want) {
		t.Errorf("allowed_tcp %q, want %q", entries(got.AllowedTCP), want)
	}
	// b.test and e.test (their denied_domains): the other session's policy denied them; this
	// one allows them. f.test is in this one's denied_domains: not allowable.
	if want := []client.LayerCount{{Layer: "session", Covers: 2}}; !reflect.DeepEqual(got.OtherLayers, want) || got.AlreadyAllowed != 0 {
		t.Errorf("other_layers %+v, already_allowed %d; want %+v, 0", got.OtherLayers, got.AlreadyAllowed, want)
	}
	if want := []string{"denied_domain f.test=1"}; !reflect.DeepEqual(notAllowed(got.NotAllowable), want) {
		t.Errorf("not_allowable %q, want %q", notAllowed(got.NotAllowable), want)
	}
	if got.Decisions != 6 {
		t.Errorf("decisions %d, want 6", got.Decisions)
	}

	// A session without a policy, on a VM without one: the session-layer denials of shared
	// records were the other sessions', never "already allowed".
	none, err := Suggest(env, Input{Scope: client.ScopeSession, ID: "s-2", Shared: recs})
	if err != nil {
		t.Fatal(err)
	}
	if want := []client.LayerCount{{Layer: "session", Covers: 6}}; !reflect.DeepEqual(none.OtherLayers, want) || none.AlreadyAllowed != 0 || none.Changed {
		t.Errorf("no policy: %+v", none)
	}
}
