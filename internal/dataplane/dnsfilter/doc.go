// Package dnsfilter is the transparent gateway's filtering DNS server (DESIGN §2.2, §4): the
// only resolver a sandbox can reach. nftables sends every sandbox packet to port 53, UDP and
// TCP, here; a query is answered only for a name that the sandbox's effective policy could
// allow, only for A and AAAA, with the addresses it must not reach removed. Everything else
// is refused without a packet leaving the gateway, so that query names cannot carry data
// out, and clients keep a readable SNI (HTTPS and SVCB records, hence ECH, are refused).
//
// The package is laid out like a small CoreDNS plugin: setup.go (Server, listeners,
// shutdown), handler.go (identity, checks, decision, refusals, records), forward.go (the
// upstream exchange) and answer.go (the filter of upstream answers).
//
// # Setup
//
//	srv := &dnsfilter.Server{
//		VMs:      dnsfilter.FromView(v), // source address → tenant, vm_id, *policy.Effective
//		Upstream: "192.0.2.53:53",       // --dns-upstream; "" reads /etc/resolv.conf
//		Sink:     hub,                   // one events.Record per query
//		Logger:   logger,
//	}
//	go srv.Serve(udpConn)      // a net.PacketConn
//	go srv.ServeListener(tcpLn) // a net.Listener
//	...
//	srv.Shutdown(ctx)
//
// Serve and ServeListener may be called for any number of sockets (one per gateway
// address, say) and return ErrServerClosed after Shutdown. Server is also a dns.Handler.
// Listen on the address and port that the firewall's DNS redirect leads to; the source
// address of a redirected query stays the sandbox's, which is what identifies it. UDP
// answers leave from the address the query was sent to (miekg/dns sets IP_PKTINFO), so a
// wildcard listener works behind a redirect.
//
// # What a query gets
//
// A query is taken through these steps; the first that applies answers it. Each refusal
// carries an Extended DNS Error (RFC 8914) when the client sent EDNS (an OPT record is added
// to an answer only then, RFC 6891), whose text starts "egressd: " and gives the reason, the
// rule and the policy layer, as dig shows it ("EDE: 15 (Blocked): (egressd: name is not
// allowed (not in allowed_domains) by the vm policy)").
//
//	step                                       RCODE      EDE                 record reason
//	source address of no sandbox (VMs)         REFUSED    18 Prohibited       unknown_sandbox (layer hard)
//	opcode other than QUERY                    NOTIMP     21 Not Supported    malformed_query
//	not exactly one question                   FORMERR    0 Other             malformed_query
//	EDNS version other than 0                  BADVERS    0 Other             malformed_query
//	class other than IN                        REFUSED    21 Not Supported    query_class
//	no policy for the sandbox (nil policy)     REFUSED    15 Blocked          no_policy
//	type other than A and AAAA                 REFUSED    15 Blocked          query_type (hard, every mode)
//	name that policy.NormalizeName rejects     REFUSED    15 Blocked          bad_name
//	name that Effective.DecideQuery denies     REFUSED    15 Blocked          the policy's reason, layer and rule
//	MaxInFlight queries already forwarded      SERVFAIL   0 Other             busy (deny)
//	upstream unreachable or timed out          SERVFAIL   23 Network Error    the policy's (allow)
//	upstream RCODE other than NOERROR/NXDOMAIN SERVFAIL   0 Other             the policy's (allow)
//	upstream answer                            NOERROR or NXDOMAIN, filtered (below)
//
// A message that miekg/dns cannot parse is answered FORMERR, or not at all, by miekg/dns
// itself, and not recorded; a response (QR set) is dropped. Names are judged in the form
// policy.NormalizeName gives (lower case, no trailing dot, LDH only): an underscore, an
// escaped byte, an IP address or bad punycode is invalid. A label over 63 bytes or a name
// over 255 cannot be expressed on the wire at all. A decision of a monitor layer that would
// deny lets the query through, recorded with would_deny; the type check is not a policy
// layer and refuses in every mode.
//
// Long random labels under an allowed wildcard (*.example.com) are valid, allowed names and
// are forwarded: tunnelling through a domain the operator allows is the operator's choice.
// A name under a domain that no rule allows is never forwarded, whatever its labels.
//
// # Forwarding
//
// An allowed question goes to Upstream as a new query: the normalised name (the very name
// the policy judged) and type, class IN, RD set, a fresh random ID from crypto/rand (never
// the client's), an OPT record of the gateway's own (1232 bytes, no DO, no option) and
// nothing else of the client's message: its EDNS options (cookies, client subnet, padding,
// private codes), other sections and flags stay behind. It is sent over UDP from a fresh
// socket (a random source port) and again over TCP if the answer is truncated, within
// Timeout in all. An answer for another question is an upstream failure.
//
// At most MaxInFlight (256) questions are being forwarded at once; one more is answered
// SERVFAIL at once, without waiting, so that a flood from a sandbox costs the gateway
// neither sockets nor held goroutines. Refusals need no slot.
//
// There is no cache: every allowed query is forwarded (the upstream resolver caches), so
// that a policy change applies to the very next query.
//
// # Answers
//
// Of the upstream answer, the sandbox gets:
//
//   - the CNAME chain that starts at the question's name, in order, at most 8 links, a loop
//     cut (a DNAME's synthesised CNAME is part of it; the DNAME is not);
//   - the records of the asked type (A or AAAA), class IN, owned by a name of that chain,
//     whose address Effective.KeepAnswer admits: not hard-denied (loopback, link-local, metadata,
//     the gateway's own addresses...) and public or inside allowed_cidrs for every enforce
//     layer. An AAAA record holding an IPv4-mapped address is removed too;
//   - nothing else: other types and owners, signatures, and the authority and additional
//     sections are dropped whole;
//   - every TTL capped at MaxTTL (300 s), a TTL over 2^31-1 counting as 0 (RFC 2181), so
//     that the sandbox's caches follow policy changes within MaxTTL.
//
// The header is the client's (ID, question in the client's spelling, so that 0x20 case
// randomisation checks pass, RD, CD) with RA set and AA and AD clear; answer records owned
// by the question's name are given the client's spelling too. NOERROR and NXDOMAIN are
// passed on.
//
// When addresses were removed, the answer carries EDE 17 (Filtered). When all were, the
// answer is NOERROR without addresses (NODATA), not REFUSED nor NXDOMAIN: the name is
// allowed, and REFUSED would tell the client (and a person reading the records) that the
// policy refused it, and make stub resolvers try the next server or search domain;
// NXDOMAIN would be a lie about every type of the name, cached, that also kills the other
// address family's answer; NODATA for one family lets a dual-stack client use the other
// (happy eyeballs). Without an SOA record the NODATA is not cached negatively (RFC 2308 §5),
// so adding the range to allowed_cidrs takes effect at the next query.
//
// Over UDP an answer is cut to what the client can take, 512 bytes or its EDNS size but at
// most 1232 (DNS Flag Day 2020: no fragments), whole records only, with TC set when
// something was left out; the client asks again over TCP, which gets the whole answer.
//
// # Opening TCP (allowed_tcp)
//
// With Server.TCP set (the transparent gateway sets it), every answer that gives the
// sandbox at least one address is first told to TCP.OpenTCP: the sandbox (its source
// address, tenant and VM), the name asked, the addresses exactly as the sandbox gets them
// (filtered, and after truncation to what the client can take), and the smallest TTL of
// those records. The gateway puts the (address, port) pairs that the VM's allowed_tcp
// entries allow for the name into that VM's kernel set (DESIGN §2.6) and remembers which
// name the VM looked up for which address; it opens nothing for any other VM. The answer
// is written only once OpenTCP has returned, so the connection that the sandbox makes as
// soon as it has the address finds the kernel open.
//
// When OpenTCP fails (the kernel could not take the elements), the sandbox gets SERVFAIL,
// with EDE 0 "the gateway could not open the answer's addresses", and no address: it
// fails closed. The choice keeps the sandbox's view consistent: an address it is given is
// one the kernel forwards to (or one it never needed to, a web name's, which goes to the
// proxy), never one whose connections the kernel would drop without a word; SERVFAIL
// makes a stub resolver ask again, which retries the opening. The record of such a query
// keeps the policy's decision (the name is allowed), as for an upstream failure, without
// an address. An AAAA answer is told too; the kernel forwards no IPv6 from a sandbox, so
// its addresses open nothing, and a dual-stack client falls back to IPv4 as it does for
// the web.
//
// # Records
//
// Each query that reaches the handler gives exactly one events.Record, sent after the
// answer: Kind "dns", Tenant and VMID of the sandbox (empty for an unknown source; no
// SessionID, since in transparent mode the sessions of a VM share its network), Decision
// "allow" or "deny" with WouldDeny, Reason, Rule and Layer (of the policy, or "hard" for the
// gateway's own refusals), Mode "monitor" when a monitor layer would have denied and
// "enforce" otherwise, Transport "udp" or "tcp", Host the normalised name (the name as
// sent, escaped, when it is invalid), QType ("A", "TXT", "TYPE4242"), and IP the first
// address given to the sandbox, empty when none was: the address the sandbox will most
// likely connect to, to match with the connection records that follow. The source address
// is not recorded: VMID says who asked. A query the policy allowed keeps Decision "allow"
// when the upstream fails; only the saturation refusal turns it into a denial.
package dnsfilter
