package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/policy"
)

// effectiveFields is the readable form of an effective policy: each field's value, and in
// parentheses the layers it comes from, so that a person can see which policy to change.
func effectiveFields(e *client.Effective) []field {
	layers := make([]string, len(e.Layers))
	for i, l := range e.Layers {
		layers[i] = string(l.Layer)
		if l.Revision != 0 {
			layers[i] += " (revision " + strconv.FormatInt(l.Revision, 10) + ")"
		}
	}
	if len(layers) == 0 {
		layers = []string{"(none)"}
	}

	var domains []string
	switch e.AllowedDomains.Hosts {
	case policy.HostsAny:
		domains = []string{"(any public host)"}
		if !e.AllowHTTP.Value && !e.AllowHTTPS.Value {
			// No list, but no web traffic either: "any" would promise what the flags deny.
			domains = []string{"(none: HTTP and HTTPS are off)"}
		}
	case policy.HostsNone:
		domains = []string{"(no host: the layers' lists have nothing in common)"}
	default:
		domains = orNone(e.AllowedDomains.Value)
	}

	fields := []field{
		one("session_id", e.SessionID),
		one("vm_id", e.VMID),
		{"layers", []string{strings.Join(layers, ", ")}},
		one("mode", string(e.Mode.Value)+from(e.Mode.From)),
		one("allow_http", strconv.FormatBool(e.AllowHTTP.Value)+from(e.AllowHTTP.From)),
		one("allow_https", strconv.FormatBool(e.AllowHTTPS.Value)+from(e.AllowHTTPS.From)),
		one("allow_package_managers", strconv.FormatBool(e.AllowPackageManagers.Value)+from(e.AllowPackageManagers.From)),
		withFrom("allowed_domains", domains, e.AllowedDomains.From),
		withFrom("allowed_cidrs", orNone(e.AllowedCIDRs.Value), e.AllowedCIDRs.From),
		withFrom("denied_domains", orNone(e.DeniedDomains.Value), e.DeniedDomains.From),
		withFrom("allowed_tcp", orNone(e.AllowedTCP.Value), e.AllowedTCP.From),
	}
	if len(e.HTTPRules.Rules) > 0 {
		rules := make([]string, len(e.HTTPRules.Rules))
		for i, r := range e.HTTPRules.Rules {
			rules[i] = fmt.Sprintf("%s[%d]: %s", r.Layer, r.Index, formatHTTPRule(r.HTTPRule))
		}
		fields = append(fields, field{"http_rules", rules}, withFrom("intercepted", e.HTTPRules.Intercepted, e.HTTPRules.From))
	}
	if len(e.PackageManagers) > 0 {
		fields = append(fields, one("package_managers", strings.Join(e.PackageManagers, ", ")))
	}
	// Grants are in the values above; this says which ones, and until when.
	var grants []string
	for _, l := range e.Layers {
		for _, g := range l.Grants {
			entries := strings.Join(append(append(prefixAll("domain ", g.Domains), prefixAll("tcp ", g.TCP)...), prefixAll("cidr ", g.CIDRs)...), ", ")
			grants = append(grants, fmt.Sprintf("%s %s until %s: %s", l.Layer, g.ID, formatTime(g.ExpiresAt), entries))
		}
	}
	if len(grants) > 0 {
		fields = append(fields, field{"grants", grants})
	}
	return append(fields, field{"note", e.Notes}.orOmit()...)
}

// from is "  (from session, vm)", or "" when no layer is named.
func from(layers []policy.Layer) string {
	if len(layers) == 0 {
		return ""
	}
	names := make([]string, len(layers))
	for i, l := range layers {
		names[i] = string(l)
	}
	return fmt.Sprintf("  (from %s)", strings.Join(names, ", "))
}

// withFrom is a list field whose first line names the layers it comes from.
func withFrom(key string, values []string, layers []policy.Layer) field {
	values = append([]string(nil), values...)
	values[0] += from(layers)
	return field{key, values}
}

func prefixAll(prefix string, ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = prefix + s
	}
	return out
}
