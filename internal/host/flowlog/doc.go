// Package flowlog reads what the kernel says about sandbox traffic on the transparent
// gateway and turns it into typed records (DESIGN §2.6, §4):
//
//   - Flow: one per connection admitted by an allowed_tcp set (ct mark
//     firewall.MarkTCP) or verified by the fast path (firewall.MarkFast), with its bytes,
//     from conntrack's DESTROY event (and, if asked, an open record from its NEW event:
//     a fast-path flow is marked after its NEW event, so it has none). Optionally also
//     every other forwarded flow from the sandbox range (allowed_cidrs).
//   - Attempt: the first packet of a flow the firewall denied (or, for a monitor sandbox,
//     would have denied), from the firewall's rate-limited log rule, read over NFLOG.
//
// # Use
//
//	r := &flowlog.Reader{NetNSFd: fd}                  // zero value: this namespace, defaults
//	err := r.Run(ctx, func(f flowlog.Flow) {...}, func(a flowlog.Attempt) {...})
//
// Run returns when ctx ends (nil) or when a socket fails (a wrapped error); a nil
// callback turns its source off (no NFLOG group is bound without an Attempt callback).
// Callbacks are called from one goroutine, in the order the kernel reported.
//
// # Never blocking the kernel
//
// Each source has one goroutine that only reads its socket and parses, into a bounded
// queue (Reader.Queue); a consumer slower than the kernel loses records, counted in
// Stats, rather than making the socket reader wait. When the socket itself overflows
// (the kernel could not deliver, ENOBUFS) the loss is counted too and reading goes on.
//
// # Conntrack
//
// The reader joins the conntrack NEW, UPDATE and DESTROY multicast groups of the namespace
// (github.com/ti-mo/conntrack decodes the events). Requirements of the gateway host, in
// the gateway's namespace, beside net.ipv4.ip_forward=1:
//
//   - net.netfilter.nf_conntrack_acct=1: without it conntrack counts no bytes and every
//     Flow has BytesOut = BytesIn = 0.
//   - optionally net.netfilter.nf_conntrack_timestamp=1: Start and End are then the
//     kernel's; without it Start is when the NEW event was read (zero if it was missed)
//     and End when the DESTROY event was.
//   - net.netfilter.nf_conntrack_events left at its default (2: on while someone
//     listens). A connection opened before the reader joined may have no events at all.
//
// A TCP connection's record comes when it ends: when conntrack moves it to TIME_WAIT
// (after both FINs) or CLOSE (after a reset), the reader asks conntrack for the entry's
// counters (update events carry none) and reports it then, rather than when conntrack
// forgets the entry (TIME_WAIT lasts nf_conntrack_tcp_timeout_time_wait, 120 s by
// default, and the kernel's GC may reap it a minute after that); its DESTROY event is
// then left out. A flow whose update was missed, or that never ends that way (UDP, a
// timeout, a cut by firewall.FlushTCP), is reported at DESTROY; a cut is at once.
//
// Bytes are those of IP packets (headers included) that conntrack saw: BytesOut from the
// sandbox, BytesIn to it. A flow the gateway cut (firewall.FlushTCP) is reported too, with
// the bytes up to the cut.
//
// # NFLOG
//
// github.com/florianl/go-nflog is not available, so this package speaks nfnetlink_log
// itself, on the netlink socket of github.com/mdlayher/netlink, with the message layout
// of github.com/ti-mo/netfilter (nfgenmsg header, big-endian attributes):
//
//   - one NFULNL_MSG_CONFIG message to group G (res_id = G), family AF_UNSPEC, with
//     NFULA_CFG_CMD = BIND, NFULA_CFG_MODE = {copy_range 128, COPY_PACKET} (an IPv4
//     header with options and the first bytes of TCP, UDP or ICMP fit), and
//     NFULA_CFG_QTHRESH = 1 (each packet is sent at once instead of being batched for
//     up to a second). The kernel applies the command first and the parameters after,
//     so the instance never exists with the defaults (copy everything, batch).
//     A group that another socket holds answers EBUSY: Run fails.
//   - no PF_BIND/PF_UNBIND for AF_INET: a log statement that names a group selects
//     nfnetlink_log by type, whatever logger the family has; PF_BIND would make
//     nfnetlink_log the namespace's default logger for AF_INET (used by loggers that
//     name none, such as nf_conntrack_log_invalid) and PF_UNBIND would remove another
//     program's: side effects this reader does not need.
//   - then NFULNL_MSG_PACKET messages: NFULA_PREFIX (the rule's prefix, "deny" or
//     "monitor"), NFULA_PAYLOAD (the packet from its IPv4 header) and, when the packet
//     has one, NFULA_TIMESTAMP. Closing the socket releases the group (the kernel
//     destroys the instance of a closed socket).
//
// Each logged packet is the first packet of a flow the kernel never confirmed, so a
// denied connection's retransmitted SYNs and a UDP client's resends are logged each; the
// reader reports one Attempt per (source, destination, ports, protocol) within
// Reader.Repeat (10 s) and counts the rest (Stats.Repeats). A new connection has a new
// source port: it is a new attempt.
//
// The parser (ParsePacket) takes untrusted bytes (the packet was built by the sandbox)
// and is fuzzed: it reads no field it has not checked the length of, and a packet
// it cannot read is counted (Stats.Malformed), never fatal.
package flowlog
