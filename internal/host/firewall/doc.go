// Package firewall is the nftables side of the transparent gateway (DESIGN §4): the rules
// that make a sandbox's network namespace reach only what its policy allows, whatever
// runs inside it, root included.
//
// # Use
//
//	fw := firewall.New()                          // the gateway's network namespace
//	err := fw.Apply(desired)                       // after every change of sandboxes or allowed_cidrs
//	n, err := fw.FlushConntrack(addr, newAllowed) // when a sandbox's Allowed shrank
//	err := fw.Admit(name, endpoints)              // a DNS answer for an allowed_tcp name
//	err := fw.Revoke(name, endpoints)             // an allowed_tcp entry removed
//	n, err := fw.FlushTCP(addr, keep)             // ... and its connections cut
//	err := fw.AdmitFast(name, endpoints)          // a DNS answer for a name the fast path may verify
//	err := fw.RevokeFast(name, endpoints)         // no longer (tightening)
//	n, err := fw.CutFast(addr, keep)              // ... and its verified fast flows cut
//	fmt.Print(firewall.Render(desired))            // what Apply installs, for humans and golden files
//
// Package firewalltest has a fake of these calls that keeps the table as Render prints
// it, for tests of callers that run without root.
//
// Apply takes the whole desired state (Desired) and makes the kernel hold exactly that:
// it builds the complete table and replaces the old one in one netlink batch (add table,
// delete table, add table with every chain, set, element and rule). The kernel commits a
// batch whole or not at all, so no packet ever sees half a ruleset, a failed Apply leaves
// the previous table in force, and Apply is idempotent and goes from any state to any
// other. Nothing is remembered between calls: a restarted egressd rebuilds Desired from
// its store, applies it, and the table is exactly as if it had never stopped. Manual edits
// to the table are undone by the next Apply. No other table is ever read or written.
//
// # Fails closed
//
// The table is an ordinary one (no owner flag): it stays in the kernel when egressd exits
// or crashes. Sandboxes then keep their restrictions, and the redirected traffic (DNS,
// web) finds no listener, so nothing gets out until egressd is back. Remove deletes the
// table; it is for an operator's uninstall only, never for a stop. With IfacePrefix set,
// a sandbox interface that exists before the Apply that names it (the netns package made
// the veth, the Apply has not run yet) is dropped too.
//
// # The table (inet egressd)
//
// Sets:
//
//	hard_deny        ipv4_addr, interval: Desired.HardDeny plus a floor no caller removes:
//	                 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16 (cloud metadata),
//	                 224.0.0.0/4, 255.255.255.255, SandboxCIDR, every Gateway
//	sandbox_ifaces   ifname: every sandbox's HostIface
//	allow_<name>     ipv4_addr, interval: one sandbox's Allowed, merged (possibly empty)
//	tcp_<name>       ipv4_addr . inet_service, timeout: one sandbox's allowed_tcp
//	                 endpoints (Sandbox.TCP, Admit), each with its own timeout
//	fast_<name>      ipv4_addr . inet_service, timeout: with FastPath, the (address, 443)
//	                 pairs of the fast path (Sandbox.Fast, AdmitFast); none for a Monitor sandbox
//	raw_dispatch, nat_dispatch, fwd_dispatch
//	                 ifname : verdict maps, HostIface → goto <hook>_<name>
//
// A packet from a sandbox interface meets one map lookup per hook (O(1) in the number of
// sandboxes, unlike a rule per sandbox) and continues in that sandbox's chain. The maps use
// goto, not jump: a sandbox's chain is the last word for its packets in that hook, and
// whatever it does not drop takes the base chain's policy (accept) without falling back
// into the base chain's later rules, which are for other interfaces.
//
// The path of a packet from a sandbox, in hook order:
//
//	frag_pre (prerouting, -450), with FastPath only:
//	    iifname @sandbox_ifaces ip frag-off & 0x3fff != 0 ip protocol tcp drop
//	raw_pre  (prerouting, raw -300) → raw_<name>:
//	    meta nfproto != ipv4 drop        IPv6 from a sandbox goes nowhere (DESIGN §4)
//	    ip saddr != Addr drop             anti-spoofing: the sandbox's own address only
//	    iifname "<prefix>*" drop          (base chain) an interface of no known sandbox
//	nat_pre  (prerouting, dstnat -100) → nat_<name>:
//	    udp/tcp dport 53 dnat to Gateway:DNSPort   every DNS query goes to the DNS filter,
//	                                      whatever its destination (DESIGN §2.2), first
//	    ip daddr @hard_deny return        never redirected: dropped below
//	    ip daddr . tcp dport @fast_<name> return     (FastPath) routed: the fast path
//	    tcp dport 80, 443 dnat to Gateway:ProxyPort  web goes to the transparent proxy,
//	                                      allowed_cidrs destinations included: the proxy
//	                                      judges the names seen on them (TLS server name,
//	                                      Host) and dials the address; other ports to
//	                                      allowed_cidrs are routed as they are (forward)
//	input    (filter 0), for what is addressed to the gateway itself:
//	    from a sandbox: accept established (not related: an ICMP error is related to the
//	    connection it quotes, whoever sends it, so one sandbox could aim ICMP errors at
//	    another's proxied connections), ProxyPort (tcp) and DNSPort (udp, tcp);
//	    drop everything else (API, explicit proxy, SSH, ICMP: a sandbox sees none of it);
//	    from any other interface: drop ProxyPort and DNSPort (the listeners bind wildcard)
//	forward  (filter 0) → fwd_<name>:
//	    ip daddr @hard_deny ct state new limit rate 20/second burst 50 packets log prefix "deny" group G
//	    ip daddr @hard_deny drop          hard deny first, whatever Allowed or TCP says
//	    (FastPath, not Monitor: the six tcp dport 443 rules of "The fast path")
//	    ip saddr Addr ip daddr @allow_<name> accept
//	    ct state established ct mark & MarkTCP == MarkTCP tcp flags != syn / fin,syn,rst,ack accept
//	    ip saddr Addr tcp flags syn / fin,syn,rst,ack ip daddr . tcp dport @tcp_<name>
//	        ct mark set ct mark | MarkTCP accept
//	    ct state new tcp flags ! syn reject with tcp reset      (enforce only)
//	    ct state new limit rate 20/second burst 50 packets log prefix "deny" group G
//	    drop                              everything else
//	  and for a Monitor sandbox the last two are
//	    ct state new limit rate 20/second burst 50 packets log prefix "monitor" group G
//	    accept
//	nat_post (postrouting, srcnat 100):
//	    ip saddr SandboxCIDR oifname != @sandbox_ifaces masquerade
//
// Towards a sandbox, forward accepts only ct state established,related (replies to what it
// was allowed to open) and drops the rest; with FastPath, a server's packets of a released
// fast flow (MarkFastWait) go to the fast queue first ("The fast path"). Base chains have
// policy accept so that the host's other traffic is not this package's business; every
// packet from or to a sandbox interface is decided by a rule.
//
// # allowed_tcp: the tcp_<name> set and the connection mark
//
// The set holds (address, port) pairs that the DNS filter answered for an allowed_tcp
// name (DESIGN §2.6), each with a timeout: the kernel drops an element when it expires.
// Unlike allowed_cidrs, which is checked on every packet, the set is checked on a
// connection's SYN only, and the flow gets the conntrack mark bit MarkTCP; from then on
// its packets pass by the mark (the established rule), so a connection outlives its
// element, its DNS answer and any Apply (conntrack is not part of the table). Cutting
// such a connection is explicit: Revoke (or an Apply without the endpoint) stops new
// ones, FlushTCP deletes the conntrack entries. The sandbox's next packet is then a new
// flow without SYN, which the reset rule answers with a TCP reset, so the sandbox learns
// at once (this needs net.netfilter.nf_conntrack_tcp_loose=1, the default: with it off
// the packet is invalid and dropped, the cut is silent). The reset rule comes before the
// log rule, so a cut connection's packets are not recorded as attempts.
//
// The order of fwd_<name>, and why:
//   - hard deny first: nothing a policy admits reaches the gateway, metadata, loopback.
//     Its first packet is logged with the prefix "deny" in monitor sandboxes too (the
//     kernel drops it there as well), with a limit of its own: a sandbox's log rate is
//     at most twice the figure below.
//   - allowed_cidrs before the mark: a flow to such a range is checked per packet, so
//     tightening cuts it without FlushTCP (it never carries the mark: the SYN is
//     accepted by the allow rule before the tcp set rule could mark it).
//   - the established-and-marked rule before the set: it is the common packet, and it
//     must pass whether or not the element is still there. Established only, not
//     related: conntrack relates an ICMP error to the connection its quoted packet
//     belongs to, whoever sends it, so with related a sandbox could send ICMP errors
//     (and the bytes they carry) to the destination of another sandbox's allowed_tcp
//     connection, passing by that connection's mark. A sandbox's own ICMP errors about
//     its allowed_tcp connections are dropped with them (it has no need to send any).
//     Nor a SYN: after the server resets a connection, conntrack keeps its entry (state
//     CLOSE) for a while and takes a SYN of the same four-tuple as part of it, so a
//     connection reopened from the same port would pass by the old mark after the
//     element expired. Every SYN meets the set.
//   - SYN only (no ACK, FIN, RST) for the set: a stray mid-stream packet to an admitted
//     endpoint does not open a flow the set then marks.
//   - the reset of new non-SYN TCP before the log: see above.
//   - the log of "ct state new" only: the first packet of a denied flow, not each one.
//     The limit is per sandbox (a limit expression is per rule, and each sandbox has its
//     own chain): a flooding sandbox neither floods the log reader nor starves another
//     sandbox's records. A dropped packet's conntrack entry is never confirmed, so the
//     retransmitted SYN of the same denied connection is logged again (within the limit).
//
// MarkTCP (0x01000000) is one bit, always masked: the rule sets it with
// ct mark | MarkTCP and tests ct mark & MarkTCP, so whatever else uses other bits of the
// ct mark is left alone (see MarkTCP for the marks in common use it avoids).
// FlushConntrack (allowed_cidrs) leaves marked flows alone, FlushTCP takes marked flows
// only.
//
// Admit and Revoke change the set of the table in force in one batch each, without
// rebuilding the table (Apply rebuilds it). Apply installs Sandbox.TCP with the
// timeouts given, so the caller that admitted endpoints passes what is left of them
// (remaining lifetimes) to every Apply. Apply, Admit and Revoke are serialised.
// Render prints the timeouts given; the kernel counts them down (nft list shows
// "expires"), which Render does not.
//
// Monitor (the effective policy is monitor in every layer): what enforce drops in
// forward is accepted and logged with the prefix "monitor"; hard deny still drops, and
// the web and DNS redirections are as in enforce (the proxy and the DNS filter apply
// monitor themselves).
//
// The log rules send the packet to NFLOG group Desired.LogGroup (DefaultLogGroup if 0),
// which package flowlog reads. Nothing listening on the group costs nothing: the kernel
// drops the copies.
//
// Forwarding is checked per packet, not per connection: when Allowed shrinks, the next
// packet of an established flow to a removed range is dropped. FlushConntrack then deletes
// the stale entries (connections that were DNATed to the gateway's listeners are left to
// the proxy and the DNS filter, which enforce policy on those themselves).
//
// # The fast path (Desired.FastPath)
//
// With the fast path on, TCP 443 from a sandbox to an (address, 443) of its fast_<name>
// set is not DNATed to the transparent proxy: the kernel routes it (DESIGN §4 "Kernel
// fast path", issue 16). Its packets from the sandbox go to NFQUEUE Desired.FastQueue
// (DefaultFastQueue if 0) until egressd has read the whole ClientHello from the packets
// themselves. If egressd refuses it, it sets the conntrack mark MarkFastDeny and the
// kernel resets the flow. If it allows it, it sets MarkFastWait and lets the held packets
// go; the flow's packets, both ways, still go to the queue, until the server acknowledges
// the ClientHello's last byte; then egressd sets MarkFast (clearing MarkFastWait) and the
// kernel forwards the rest by the mark (see "Why wait for the server" below). The
// set is filled like tcp_<name>: AdmitFast on the DNS answer path, Sandbox.Fast (the
// remaining lifetimes) in every Apply, RevokeFast when a name no longer qualifies.
//
// The NAT decision is taken on a flow's first packet only: a flow whose SYN met the set
// is routed for its whole life (however long its element lives), one that did not is
// the proxy's for its whole life. The rule sits right after the hard-deny return and
// before the web DNAT, so a hard-denied address is never routed by it.
//
// fwd_<name>, after the two hard-deny rules and before allowed_cidrs, has six rules
// for tcp dport 443, in this order:
//
//	ct mark & MarkFastDeny == MarkFastDeny reject with tcp reset           refused
//	ct state established ct mark & MarkFast == MarkFast tcp flags != syn / fin,syn,rst,ack accept
//	ct state new tcp flags != syn / fin,syn,rst,ack reject with tcp reset  a cut flow's next packet
//	ct state invalid drop
//	tcp flags syn / fin,syn,rst,ack ct mark set ct mark & ~(MarkFast|MarkFastWait)   (no verdict)
//	queue num Q                                                            held
//
// Every TCP 443 packet from a sandbox that reaches forward was routed by the nat rule:
// all other 443 is DNATed to the proxy (its packets go to input, never forward) or
// hard-denied (dropped by the rules before). So tcp dport 443 here is exactly the fast
// flows, and neither the source nor the set needs a second look: raw_<name> already
// dropped every source but Addr, before conntrack; a set lookup here would cut a
// verified flow when its element expires (a connection outlives its DNS answer, as
// with allowed_tcp), and the element was checked where it decides, on the flow's first
// packet. egressd checks the destination against its own book of answers when it
// verifies. The exception is a packet conntrack refused (ct state invalid: a bad TCP
// checksum, a segment out of the window): it has no entry, so it skipped nat and came
// here whatever its address; the invalid rule drops it, so the reader never sees a
// segment the kernel itself would not take (the checksum trick of issue 16).
//
// With the fast path on, the forward base chain has one more rule, right after the
// dispatch and before the rule accepting replies:
//
//	oifname @sandbox_ifaces tcp sport 443 ct mark & MarkFastWait == MarkFastWait queue num Q
//
// the server's packets of a released flow, to the same queue. At forward, a reply's
// destination is the sandbox again (the masquerade is undone in prerouting), so egressd
// sees the flow's tuple reversed.
//
// Why wait for the server. Between the verdict and the held packet's arrival at the
// server, the sandbox can send more segments at the ClientHello's offsets with other bytes
// (retransmissions racing the verdict); if the kernel forwarded the flow from the verdict
// on, one of them could reach the server first (packets released on different CPUs may
// overtake each other), and the server's TCP keeps the first bytes it receives at an
// offset. So the verdict only releases the held packets (NF_ACCEPT) and marks the flow
// MarkFastWait: its client packets carry no MarkFast, so they still go to the queue, and
// egressd resets the flow if one disagrees with the judged bytes; its server packets go
// to the queue by the rule above. Once a server packet acknowledges the ClientHello's last
// byte, those bytes are in the server's receive buffer and any other bytes at their
// offsets are duplicates it drops: only then does egressd set MarkFast (and accept that
// packet), and the kernel forwards both ways. A released flow the server never confirms
// is forgotten by egressd after its hold time; its next client packet is then an unknown
// flow's (reset), its server's dropped: it fails closed.
//
// Why this order:
//   - refused first: every packet of a refused flow gets a reset, whatever else holds.
//   - verified next: the common packet, at kernel speed. Established only, never a SYN,
//     for the reasons of the allowed_tcp rule (see above): an ICMP error related to the
//     flow is not the sandbox's to send, and a SYN reopening the four-tuple of a closed
//     flow would otherwise pass by the old mark; every SYN goes to the queue.
//   - a new flow without SYN is a packet of a flow conntrack forgot (or whose entry was
//     deleted): reset, so the sandbox learns at once, as for allowed_tcp.
//   - invalid: see above.
//   - a SYN clears MarkFast and MarkFastWait before it is queued: after the server resets
//     a flow (no FIN seen, the reset not the client's), conntrack keeps the entry (state
//     CLOSE) and takes a SYN of the same four-tuple into it, mark and "seen reply" status
//     included, so the new connection's data would be established and marked, and pass the
//     verified rule with a ClientHello egressd never read (e2e/fastpath_adv_test.go).
//     MarkFastDeny stays (the refused rule already answered such a SYN).
//   - queue last: the SYN, the handshake's ACK and every segment until the verdict.
//     Without bypass and without fanout: with no reader (egressd down or not yet bound)
//     the kernel drops the packet, so a new flow fails closed, as today's proxy path.
//   - all six before allowed_cidrs: an address in both must still be verified (the
//     allow rule would accept its packets unverified).
//
// The marks are the three bits above MarkTCP (0x02000000, 0x04000000, 0x08000000), clear
// of the marks in common use for the same reasons (see MarkTCP), each read alone.
// MarkFastDeny is a bit of its own, not the absence of MarkFast, so that a refused flow
// (released or verified, whatever its other bits) is reset by the kernel on every packet
// without going back to the queue. MarkMask is the four bits:
// FlushConntrack leaves any flow carrying one alone, and every routed TCP 443 flow too
// (one egressd still holds has no mark yet).
//
// How egressd sets the mark. The NFQUEUE verdict can carry the conntrack mark (NFQA_CT)
// only on kernels with CONFIG_NETFILTER_NETLINK_GLUE_CT, which the lab machines lack. The
// way that works on both: set the mark on the flow's entry with ctnetlink (an update by
// the original tuple; the entry is confirmed once the handshake passed; FastMarker), then
// give the packet its verdict: a refused flow's NF_REPEAT, so that it meets the forward
// chain again and is reset by MarkFastDeny; a released flow's held packets, and the
// server's packet that confirms it, NF_ACCEPT, which forwards the packet without that
// second look. NF_DROP loses a packet (the sender's retransmission then meets the rules).
// The tests do exactly this (fastqueue_test.go, fastwait_test.go).
//
// The queue rule is installed as the xtables NFQUEUE target (revision 3, through
// nft_compat), not as nft's own queue statement: the lab machines' kernels have no
// nft_queue (CONFIG_NFT_QUEUE). It queues the same way. Render prints it as nft's
// "queue num Q", which `nft -f` loads as nft_queue where the kernel has it. `nft list`
// cannot print the target in an inet table: it shows "tcp dport 443", libxtables' "XT
// target NFQUEUE not found" and the comment, and warns that the table is "managed by
// iptables-nft" (it is not); `nft -j list` shows {"xt": {"type": "target", "name":
// "NFQUEUE"}}.
//
// frag_pre, a base chain at priority -450 (before conntrack's defragmentation at -400,
// so fragments are seen as such), drops TCP in IP fragments from a sandbox: fragments
// would let a ClientHello be cut where no segment boundary is, and overlapping
// fragments are reassembled differently by different stacks. No TCP from a sandbox needs
// them (Linux sets DF and sizes segments by the path MTU). It is every TCP fragment,
// not only 443's: a fragment after the first has no port. ip protocol, not meta
// l4proto, for that reason. Other fragments (ICMP, UDP) pass. ("frag" alone is an nft
// keyword: `nft -f` refuses a chain of that name.)
//
// Cutting: RevokeFast stops new flows to an address; CutFast marks the verified and
// released flows that keep rejects refused (MarkFastDeny; FastMarker.Confirm leaves it
// set, so a flow cut while it waited stays refused), so that the first rule answers the
// sandbox's next packet of each with a reset, whatever the nat chain would now do with a
// new flow (deleting the entry instead made the next packet a new flow, DNATed to the
// proxy once the address left the set, and in the lab such a cut download stalled rather
// than reset). The server's packets still reach the sandbox until then; its answer is
// reset. An idle flow has no next packet, so CutFast makes the sandbox send one: after
// marking a flow it sends the sandbox, from the gateway's namespace (a raw socket), a
// segment with the server's address and port, FIN and ACK set and a sequence number
// outside the sandbox's window (two of them, 2^31 apart: one is out of window for
// certain). The sandbox's TCP answers it with an ACK (RFC 793), which meets the first rule
// and is answered with a reset carrying the sequence number the sandbox expects: the
// connection is reset at once. FIN, not a bare ACK: conntrack would take a bare ACK for a
// new flow from the server (picked up mid-stream) whose reply tuple clashes with the cut
// flow, and NAT's null binding would change its source port; a FIN starts no flow, so
// conntrack lets it pass untracked. See probe.go. A Monitor sandbox has no fast set and
// none of these rules: its HTTPS goes to the proxy, which applies monitor. If egressd
// dies, verified flows go on (their mark is in conntrack), held and new ones are dropped
// by the queue rule: nothing new is verified.
//
// # What the gateway host needs
//
//   - net.ipv4.ip_forward=1 in the gateway's network namespace (sandbox traffic to
//     allowed_cidrs and allowed_tcp endpoints is routed).
//   - net.netfilter.nf_conntrack_acct=1 there too, for the byte counts of flow records
//     (package flowlog; without it the counts are 0), and nf_conntrack_tcp_loose=1 (the
//     default) for the reset of a cut connection. route_localnet is not needed: DNAT goes
//     to Gateway, an address of the host interface, never to 127.0.0.1.
//   - The host side of each veth holds Gateway (the DNAT target must be a local address).
//   - For the fast path: nfnetlink_queue, nft_compat with the xtables NFQUEUE target,
//     and ctnetlink (the mark is set through it); nf_conntrack_tcp_be_liberal=0 (the
//     default; egressd refuses to start the fast path otherwise: the queue relies on
//     "ct state invalid" being dropped before it); a raw IPv4 socket for CutFast's probes.
//   - The transparent proxy reads SO_ORIGINAL_DST; a sandbox can also connect to
//     Gateway:ProxyPort directly, so the proxy must refuse a connection whose original
//     destination is one of the gateway's own addresses.
//   - A drop in any table is final. A host whose other rules drop forwarded traffic (for
//     example Docker's iptables FORWARD policy DROP) drops the allowed traffic too.
//
// # Size
//
// A batch is one sendmsg and the kernel answers each of its messages before anything is
// read, so the netlink socket buffers are sized from the batch (SO_SNDBUFFORCE,
// SO_RCVBUFFORCE; CAP_NET_ADMIN): with the defaults only some 45 sandboxes fit. Set
// elements go in chunks, because one netlink attribute holds at most 64 KiB and
// github.com/google/nftables v0.3.0 cuts a longer element list short without an error.
// An Apply costs O(sandboxes): about 0.1 s for 200 sandboxes, 1 s for 1,000.
package firewall
