package suggest

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// Input is what one suggestion is computed from.
type Input struct {
	// Scope is the layer to fix, client.ScopeSession or client.ScopeVM, and ID its session or VM.
	Scope, ID string
	// VMID is a session's VM, answered so that a reader can ask for its suggestion.
	VMID string
	// Policy is the layer's stored policy and Revision its revision; nil when none is set.
	Policy   *policy.Policy
	Revision int64
	// OtherLayerSet says, for a layer with no policy, that the other layer is set: the
	// operator's default then no longer applies, and setting this layer would add a
	// restriction rather than replace the default, so nothing is suggested. (A session's
	// other layer is its VM; for a VM pass false: its sessions without a policy of their
	// own ran under the default.)
	OtherLayerSet bool
	// Records are the decisions to read, of this session or VM, oldest first; allowed ones
	// and close records are skipped. Truncated says that there were more than these.
	Records   []events.Record
	Truncated bool
	// Shared are, for a session, the records of its VM that name no session: in transparent
	// mode the gateway sees only the VM, and its traffic is held to the VM's policy and every
	// open session's. A session layer's denial among them is this session's only if its
	// policy denies it too; otherwise another session's policy did (counted in other_layers
	// as "session").
	Shared []events.Record
}

// Suggest computes the suggestion for in, in env's setting (its preset, address classes and
// default policy, as the gateway decides). The error is for a merged policy that is not
// valid, such as one over a list's limit.
func Suggest(env *policy.Env, in Input) (*client.Suggestion, error) {
	layer := policy.LayerSession
	if in.Scope == client.ScopeVM {
		layer = policy.LayerVM
	}
	out := &client.Suggestion{
		Scope: in.Scope, ID: in.ID, VMID: in.VMID, PolicySet: in.Policy != nil, Revision: in.Revision, Truncated: in.Truncated,
		Flags: []client.SuggestedEntry{}, AllowedDomains: []client.SuggestedEntry{}, AllowedTCP: []client.SuggestedEntry{},
		NotAllowable: []client.NotAllowable{}, OtherLayers: []client.LayerCount{}, Notes: []string{},
	}
	b := &builder{layer: layer, out: out, flags: map[string]int{}, web: map[string]int{}, tcp: map[string]int{},
		dns: map[string]int{}, not: map[notKey]*client.NotAllowable{}, other: map[string]int{}, flagHosts: map[string]map[string]bool{}}
	switch {
	case in.Policy != nil:
		b.base = in.Policy.WithDefaults()
	case !in.OtherLayerSet:
		b.base = env.Default().WithDefaults()
		b.fromDefault = true
	default:
		b.noBase = true
	}
	if !b.noBase {
		judged := b.base
		judged.Mode = policy.Enforce // judged for what the layer allows, not for what it lets through
		m, err := env.Compile(judged)
		if err != nil {
			return nil, fmt.Errorf("suggest: compile the %s policy: %w", layer, err)
		}
		b.m = m
		b.judge = env.Combine(policy.Layered{Layer: layer, Matcher: m})
	}
	for i := range in.Records {
		b.record(&in.Records[i], false)
	}
	for i := range in.Shared {
		b.record(&in.Shared[i], true)
	}
	if err := b.finish(env); err != nil {
		return nil, err
	}
	return out, nil
}

// builder accumulates one suggestion.
type builder struct {
	layer       policy.Layer
	base        policy.Policy
	noBase      bool // no policy and another layer set: nothing is this layer's
	fromDefault bool // no policy: the base is the operator's default
	m           *policy.Matcher
	judge       *policy.Effective // the base alone, enforced
	out         *client.Suggestion

	flags     map[string]int             // "allow_http", "allow_https" -> decisions
	flagHosts map[string]map[string]bool // flag -> hosts denied for want of it
	web       map[string]int             // names for allowed_domains -> connection decisions
	tcp       map[string]int             // "name:port" -> decisions
	dns       map[string]int             // names queried -> DNS decisions
	not       map[notKey]*client.NotAllowable
	other     map[string]int // layer -> decisions
}

