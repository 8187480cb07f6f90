package suggest

import (
	"maps"
	"slices"
	"strings"

	"golang.org/x/net/publicsuffix"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/policy"
)

// siblings is how many names under one registrable domain make a wildcard.
const siblings = 3

// collapse turns names (with the decisions each covers) into entries: "*.R" for each
// registrable domain R (eTLD+1 by the public suffix list) with three or more of the names
// strictly under it, and the names themselves otherwise. R itself, when denied, stays an
// entry of its own: "*.R" does not match R.
//
// The public suffix list includes the suffixes that hosting services share among their
// customers (github.io, s3.amazonaws.com...): a.github.io and b.github.io are two
// registrable domains, so that a wildcard never opens strangers' sites.
func collapse(names map[string]int) []client.SuggestedEntry {
	under := map[string][]string{}
	for _, h := range slices.Sorted(maps.Keys(names)) {
		r, err := publicsuffix.EffectiveTLDPlusOne(h)
		if err != nil || r == h {
			continue
		}
		under[r] = append(under[r], h)
	}
	var out []client.SuggestedEntry
	done := map[string]bool{}
	for _, r := range slices.Sorted(maps.Keys(under)) {
		hs := under[r]
		if len(hs) < siblings {
			continue
		}
		wild, err := policy.NormalizePattern("*." + r)
		if err != nil {
			continue // e.g. an eTLD+1 that is a bare TLD to policy's eyes: keep the names
		}
		e := client.SuggestedEntry{Entry: wild, Names: hs}
		for _, h := range hs {
			e.Covers += names[h]
			done[h] = true
		}
		out = append(out, e)
	}
	for _, h := range slices.Sorted(maps.Keys(names)) {
		if !done[h] {
			out = append(out, client.SuggestedEntry{Entry: h, Covers: names[h]})
		}
	}
	return out
}

// covers says whether the allowed_domains pattern pat matches the name h: exactly, or as
// "*.x" for every name under x.
func covers(pat, h string) bool {
	if rest, ok := strings.CutPrefix(pat, "*."); ok {
		return strings.HasSuffix(h, "."+rest)
	}
	return pat == h
}
