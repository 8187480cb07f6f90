package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// NamedPolicy is one stored layer, as Explain reads it.
type NamedPolicy struct {
	Layer     Layer
	Policy    Policy
	Revision  int64
	UpdatedAt time.Time
	// Grants are the layer's active grants (DESIGN §2.8), added to Policy.
	Grants []Grant
	// NoPolicy: the layer has no policy, only Grants. Such a layer restricts nothing, so
	// its grants add nothing while another layer is set; with no layer set, they are added
	// to the operator's default policy, which stands in for the unset layers (Env.Effective).
	NoPolicy bool
}

// Explanation is the effective policy of a session as one readable object (GET
// /v1/egress/session/{id}/effective): the layers that are set, each field's effective value
// with the layers it comes from, and notes on the interplay a reader could miss. It explains
// Decide; it does not replace it.
//
// Values come from the enforce layers (every layer, if all are in monitor mode): a monitor
// layer restricts nothing, and the notes say what it would deny.
type Explanation struct {
	// Layers are the layers that are set, session first, with their whole policies.
	Layers []EffectiveLayer `json:"layers"`
	// Mode is enforce if any layer enforces.
	Mode EffectiveMode `json:"mode"`
	// The booleans are ANDed: From names the layers that turn a flag off, or, when it is on,
	// every layer (they all turn it on).
	AllowPackageManagers EffectiveBool `json:"allow_package_managers"`
	AllowHTTP            EffectiveBool `json:"allow_http"`
	AllowHTTPS           EffectiveBool `json:"allow_https"`
	// AllowedDomains is the intersection of the layers' non-empty lists.
	AllowedDomains EffectiveDomains `json:"allowed_domains"`
	// AllowedCIDRs is the intersection of the layers' lists (by prefix containment).
	AllowedCIDRs EffectiveList `json:"allowed_cidrs"`
	// DeniedDomains is the union of the layers' lists.
	DeniedDomains EffectiveList `json:"denied_domains"`
	// AllowedTCP is the intersection of the layers' lists: per port, the names every layer
	// opens on it. From names the layers with an empty list, or every layer.
	AllowedTCP EffectiveList `json:"allowed_tcp"`
	// HTTPRules are the http_rules entries of every layer, monitor layers included (their
	// domains are intercepted too), and the domains they make intercepted.
	HTTPRules EffectiveHTTPRules `json:"http_rules"`
	// PackageManagers names the preset's managers when allow_package_managers is in effect.
	PackageManagers []string `json:"package_managers,omitempty"`
	// Notes are sentences on what the values alone do not say.
	Notes []string `json:"notes"`
}

