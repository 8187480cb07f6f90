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
//	raw_pre  (prerouting, raw -300) → raw_<name>:
//	    meta nfproto != ipv4 drop        IPv6 from a sandbox goes nowhere (DESIGN §4)
//	    ip saddr != Addr drop             anti-spoofing: the sandbox's own address only
//	    iifname "<prefix>*" drop          (base chain) an interface of no known sandbox
//	nat_pre  (prerouting, dstnat -100) → nat_<name>:
//	    udp/tcp dport 53 dnat to Gateway:DNSPort   every DNS query goes to the DNS filter,
//	                                      whatever its destination (DESIGN §2.2), first
//	    ip daddr @hard_deny return        never redirected: dropped below
//	    tcp dport 80, 443 dnat to Gateway:ProxyPort  web goes to the transparent proxy,
//	                                      allowed_cidrs destinations included: the proxy
//	                                      judges the names seen on them (TLS server name,
//	                                      Host) and dials the address; other ports to
//	                                      allowed_cidrs are routed as they are (forward)
//	input    (filter 0), for what is addressed to the gateway itself:
//	    from a sandbox: accept established/related, ProxyPort (tcp) and DNSPort (udp, tcp);
//	    drop everything else (API, explicit proxy, SSH, ICMP: a sandbox sees none of it);
//	    from any other interface: drop ProxyPort and DNSPort (the listeners bind wildcard)
//	forward  (filter 0) → fwd_<name>:
//	    ip daddr @hard_deny drop          hard deny first, whatever Allowed or TCP says
//	    ip saddr Addr ip daddr @allow_<name> accept
//	    ct state established,related ct mark & MarkTCP == MarkTCP accept
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
// Towards a sandbox, forward accepts only ct state established,related (replies to what
// it was allowed to open) and drops the rest. Base chains have policy accept so that the
// host's other traffic is not this package's business; every packet from or to a sandbox
// interface is decided by a rule.
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
//   - allowed_cidrs before the mark: a flow to such a range is checked per packet, so
//     tightening cuts it without FlushTCP (it never carries the mark: the SYN is
//     accepted by the allow rule before the tcp set rule could mark it).
//   - the established-and-marked rule before the set: it is the common packet, and it
//     must pass whether or not the element is still there.
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
// # What the gateway host needs
//
//   - net.ipv4.ip_forward=1 in the gateway's network namespace (sandbox traffic to
//     allowed_cidrs and allowed_tcp endpoints is routed).
//   - net.netfilter.nf_conntrack_acct=1 there too, for the byte counts of flow records
//     (package flowlog; without it the counts are 0), and nf_conntrack_tcp_loose=1 (the
//     default) for the reset of a cut connection. route_localnet is not needed: DNAT goes to Gateway, an
//     address of the host interface, never to 127.0.0.1.
//   - The host side of each veth holds Gateway (the DNAT target must be a local address).
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
