// Package nfqueue is a small NFQUEUE client (nfnetlink_queue) for the gateway's kernel fast
// path (DESIGN §4, issue 16): the forward chain sends the packets of not-yet-verified TLS
// flows to a queue, egressd reads each one and answers a verdict.
//
// # Use
//
//	q, err := nfqueue.Open(num, nfqueue.Config{NetNSFd: fd}) // binds queue num
//	defer q.Close()
//	go q.Run(ctx, func(p nfqueue.Packet) { ... q.SetVerdict(p.ID, nfqueue.Accept) })
//	marker.Mark(src, dst, true)           // ctnetlink: the flow's ct mark (firewall.FastMarker)
//	q.SetVerdict(id, nfqueue.Repeat)      // the same chain again: its `ct mark` rules decide
//
// Run calls its function on its own goroutine, in the kernel's order; verdicts may be sent
// from any goroutine, at any time, in any order. Every packet must get exactly one verdict:
// the kernel holds it (and counts it against Config.MaxLen) until then.
//
// # Failing closed
//
// The rule is `queue num N` without bypass (nft) or `-j NFQUEUE --queue-num N` without
// --queue-bypass (xt), and the queue is bound without NFQA_CFG_F_FAIL_OPEN. So: with no
// reader bound, the kernel drops the packets; with a full queue (MaxLen) or a full socket
// buffer, it drops them too, counted in Stats (QueueDropped, UserDropped). Closing the
// queue drops what it still holds. A packet message Run cannot parse is dropped.
//
// # What a packet carries
//
// The queue copies whole packets (copy range 0xffff) and is bound without
// NFQA_CFG_F_GSO: the kernel then segments GSO packets before queueing them and completes
// partial checksums (CHECKSUM_PARTIAL), so Payload is one IPv4 packet as it will leave,
// and every TCP and UDP checksum in it is final and can be verified. A packet longer than
// the copy range (only a 65,535-byte datagram could be) is dropped, never handed over cut.
// The client does not look inside: Payload is whatever the rule queued, so the rule belongs
// in an ip (IPv4) table, and the caller still checks the version and lengths it relies on.
//
// # No conntrack in the queue
//
// A packet carries no conntrack entry (no NFQA_CT, NFQA_CT_INFO) and a verdict carries no
// ct mark: the queue is bound without NFQA_CFG_F_CONNTRACK. Both directions need the
// kernel's conntrack glue for queues (CONFIG_NETFILTER_NETLINK_GLUE_CT), which common
// kernels, the CI's and the lab machines' among them, are built without: they refuse the
// flag (EOPNOTSUPP); older kernels took it, then left the conntrack out and ignored a
// verdict's mark, silently. So the one way that works on every kernel is the only one
// here. To put a verdict on a flow, the caller first sets the flow's ct mark through
// ctnetlink (an update of the entry by its original tuple: firewall.FastMarker, or
// github.com/ti-mo/conntrack Conn.Update), then answers the held packet. Repeat: it
// traverses the same hook again from its first rule, where the chain's `ct mark` rules
// pass or reject it (egressd's refused flows: the rule resets them). Accept: it goes on
// without that second look (egressd's released and confirmed flows, see package fastpath).
// Either way the flow's later packets meet the rules by the new mark: whether they come
// back to the queue is the ruleset's choice (egressd's queues a released flow's packets
// until its server confirms it). The entry must be confirmed (the flow's first packet went
// through): a flow whose first packet is still held has none to update, so the caller
// accepts (or drops) that one. TestMarkByConntrackThenRepeat shows both marks. A caller
// that wants a flow's state reads conntrack itself; the payload's addresses and ports name
// the flow.
//
// # Kernel requirements
//
//   - CONFIG_NETFILTER_NETLINK_QUEUE, and the queue rule: CONFIG_NFT_QUEUE for nft's
//     `queue` statement, or CONFIG_NFT_COMPAT with CONFIG_NETFILTER_XT_TARGET_NFQUEUE for
//     the xt NFQUEUE target inside an nft rule (the test kernel has only the latter).
//   - For marking flows as above: CONFIG_NF_CONNTRACK_MARK (the `ct mark` rules and the
//     entry's mark) and CONFIG_NF_CT_NETLINK (ctnetlink, to update it).
//     CONFIG_NETFILTER_NETLINK_GLUE_CT is not needed, nor used when present.
//   - CAP_NET_ADMIN in the queue's namespace.
//
// # Cost
//
// One read per queued packet into a reused buffer and one write per verdict from a
// pooled buffer; the only allocation per packet is the copy of its payload.
package nfqueue
