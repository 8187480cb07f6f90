// Package resolve is egressd's one resolver. The dialer (which dials only addresses it
// resolved itself), the DNS filter (which answers sandboxes) and the check endpoint (with
// "resolve": true) all ask the same Resolver, so that what /check says a name leads to is
// what the gateway dials and what a sandbox is told (DESIGN §4).
//
// Where it asks:
//
//   - With an upstream (--dns-upstream), that server only, over UDP and again over TCP when
//     the answer is truncated. Nothing else is consulted: not the hosts file, not
//     resolv.conf. A lab or a fleet that names its resolver gets exactly that resolver.
//   - Without one, the system's way: the hosts file first (a name listed there is answered
//     from it alone, as the Go and glibc resolvers do with "files dns"), then the nameservers
//     of resolv.conf in their order, the next one when one does not answer or answers
//     SERVFAIL or REFUSED. Both files are read again when they change.
//
// Every query is built afresh (a random ID, recursion desired, an OPT record of its own), so
// that nothing of a sandbox's own query but the allowed name leaves the gateway; an answer
// that does not echo the question is rejected.
//
// Exchange returns the answer message for one question, for the DNS filter, which filters
// and relays its records with their TTLs. LookupNetIP returns the addresses of a name (A,
// then AAAA, CNAMEs followed), cached for their TTL (at most five minutes; a name without
// addresses for 30 seconds), for the dialer and the check endpoint.
package resolve