// fixable are the reasons an entry of allowed_domains or allowed_tcp, or a web flag, lifts.
var fixable = map[policy.Reason]bool{
	policy.ReasonHostNotListed: true,
	policy.ReasonHTTPSOff:      true,
	policy.ReasonHTTPOff:       true,
	policy.ReasonPort:          true,
	policy.ReasonNameNotListed: true,
	policy.ReasonNoPolicy:      true,
}

// record sorts one record: not a denial (skipped), another layer's, not allowable, allowed
// by the layer as it is now, or something to add. A shared record names no session (see
// Input.Shared).
func (b *builder) record(r *events.Record, shared bool) {
	if r.Kind == events.KindClose || !(r.Decision == events.Deny || r.WouldDeny) {
		return
	}
	b.out.Decisions++
	layer := policy.Layer(r.Layer)
	if layer == policy.LayerHard {
		b.notAllowable(r, r.Reason, r.Rule)
		return
	}
	// A denial by the default policy is this layer's when setting this layer replaces the
	// default (or, once set, would have to allow it too).
	if (layer != b.layer && layer != policy.LayerDefault) || b.noBase {
		b.other[r.Layer]++
		return
	}
	if layer == b.layer && b.fromDefault {
		// The layer had a policy then and has none now: by itself it denies nothing any more
		// (a shared record's was another session's, this one having none).
		if shared {
			b.other[r.Layer]++
		} else {
			b.out.AlreadyAllowed++
		}
		return
	}
	// A denial by name is judged again below: a denied_domains entry may have been removed
	// since, or, in a shared record, be another session's.
	if !fixable[r.Reason] && r.Reason != policy.ReasonDeniedDomain || r.Host == "" {
		b.notAllowable(r, r.Reason, r.Rule)
		return
	}
	host, err := policy.NormalizeName(r.Host)
	if err != nil {
		b.notAllowable(r, policy.ReasonBadName, err.Error())
		return
	}
	// Judge again, by name, with the layer's policy as it is now.
	var d policy.Decision
	if r.Kind == events.KindDNS {
		d = b.judge.DecideQuery(policy.Query{Name: host, Type: policy.QTypeA})
	} else {
		// A port outside 1-65535 cannot be an entry (nor is it one a gateway records).
		if r.Transport != "" && r.Transport != string(policy.TCP) || r.Port < 1 || r.Port > 65535 {
			b.notAllowable(r, r.Reason, r.Rule)
			return
		}
		d = b.judge.Decide(policy.Conn{Host: host, Port: uint16(r.Port), Transport: policy.TCP, Intercepted: true})
	}
	switch {
	case d.Allow && shared:
		b.other[string(policy.LayerSession)]++ // another open session's policy denied it
	case d.Allow:
		b.out.AlreadyAllowed++
	case !fixable[d.Reason]:
		b.notAllowable(r, d.Reason, d.Rule) // denied for another reason now, e.g. a new denied_domains entry
	case b.addressBlocks(r):
		// The name led to an address that no entry by name opens: listing it would not let
		// the recorded connection through (a sandbox picks its names' answers).
	case r.Kind == events.KindDNS:
		b.dns[host]++
	case r.Port == 80 || r.Port == 443:
		b.webFix(host, r.Port)
	default:
		b.tcp[host+":"+strconv.Itoa(r.Port)]++
	}
}

// addressBlocks lists r as not allowable, and says so, when r's recorded address is one
// that the layer never lets a name reach: hard-denied, or not public and outside its
// allowed_cidrs. A denial by name comes before the address is judged, so such a record's
// reason is often only "host not listed".
func (b *builder) addressBlocks(r *events.Record) bool {
	ip, err := netip.ParseAddr(r.IP)
	if err != nil || b.judge.KeepAnswer(ip) {
		return false
	}
	if d := b.judge.Decide(policy.Conn{IP: ip, IPLiteral: true, Port: uint16(r.Port), Transport: policy.TCP}); d.Layer == policy.LayerHard {
		b.notAllowable(r, d.Reason, d.Rule)
	} else {
		b.notAllowable(r, policy.ReasonNotPublic, "the address is not public and not in allowed_cidrs")
	}
	return true
}

// anyHost says that the base allows every public host on the ports whose flag is on.
func (b *builder) anyHost() bool {
	return len(b.base.AllowedDomains) == 0 && (b.base.AllowHTTP || b.base.AllowHTTPS)
}

