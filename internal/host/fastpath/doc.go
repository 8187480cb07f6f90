// Package fastpath verifies, from queued packets alone, the ClientHello of a TLS flow
// that the kernel fast path may forward (DESIGN §4 "Kernel fast path", issue 16).
//
// With --fast-path, TCP 443 from a sandbox to an address the gateway's resolver gave it
// is not redirected to the transparent proxy. Every packet of such a flow from the
// sandbox goes to a netfilter queue until egressd has read the whole ClientHello from the
// packets and judged it. A flow judged allowed is released: its held packets go, but the
// kernel does not forward it yet; its packets, the server's too, keep coming to the queue
// until the server acknowledges the ClientHello's last byte, and only then does the flow
// get the conntrack mark by which the kernel forwards the rest. This package is the logic
// between the queue and the judgement: no kernel, no netlink (package
// internal/host/nfqueue reads the queue; the wiring maps verdicts onto it).
//
// Why wait for the server: between the verdict and the held packet's arrival, the sandbox
// can send retransmissions of the ClientHello's offsets with other bytes; forwarded by the
// kernel, one could reach the server first (packets on different CPUs overtake each
// other), and the server's TCP keeps the first bytes it receives at an offset. Once the
// server has acknowledged the ClientHello, its bytes are in the server's receive buffer
// and any other bytes at those offsets are duplicates the server drops; until then every
// packet of the sandbox is checked against the judged bytes.
//
// # Use
//
//	v := fastpath.New(out, judge, fastpath.Limits{}) // zero Limits: the defaults
//	v.Handle(fastpath.Packet{ID: id, Data: ipv4}, time.Now()) // per queued packet, one goroutine
//	v.Sweep(time.Now())                                       // every ~100 ms, same goroutine
//	s := v.Stats()                                            // counters for metrics
//
// The queue carries the sandbox's packets of fast-path flows and the server's packets of
// released ones (the firewall queues a reply whose flow has firewall.MarkFastWait). A
// packet whose tuple, reversed, is a tracked flow is the server's; so is one of no tracked
// flow from port 443 to another port (after a restart of egressd). out (Verdicts) receives
// exactly one verdict per packet id: at once, or later for a data packet that is held
// until its flow's ClientHello is whole. The verdicts, and what the wiring does with them:
//
//   - Accept: let the packet go, nothing more (SYN, pure ACK, a checked packet of a
//     released flow, a server's packet before its confirmation). NF_ACCEPT.
//   - Pass: the ClientHello was judged allowed: let the packet go and mark the flow
//     released (MarkFastWait, then NF_ACCEPT). Every held packet of the flow gets Pass, in
//     arrival order (cheap and idempotent for the wiring).
//   - Drop: drop this packet only. NF_DROP.
//   - Reset: mark the flow refused; the firewall answers it, and every later packet, with
//     a TCP reset (MarkFastDeny, then NF_REPEAT). A refused flow gets one Reset (on the
//     packet in hand, or on one held packet when Sweep refuses it) and Drop for every other
//     held packet. Never given to a server's packet (the reset would go to the server).
//   - Confirm: a server's packet with ACK whose acknowledgement, less the client's ISN+1
//     (32-bit arithmetic, as a signed distance), reaches the ClientHello's end: mark the
//     flow verified (MarkFast, clearing MarkFastWait, then NF_ACCEPT); from then on the
//     kernel forwards the flow both ways.
//
// The Judge is asked once per flow, with the server name (as sent) and the exact bytes of
// the ClientHello's records; true passes the flow. It is also told of every refusal
// (Hello.Err set, wrapping one of the Err* sentinels or an error of sni.ServerName, worded
// for the denial record: "segments disagree: overlapping segments disagree at byte 517").
//
// # What is verified
//
// The promise: a flow is passed only if the bytes the server's TCP will assemble from the
// packets let go are exactly the bytes judged. Anything that could make them differ, or
// make the server drop a packet the verifier let go (and then take other bytes in its
// place once the mark lets everything through), refuses the flow:
//
//   - IPv4 with a right header checksum and no options; TCP with a right checksum over the
//     pseudo-header (the "checksum trick": a bad-checksum segment the server drops).
//     An IP fragment (the kernel reassembles before the queue, so never legitimately).
//   - A SYN without ACK, FIN, RST, URG or payload (TCP Fast Open data), with only the
//     options a client sends (MSS, window scale, SACK permitted, timestamps, an empty Fast
//     Open cookie request). A retransmitted SYN (same ISN, nothing sent yet) is accepted;
//     another ISN, or a SYN after data or on a verified flow, is refused.
//   - After the SYN, every packet has ACK set and one acknowledgement number (the server
//     sends nothing before the ClientHello, so a real client's never changes), only NOP,
//     timestamps and SACK options (Linux drops a segment with an unexpected MD5 signature),
//     timestamps if the SYN had them and on data never older than one already sent (PAWS),
//     on data a TTL no lower than the SYN's (it could expire before the server), no URG and
//     no urgent pointer.
//   - Data at offset seq-(ISN+1) within [0, HelloBytes); bytes overlapping bytes already
//     seen are equal. Out-of-order segments are held until the gap fills.
//   - The contiguous prefix starts with TLS handshake records (type 22, version 3.x,
//     1-16384 bytes, at most 16 records) whose first handshake message is a ClientHello;
//     when its 4+L bytes have arrived, its last record holds nothing after it and no byte
//     has been seen at or past that record's end. The records go to sni.ServerName
//     (crypto/tls's own parser).
//   - RST from the client: accepted, its held packets dropped (they can never be verified).
//     FIN: accepted if no data was ever sent, else refused (ErrFIN). Either way the flow is
//     then remembered as closed for Limits.Idle: the last ACKs of the close are accepted
//     (not refused as packets of an unknown flow), data is refused, a SYN starts anew.
//
// After Pass the flow is released, and remembered so for at most Limits.Hold: each client
// packet's bytes overlapping the ClientHello must equal it (else Reset: the refused mark
// overrides the others), bytes past it get Accept, a SYN gets Reset, a RST Accept. The
// server's packets: Confirm as above; a RST gets Accept and the flow is forgotten; any
// other gets Accept. A released flow the server does not confirm within Limits.Hold is
// forgotten by Sweep, not refused (the bytes the server may have are the judged ones):
// its client's packets are then an unknown flow's (Reset), its server's get Drop; it fails
// closed. After Confirm the flow is remembered for 2 s as verified, for packets queued
// before the mark took effect: the client's checked as above, the server's Accept.
// A server's packet of an unverified, refused or unknown flow, or one that does not
// parse, gets Drop. A refused flow is remembered for Limits.Idle; its later packets get
// Drop.
//
// What this package cannot see, and the wiring must cover: the server's side before the
// release. A segment the server drops for a reason visible only there (an acknowledgement
// number other than its ISN+1 on the very first segment, a receive window under 16 KiB)
// could be replaced later. conntrack validates both (tcp_be_liberal=0): the ruleset must
// drop ct state invalid before the queue.
//
// # Limits and memory
//
// Limits bounds everything a sandbox can make the verifier hold, whatever it sends:
// HelloBytes per flow (default sni.MaxHelloBytes, which already counts record headers:
// sni.ServerName reads no more), Segments held per flow (32), Hold time (5 s, then
// ErrTimeout from Sweep), unverified flows per sandbox address (512) and overall (1<<16),
// held packets per sandbox address (256: each stays in the kernel's queue, which all
// sandboxes share and which drops what does not fit, so one sandbox must not fill it),
// bytes per sandbox address (1 MiB; a flow is charged the larger of its furthest byte and
// the payload of its held packets, so both the verifier's buffer and the kernel's queued
// packets are bounded). Verified and refused entries are at most Limits.Flows more, with
// at most 64 MiB of remembered ClientHellos; past these the oldest are forgotten (refused
// ones first, released ones last). An unverified flow that sent nothing is forgotten after
// Idle (30 s); its data then is ErrUnknownFlow, as after a restart of egressd (fail
// closed).
//
// # Tests
//
// Package fastpathtest builds IPv4/TCP packets, right or wrong on purpose
// (fastpathtest.Segment{...}.Bytes()), for these tests and the evasion suite.
package fastpath