// EffectiveLayer is one layer that is set.
type EffectiveLayer struct {
	Layer     Layer     `json:"layer"`
	Revision  int64     `json:"revision,omitempty"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	Policy    Policy    `json:"policy"`
	// Grants are the layer's active grants; the values of the Explanation include them.
	Grants []Grant `json:"grants,omitempty"`
}

// EffectiveBool is an ANDed flag and the layers it comes from.
type EffectiveBool struct {
	Value bool    `json:"value"`
	From  []Layer `json:"from"`
}

// EffectiveMode is the effective mode and the layers it comes from.
type EffectiveMode struct {
	Value Mode    `json:"value"`
	From  []Layer `json:"from"`
}

// Values of EffectiveDomains.Hosts.
const (
	HostsAny    = "any"    // no layer lists domains: any public host (where a web flag is on)
	HostsListed = "listed" // only the hosts that Value matches
	HostsNone   = "none"   // the layers' lists have nothing in common: no host
)

// EffectiveDomains is the effective allowed_domains. An empty list in a policy means "any
// host", so Hosts says which case applies rather than letting an empty Value be read either
// way.
type EffectiveDomains struct {
	Hosts string   `json:"hosts"`
	Value []string `json:"value"`
	From  []Layer  `json:"from"`
}

// EffectiveHTTPRules is the http_rules of the layers. They are not merged: a request to a
// host is allowed only if, in every layer whose entries name the host, one of that layer's
// entries allows it, so each entry is listed with its layer and its index in that layer's
// policy (the index decisions report: "http_rules[2] ...").
type EffectiveHTTPRules struct {
	// Intercepted are the domain patterns that some entry names, minimal (a name that a
	// wildcard also names is left out): connections to them are intercepted and each request
	// decided. A tenant's secrets intercept their domains too; they are not listed here.
	Intercepted []string `json:"intercepted"`
	// Rules are the entries, session first, each layer's in its order.
	Rules []EffectiveHTTPRule `json:"rules"`
	// From names the layers that have entries.
	From []Layer `json:"from"`
}

// EffectiveHTTPRule is one http_rules entry with the layer it belongs to.
type EffectiveHTTPRule struct {
	Layer Layer `json:"layer"`
	Index int   `json:"index"`
	HTTPRule
}

// EffectiveList is an effective list and the layers it comes from.
type EffectiveList struct {
	Value []string `json:"value"`
	From  []Layer  `json:"from"`
}

// Explain computes the effective policy of the given layers, with preset as the
// package-manager list (nil means BuiltinPreset). When neither a session nor a VM policy is
// set, the caller passes the default policy as LayerDefault; with no layer at all, everything
// is denied and Explain says so.
func Explain(preset *Preset, layers ...NamedPolicy) Explanation {
	if preset == nil {
		preset = builtin()
	}
	layers = slices.Clone(layers)
	slices.SortStableFunc(layers, func(a, b NamedPolicy) int { return layerRank(a.Layer) - layerRank(b.Layer) })
	e := Explanation{Layers: []EffectiveLayer{}, Notes: []string{}}
	for i, l := range layers {
		p, _, err := l.Policy.normalize(false)
		if err != nil {
			// A stored policy is normalised; should one be broken, it allows nothing, as the
			// data path, which cannot compile it, does.
			e.Notes = append(e.Notes, fmt.Sprintf("The %s policy is invalid (%v): it allows nothing.", l.Layer, err))
			p = DenyAll()
		}
		layers[i].Policy = withGrants(p, l.Grants)
		e.Layers = append(e.Layers, EffectiveLayer{Layer: l.Layer, Revision: l.Revision, UpdatedAt: l.UpdatedAt, Policy: p, Grants: l.Grants})
	}
	if len(layers) == 0 {
		p := DenyAll()
		e.Mode = EffectiveMode{Value: Enforce, From: []Layer{}}
		e.AllowPackageManagers = EffectiveBool{From: []Layer{}}
		e.AllowHTTP = EffectiveBool{From: []Layer{}}
		e.AllowHTTPS = EffectiveBool{From: []Layer{}}
		e.AllowedDomains = EffectiveDomains{Hosts: HostsNone, Value: p.AllowedDomains, From: []Layer{}}
		e.AllowedCIDRs = EffectiveList{Value: p.AllowedCIDRs, From: []Layer{}}
		e.DeniedDomains = EffectiveList{Value: p.DeniedDomains, From: []Layer{}}
		e.AllowedTCP = EffectiveList{Value: p.AllowedTCP, From: []Layer{}}
		e.HTTPRules = explainRules(nil)
		e.Notes = append(e.Notes, "No policy is set, not even a default one: everything is denied.")
		e.Notes = append(e.Notes, noteHard)
		return e
	}

	// The layers whose rules are enforced; all of them if none is.
	var enforcing []NamedPolicy
	for _, l := range layers {
		if l.Policy.Mode == Enforce {
			enforcing = append(enforcing, l)
		}
	}
	e.Mode = EffectiveMode{Value: Enforce, From: names(enforcing)}
	if len(enforcing) == 0 {
		enforcing = layers
		e.Mode = EffectiveMode{Value: Monitor, From: names(layers)}
	}

	e.AllowPackageManagers = and(enforcing, func(p Policy) bool { return p.AllowPackageManagers })
	e.AllowHTTP = and(enforcing, func(p Policy) bool { return p.AllowHTTP })
	e.AllowHTTPS = and(enforcing, func(p Policy) bool { return p.AllowHTTPS })
	e.AllowedDomains = intersectDomains(enforcing)
	e.AllowedCIDRs = intersectCIDRs(enforcing)
	e.DeniedDomains = unionDomains(enforcing)
	e.AllowedTCP = intersectTCP(enforcing)
	e.HTTPRules = explainRules(layers)
	if e.AllowPackageManagers.Value {
		e.PackageManagers = slices.Sorted(maps.Keys(preset.Managers))
	}
	e.Notes = append(e.Notes, notes(&e, preset, layers, enforcing)...)
	return e
}

func names(ls []NamedPolicy) []Layer {
	out := make([]Layer, 0, len(ls))
	for _, l := range ls {
		out = append(out, l.Layer)
	}
	return out
}

func and(ls []NamedPolicy, flag func(Policy) bool) EffectiveBool {
	var off []NamedPolicy
	for _, l := range ls {
		if !flag(l.Policy) {
			off = append(off, l)
		}
	}
	if len(off) > 0 {
		return EffectiveBool{Value: false, From: names(off)}
	}
	return EffectiveBool{Value: true, From: names(ls)}
}

func intersectDomains(ls []NamedPolicy) EffectiveDomains {
	var from []NamedPolicy
	var value []string
	for _, l := range ls {
		if len(l.Policy.AllowedDomains) == 0 {
			continue // "any host": no constraint
		}
		if from == nil {
			value = slices.Clone(l.Policy.AllowedDomains)
		} else {
			value = IntersectDomains(value, l.Policy.AllowedDomains)
		}
		from = append(from, l)
	}
	switch {
	case from == nil:
		return EffectiveDomains{Hosts: HostsAny, Value: []string{}, From: []Layer{}}
	case len(value) == 0:
		return EffectiveDomains{Hosts: HostsNone, Value: []string{}, From: names(from)}
	}
	return EffectiveDomains{Hosts: HostsListed, Value: value, From: names(from)}
}

func intersectCIDRs(ls []NamedPolicy) EffectiveList {
	var empty []NamedPolicy
	var value []netip.Prefix
	for i, l := range ls {
		ps := make([]netip.Prefix, 0, len(l.Policy.AllowedCIDRs))
		for _, s := range l.Policy.AllowedCIDRs {
			ps = append(ps, netip.MustParsePrefix(s)) // normalised above
		}
		if len(ps) == 0 {
			empty = append(empty, l)
		}
		if i == 0 {
			value = minimalPrefixes(ps)
		} else {
			value = IntersectPrefixes(value, ps)
		}
	}
	strs := make([]string, len(value))
	for i, p := range value {
		strs[i] = p.String()
	}
	if len(empty) > 0 {
		return EffectiveList{Value: strs, From: names(empty)}
	}
	return EffectiveList{Value: strs, From: names(ls)}
}

func intersectTCP(ls []NamedPolicy) EffectiveList {
	var empty []NamedPolicy
	var value []string
	for i, l := range ls {
		if len(l.Policy.AllowedTCP) == 0 {
			empty = append(empty, l)
		}
		if i == 0 {
			value = append([]string{}, l.Policy.AllowedTCP...)
		} else {
			value = IntersectEndpoints(value, l.Policy.AllowedTCP)
		}
	}
	if len(empty) > 0 {
		return EffectiveList{Value: value, From: names(empty)}
	}
	return EffectiveList{Value: value, From: names(ls)}
}

func explainRules(ls []NamedPolicy) EffectiveHTTPRules {
	out := EffectiveHTTPRules{Intercepted: []string{}, Rules: []EffectiveHTTPRule{}, From: []Layer{}}
	var domains []string
	for _, l := range ls {
		if len(l.Policy.HTTPRules) == 0 {
			continue
		}
		out.From = append(out.From, l.Layer)
		for i, r := range l.Policy.HTTPRules {
			out.Rules = append(out.Rules, EffectiveHTTPRule{Layer: l.Layer, Index: i, HTTPRule: r})
			domains = append(domains, r.Domain)
		}
	}
	out.Intercepted = minimalPatterns(append(out.Intercepted, domains...))
	return out
}

func unionDomains(ls []NamedPolicy) EffectiveList {
	var from []NamedPolicy
	var all []string
	for _, l := range ls {
		if len(l.Policy.DeniedDomains) > 0 {
			all = append(all, l.Policy.DeniedDomains...)
			from = append(from, l)
		}
	}
	return EffectiveList{Value: minimalPatterns(append([]string{}, all...)), From: names(from)}
}

const noteHard = "Hard denials always apply, whatever the policies say: loopback, link-local and " +
	"cloud metadata addresses, multicast, broadcast and unspecified addresses, and egressd's own addresses."

// notes explains the interplay of the layers and fields of e.
func notes(e *Explanation, preset *Preset, layers, enforcing []NamedPolicy) []string {
	var ns []string
	add := func(format string, args ...any) { ns = append(ns, fmt.Sprintf(format, args...)) }
	for _, l := range layers {
		if l.Layer == LayerDefault {
			add("Neither the session nor its VM has a policy: the operator's default policy applies.")
		}
	}
	if len(layers) > 1 {
		add("A connection is allowed only if every layer allows it: flags are ANDed, allowed_domains " +
			"and allowed_cidrs are intersected, denied_domains are combined.")
	}
	monitorOnly := e.Mode.Value == Monitor
	for _, l := range layers {
		if l.Policy.Mode == Monitor && !monitorOnly {
			add("The %s layer is in monitor mode: it does not restrict what the enforce layers allow; "+
				"what it would deny is allowed and recorded with would_deny.", l.Layer)
		}
	}
	if monitorOnly {
		add("Every layer is in monitor mode: nothing is denied but hard denials; " +
			"what these rules would deny is allowed and recorded with would_deny.")
	}

	pm, web := e.AllowPackageManagers, e.AllowHTTP.Value || e.AllowHTTPS.Value
	if !pm.Value && len(pm.From) < len(enforcing) {
		var on []string
		for _, l := range enforcing {
			if l.Policy.AllowPackageManagers {
				on = append(on, string(l.Layer))
			}
		}
		add("allow_package_managers is on in %s but off in %s: registry hosts are allowed only where "+
			"every layer allows them by its other rules (allowed_domains with allow_http or allow_https); %s",
			strings.Join(on, ", "), joinLayers(pm.From), presetLeft(preset, enforcing))
	}
	if pm.Value {
		add("allow_package_managers: the preset's registries (%s) are allowed on ports 80 and 443, "+
			"even outside allowed_domains and with allow_http and allow_https off.", strings.Join(e.PackageManagers, ", "))
	}
	switch {
	case e.AllowedDomains.Hosts == HostsNone:
		add("The allowed_domains of %s have no host in common: no host name is allowed by allowed_domains.",
			joinLayers(e.AllowedDomains.From))
	case e.AllowedDomains.Hosts == HostsAny && web:
		add("allowed_domains is empty: %s any public host.", webPorts(e))
	case e.AllowedDomains.Hosts == HostsListed && web:
		add("%s only the hosts that allowed_domains matches; they also get DNS answers.", webPorts(e))
	case e.AllowedDomains.Hosts == HostsListed:
		add("allow_http and allow_https are off: the allowed_domains names get DNS answers, " +
			"but connections to them need their addresses in allowed_cidrs.")
	}
	if web || pm.Value {
		add("Hosts allowed by name are dialled only at addresses the gateway resolved itself, " +
			"and only at public ones or ones inside allowed_cidrs.")
	}
	if len(e.AllowedCIDRs.Value) > 0 {
		add("Destinations inside allowed_cidrs are allowed on every port, over TCP and UDP.")
	} else if len(enforcing) > 1 && everyLayerHasCIDRs(enforcing) {
		add("The allowed_cidrs of %s have no range in common: no destination is allowed by address.",
			joinLayers(e.AllowedCIDRs.From))
	}
	if len(e.AllowedTCP.Value) > 0 {
		add("allowed_tcp opens TCP to its name:port endpoints whatever the web flags say, at addresses the gateway " +
			"resolved that are public or inside allowed_cidrs; the names get DNS answers. In transparent mode the " +
			"kernel opens an address and port for a VM once that VM looked the name up, so another name that shares " +
			"the address and port is reachable too.")
	} else if len(enforcing) > 1 && everyLayerHas(enforcing, func(p Policy) bool { return len(p.AllowedTCP) > 0 }) {
		add("The allowed_tcp of %s have no endpoint in common: no TCP endpoint is allowed by name.",
			joinLayers(e.AllowedTCP.From))
	}
	if len(e.DeniedDomains.Value) > 0 {
		add("denied_domains win over every allow, the preset and allowed_cidrs included, wherever a host name is seen.")
	}
	ruleNotes(e, layers, add)
	if !web && !pm.Value && len(e.AllowedCIDRs.Value) == 0 && len(e.AllowedTCP.Value) == 0 && !monitorOnly {
		add("Nothing is allowed: every web flag is off, and allowed_cidrs and allowed_tcp are empty.")
	}
	add(noteHard)
	return ns
}

// ruleNotes explains the http_rules of the layers.
func ruleNotes(e *Explanation, layers []NamedPolicy, add func(string, ...any)) {
	r := e.HTTPRules
	if len(r.Rules) == 0 {
		return
	}
	names := r.Intercepted
	more := ""
	if len(names) > maxListed {
		names, more = names[:maxListed], fmt.Sprintf(" and %d more", len(r.Intercepted)-maxListed)
	}
	add("Requests to %s%s are intercepted and decided one by one: a request is allowed only if its host is allowed "+
		"and, in every layer whose http_rules name the host (%s), an entry of that layer allows its method and path "+
		"(the path decoded, dot segments resolved, prefixes on segment boundaries). "+
		"A layer without an entry for a host does not restrict that host's requests.",
		strings.Join(names, ", "), more, joinLayers(r.From))
	for _, l := range layers {
		if l.Policy.Mode == Monitor && len(l.Policy.HTTPRules) > 0 {
			add("The http_rules of the %s layer are in monitor mode: requests they would deny are allowed and recorded "+
				"with would_deny; their domains are intercepted all the same.", l.Layer)
		}
	}
}

// maxListed bounds the entries a note lists.
const maxListed = 10

// presetLeft says which preset patterns the layers without allow_package_managers still allow
// by their web rules, as the end of a sentence.
func presetLeft(preset *Preset, ls []NamedPolicy) string {
	var left []string
	for _, hosts := range preset.Managers {
		left = append(left, hosts...)
	}
	left = minimalPatterns(left)
	for _, l := range ls {
		p := l.Policy
		switch {
		case p.AllowPackageManagers:
		case !p.AllowHTTP && !p.AllowHTTPS:
			left = nil
		case len(p.AllowedDomains) > 0:
			left = IntersectDomains(left, p.AllowedDomains)
		}
	}
	switch {
	case len(left) == 0:
		return "none of the preset's hosts is."
	case len(left) > maxListed:
		return fmt.Sprintf("of the preset's hosts, %s and %d more are.", strings.Join(left[:maxListed], ", "), len(left)-maxListed)
	case len(left) == 1:
		return "of the preset's hosts, " + left[0] + " is."
	}
	return "of the preset's hosts, " + strings.Join(left, ", ") + " are."
}

func everyLayerHasCIDRs(ls []NamedPolicy) bool {
	return everyLayerHas(ls, func(p Policy) bool { return len(p.AllowedCIDRs) > 0 })
}

func everyLayerHas(ls []NamedPolicy, has func(Policy) bool) bool {
	for _, l := range ls {
		if !has(l.Policy) {
			return false
		}
	}
	return true
}

func joinLayers(ls []Layer) string {
	s := make([]string, len(ls))
	for i, l := range ls {
		s[i] = string(l)
	}
	return strings.Join(s, " and ")
}

// webPorts says which web ports are open, as the start of a sentence.
func webPorts(e *Explanation) string {
	switch {
	case e.AllowHTTP.Value && e.AllowHTTPS.Value:
		return "HTTP (80) and HTTPS (443) reach"
	case e.AllowHTTPS.Value:
		return "HTTPS (443) reaches"
	}
	return "HTTP (80) reaches"
}