// webFix records what host on a web port needs: its flag, and a listing unless the layer
// lists no hosts (then the flag alone opens every host, as the other flag does already).
func (b *builder) webFix(host string, port int) {
	flag, on := "allow_https", b.base.AllowHTTPS
	if port == 80 {
		flag, on = "allow_http", b.base.AllowHTTP
	}
	if !on {
		b.flags[flag]++
		if b.flagHosts[flag] == nil {
			b.flagHosts[flag] = map[string]bool{}
		}
		b.flagHosts[flag][host] = true
	}
	if _, listed := b.m.MatchAllowed(host); !listed && !b.anyHost() {
		b.web[host]++
	}
}

// finish turns the counts into the answer and the merged policy.
func (b *builder) finish(env *policy.Env) error {
	out := b.out
	for _, l := range sortedKeys(b.other) {
		out.OtherLayers = append(out.OtherLayers, client.LayerCount{Layer: l, Covers: b.other[l]})
	}
	for _, n := range b.not {
		out.NotAllowable = append(out.NotAllowable, *n)
	}
	slices.SortFunc(out.NotAllowable, func(x, y client.NotAllowable) int {
		return cmp.Or(y.Covers-x.Covers, cmp.Compare(x.Reason, y.Reason), cmp.Compare(x.Host, y.Host),
			cmp.Compare(x.IP, y.IP), cmp.Compare(x.Port, y.Port), cmp.Compare(x.Kind, y.Kind))
	})
	if b.noBase {
		if len(b.other) > 0 {
			out.Notes = append(out.Notes, "This "+string(b.layer)+" has no policy and the other layer is set: that layer alone decides "+
				"its traffic, so the denials are that layer's to fix (see its suggestion).")
		}
		return nil
	}

	domains, tcp := b.entries()
	for _, f := range []string{"allow_http", "allow_https"} {
		if n := b.flags[f]; n > 0 {
			out.Flags = append(out.Flags, client.SuggestedEntry{Entry: f, Covers: n})
		}
	}
	out.AllowedDomains, out.AllowedTCP = sortEntries(domains), sortEntries(tcp)

	merged := b.base
	merged.AllowedDomains = slices.Clone(merged.AllowedDomains)
	merged.AllowedTCP = slices.Clone(merged.AllowedTCP)
	for _, e := range domains {
		merged.AllowedDomains = append(merged.AllowedDomains, e.Entry)
	}
	for _, e := range tcp {
		merged.AllowedTCP = append(merged.AllowedTCP, e.Entry)
	}
	merged.AllowHTTP = merged.AllowHTTP || b.flags["allow_http"] > 0
	merged.AllowHTTPS = merged.AllowHTTPS || b.flags["allow_https"] > 0
	norm, _, err := env.Normalize(merged)
	if err != nil {
		return fmt.Errorf("suggest: the merged %s policy is not valid: %w", b.layer, err)
	}
	out.Policy = &norm
	out.Changed = len(out.Flags)+len(out.AllowedDomains)+len(out.AllowedTCP) > 0
	b.notes(norm)
	return nil
}

// entries collapses the names into allowed_domains and allowed_tcp entries and counts, for
// each, the decisions it covers. A name seen only in DNS queries goes to allowed_domains,
// which makes it resolve; a query for a name that another entry covers counts there.
func (b *builder) entries() (domains, tcp []client.SuggestedEntry) {
	tcpNames := map[string]bool{}
	byPort := map[string]map[string]int{}
	for e, n := range b.tcp {
		name, port := splitEndpoint(e)
		tcpNames[name] = true
		if byPort[port] == nil {
			byPort[port] = map[string]int{}
		}
		byPort[port][name] += n
	}
	names := map[string]int{}
	for h, n := range b.web {
		names[h] = n
	}
	for h := range b.dns {
		if _, ok := names[h]; !ok && !tcpNames[h] && !b.coveredByBase(h) {
			names[h] = 0 // its queries are counted below
		}
	}
	domains = collapse(names)
	for _, port := range sortedKeys(byPort) {
		for _, e := range collapse(byPort[port]) {
			e.Entry += ":" + port
			tcp = append(tcp, e)
		}
	}
	for h, n := range b.dns {
		switch {
		case addTo(domains, h, n, false):
		case addTo(tcp, h, n, true):
		}
		// Otherwise the base covers it by name but denied it: counted nowhere, which
		// cannot happen since the query would then be allowed now.
	}
	return domains, tcp
}

