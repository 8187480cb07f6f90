// Package suggest computes policy suggestions (DESIGN §2.9): from the recorded denials and
// would-be denials of a session or a VM, the smallest change to that layer's policy that
// would have allowed them.
//
// The change only adds: web flags to turn on, names to add to allowed_domains (ports 80 and
// 443, and names seen only in DNS queries), name:port entries to add to allowed_tcp (other
// ports). Three or more names denied under one registrable domain (the public suffix list:
// golang.org/x/net/publicsuffix) are collapsed into "*.<registrable domain>"; names under a
// public suffix that someone else's sites share (github.io) are never collapsed together.
//
// Only the denials that the layer itself caused are its to fix: a record whose layer is
// another one is counted, not suggested. Denials that no such entry lifts are listed as not
// allowable with their reason: hard denials, denied_domains entries, IP literals, private
// addresses, other transports, the gateway's own refusals. The suggestion never adds a
// CIDR, never removes an entry and never changes the mode: a CIDR opens every port, and a
// removal undoes a choice someone made; the explanations say how, for a person to decide.
// A flag is turned on only for a denial on its port, and a note says so when the flag opens
// the port to more hosts than were denied (allowed_domains empty, or other listed hosts).
//
// Each record is judged again against the layer's current policy (by name, with the policy
// package, as the check endpoint judges a name), so that denials that a later change
// already allows are not suggested twice.
package suggest
