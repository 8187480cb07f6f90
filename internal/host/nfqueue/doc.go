// Package nfqueue is a small NFQUEUE client (nfnetlink_queue) for the gateway's kernel fast
// path (DESIGN §4, issue 16): the forward chain sends the packets of not-yet-verified TLS
// flows to a queue, egressd reads each one and answers a verdict, optionally changing the
// flow's conntrack mark in the same message.
//
// # Use
//
//	q, err := nfqueue.Open(num, nfqueue.Config{NetNSFd: fd}) // binds queue num
//	defer q.Close()
//	go q.Run(ctx, func(p nfqueue.Packet) { ... q.SetVerdict(p.ID, nfqueue.Accept, nil) })
//	q.SetVerdict(id, nfqueue.Repeat, &nfqueue.Mark{Value: verified, Mask: verified})
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
// The queue asks for conntrack (NFQA_CFG_F_CONNTRACK): HasCt, CtMark and CtInfo come from
// the flow's entry. A verdict's Mark is applied by ctnetlink before the packet is
// reinjected, so a Repeat verdict that sets a mark is seen by the same chain's `ct mark`
// rules at once: this is how a verified flow leaves the queue for good.
//
// # Kernel requirements
//
//   - CONFIG_NETFILTER_NETLINK_QUEUE, and the queue rule: CONFIG_NFT_QUEUE for nft's
//     `queue` statement, or CONFIG_NFT_COMPAT with CONFIG_NETFILTER_XT_TARGET_NFQUEUE for
//     the xt NFQUEUE target inside an nft rule (the test kernel has only the latter).
//   - CONFIG_NETFILTER_NETLINK_GLUE_CT (with CONFIG_NF_CT_NETLINK) for conntrack in both
//     directions. Without it the kernel silently leaves out NFQA_CT (HasCt is false on
//     every packet) and silently ignores a verdict's Mark. Recent kernels refuse the
//     F_CONNTRACK flag then, and Open returns ErrNoConntrack; Config.WithoutConntrack binds
//     without it (SetVerdict then refuses a Mark rather than drop it silently). On such a
//     kernel a confirmed flow (one past its handshake) can still be marked by a ctnetlink
//     update (github.com/ti-mo/conntrack Conn.Update) sent before a Repeat verdict;
//     TestMarkByConntrackThenRepeat shows it. The mark tests fail (CI) or skip without it.
//   - CAP_NET_ADMIN in the queue's namespace.
//
// # Cost
//
// One recvfrom per queued packet into a reused buffer and one write per verdict from a
// pooled buffer; the only allocation per packet is the copy of its payload.
package nfqueue