// coveredByBase says whether the base already lists h in allowed_domains or allowed_tcp (a
// query for it is then denied for another reason, never for want of a listing).
func (b *builder) coveredByBase(h string) bool {
	_, ok := b.m.MatchAllowed(h)
	return ok
}

// addTo adds n decisions to the first entry that covers h; tcp entries are "name:port".
func addTo(es []client.SuggestedEntry, h string, n int, tcp bool) bool {
	for i := range es {
		pat := es[i].Entry
		if tcp {
			pat, _ = splitEndpoint(pat)
		}
		if covers(pat, h) {
			es[i].Covers += n
			return true
		}
	}
	return false
}

func splitEndpoint(e string) (name, port string) {
	for i := len(e) - 1; i >= 0; i-- {
		if e[i] == ':' {
			return e[:i], e[i+1:]
		}
	}
	return e, ""
}

// notes says what a reader of the change could miss.
func (b *builder) notes(merged policy.Policy) {
	out := b.out
	if b.fromDefault && out.Changed {
		out.Notes = append(out.Notes, "This "+string(b.layer)+" has no policy: the suggestion starts from the operator's default policy, "+
			"which applied while neither layer was set. Once set, this policy is a layer every connection must pass.")
	}
	for _, f := range out.Flags {
		port := "443 (HTTPS)"
		if f.Entry == "allow_http" {
			port = "80 (HTTP)"
		}
		if len(merged.AllowedDomains) == 0 {
			out.Notes = append(out.Notes, fmt.Sprintf("allowed_domains is empty, so turning %s on opens port %s to every public host, "+
				"not only the ones denied; list hosts in allowed_domains to narrow it (that also narrows the other web port).", f.Entry, port))
			continue
		}
		var more []string
		for _, d := range merged.AllowedDomains {
			if !b.coversSome(d, b.flagHosts[f.Entry]) {
				more = append(more, d)
			}
		}
		if len(more) > 0 {
			out.Notes = append(out.Notes, fmt.Sprintf("%s applies to every allowed_domains entry: turning it on opens port %s to %s too.",
				f.Entry, port, listSome(more)))
		}
	}
	dnsOnly := 0
	for _, e := range out.AllowedDomains {
		for _, h := range namesOf(e) {
			if b.web[h] == 0 && b.dns[h] > 0 {
				dnsOnly++
			}
		}
	}
	if dnsOnly > 0 {
		out.Notes = append(out.Notes, fmt.Sprintf("%d of the names were seen only in DNS queries: allowed_domains makes them resolve; "+
			"the connections that follow may still need a web flag or an allowed_tcp entry. Monitor mode records those "+
			"connections too, so one suggestion covers both.", dnsOnly))
	}
	if out.Truncated {
		out.Notes = append(out.Notes, fmt.Sprintf("More records matched than one suggestion reads (%d denied, %d allowed among which the would-be denials), "+
			"so some denials may be missing: ask again with since set after the last ones read.", client.MaxSuggestionRecords, client.MaxSuggestionRecords))
	}
}

// coversSome says whether the allowed_domains entry d matches one of hosts: an entry that
// was added for the hosts a flag is turned on for opens nothing more by that flag.
func (b *builder) coversSome(d string, hosts map[string]bool) bool {
	for h := range hosts {
		if covers(d, h) {
			return true
		}
	}
	return false
}

// namesOf is the names an entry was made for.
func namesOf(e client.SuggestedEntry) []string {
	if len(e.Names) > 0 {
		return e.Names
	}
	return []string{e.Entry}
}

func listSome(ss []string) string {
	const show = 3
	if len(ss) <= show {
		return strings.Join(ss, ", ")
	}
	return strings.Join(ss[:show], ", ") + " and " + strconv.Itoa(len(ss)-show) + " more"
}

func sortEntries(es []client.SuggestedEntry) []client.SuggestedEntry {
	if es == nil {
		return []client.SuggestedEntry{}
	}
	slices.SortFunc(es, func(x, y client.SuggestedEntry) int {
		return cmp.Or(y.Covers-x.Covers, cmp.Compare(x.Entry, y.Entry))
	})
	return es
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
