// Package gateway runs the transparent gateway (DESIGN §4, §5): on one gateway node, it makes
// and removes the sandbox networks of the VMs that belong to that node, and keeps the
// firewall in line with their effective policies.
//
// It is the glue between four parts that know nothing of each other: the store (which VMs
// exist, on which node, in which state), the view (the store as the data path sees it, with
// each VM's effective policy), package netns (namespaces and veth pairs) and package
// firewall (one nftables table). Each part is behind a small interface (Store, View,
// Namespaces, Firewall), so that the logic here is tested without root, against the real
// SQLite store and the fakes of packages netnstest and firewalltest.
//
// # Ownership
//
// Every VM with a "netns" network belongs to one node (store.Network.Node), chosen by the
// API when the VM is created. A gateway touches only the VMs whose node is its own
// (Config.NodeID): it never makes, repairs, removes or writes the network of another node's
// VM, and another node's VMs never appear in its firewall. Its addresses come from its own
// sandbox range (Config.SandboxCIDR), which the fleet keeps apart from every other node's.
// A VM stored before networks had nodes (no node, no state) is claimed by the node on whose
// host its namespace is found, or else by the node whose range holds its address (after a
// reboot no host has the namespace): that node writes its ID into the VM and runs it from
// then on. A namespace on this host of another node's VM is left alone: this host ran under
// that node's ID before (see reconcileVMs).
//
// # Reconciling
//
// Nobody calls the gateway to make or remove a network: the API only writes the VM, and the
// gateway reconciles its own VMs with what it runs, in rounds. A round runs at start,
// whenever the view shows one of this node's VMs come, go or change its network, on every
// resync tick, and again after a failure (after a second, then twice as long each time, up
// to the resync interval). It reads every VM from the store and, for each of its own, takes
// one step according to the network's state:
//
//   - creating: nothing. The API is still storing the VM's policy.
//   - pending: make it. The gateway takes the lowest free /30 of its range, puts the
//     attachment in the firewall first (denying everything: the veth never exists without
//     rules that name it), creates the namespace, then writes the VM's address and the state
//     ready, if the VM is still pending (if it was deleted meanwhile, what was made goes
//     again). If the network cannot be made, what was made goes and the state becomes failed,
//     with the reason in the VM's error. A VM whose namespace name (a 40-bit hash of tenant
//     and vm_id) is another VM's of this node fails at once: making it would take over the
//     other's namespace, whoever's tenant that is.
//   - ready (or no state, stored before states): run it. Its rules are in the firewall, with
//     its effective policy, from the moment the view shows it ready.
//   - failed: nothing; nothing of it is left.
//   - deleting: remove it. The API has deleted its sessions and policies; the gateway takes
//     its rules out of the firewall, removes its namespace, and deletes the VM from the
//     store, which tells the API that the deletion is done.
//
// Then it removes the namespaces of its own (those package netns finds on this host) that
// none of its VMs explains. One VM whose step fails does not stop the others: the failure is
// logged and the step taken again in a later round. Rounds run one at a time, and never
// hold the lock that the firewall's apply takes across a store call or a namespace's
// creation, so that a slow store or a slow kernel never delays a policy change of another
// VM reaching the firewall.
//
// # The firewall
//
// Run follows the view and applies the whole desired firewall state, in one transaction,
// whenever a VM comes, goes or changes its policy, and on every resync tick (repairing a
// table someone changed by hand). The desired state holds this node's VMs whose network is
// live in the view (ready), each with its effective allowed_cidrs, and the attachments being
// made (denying everything). A VM becomes ready in the store only once the firewall that names
// its interface is applied, and its policy reaches the firewall once the view shows it ready.
// WaitApplied and Revision say which store revision the rules in force reflect.
//
// # allowed_tcp: what a sandbox's lookups open
//
// The DNS filter tells the gateway of every answer it gives a sandbox, before the sandbox
// gets it (OpenTCP, tcp.go). For the VM whose network has the query's source address (and
// only if the DNS filter saw the same VM), the gateway judges each IPv4 address a of the
// answer on each port p of Effective.TCPPorts(name) with Decide({name, a, p, tcp}): the
// policy's one decision path, so private addresses outside allowed_cidrs, denied_domains,
// a wildcard's apex and the web ports are never opened. What is allowed goes into the VM's
// tcp_<name> set (firewall.Admit) until now + max(TTL, TCPMinTTL) + TCPGrace (DESIGN §2.6;
// a later, shorter answer never shortens it), under the lock that applies hold, and into
// the VM's book of admissions. Every apply replaces the table whole and carries the book's
// live admissions with their remaining lifetimes, so an apply never loses one; an
// admission that expired is left out (the kernel has removed it already) and its
// connections stay up (ct mark).
//
// On every change of the view, each admission is judged again under the VM's new
// effective policy (Decide, as when it was opened); those no longer allowed are dropped,
// which forces an apply, and then the connections that the VM opened through its set and
// that the new policy does not allow are cut (firewall.FlushTCP), those of pairs whose
// admission expired included: the book remembers, per VM, the pairs once admitted and the
// names looked up for addresses, up to a bound, oldest forgotten first. A connection
// whose admission is forgotten, or that an earlier run of egressd opened, is cut at the
// VM's next policy change: the gateway cannot say that the policy allows it. A restart
// cuts nothing by itself (the first policy a run sees for a VM is taken as the one its
// connections were opened under). A VM that
// goes away takes its book with it and its connections are cut (their conntrack entries,
// marked, would otherwise outlive it, for the next VM at its address to send on); a VM
// made later at its address starts empty, and its first apply cuts every marked
// connection from that address it did not open itself (a conntrack dump per new VM), which
// covers a VM removed while egressd was down. A VM
// whose every layer is monitor is a monitor sandbox in the table (the kernel lets
// everything but the hard denials through, and logs what it would have dropped).
//
// The grain is the address: another name that shares an admitted address and port is
// reachable too, for this VM, while the admission lasts.
//
// # The fast path: what a sandbox's lookups open on 443
//
// With Config.FastPath (--fast-path, DESIGN §4 "Kernel fast path"), OpenTCP also opens the
// answer's addresses for the kernel fast path (openFastLocked, fast.go), under the same
// lock and with the same lifetime as allowed_tcp: each IPv4 address a of the answer goes
// into the VM's fast_<name> set as (a, 443) (firewall.AdmitFast) if Decide({name, a, 443,
// tcp}) allows it without would_deny, Decide({a, 443, tcp, ip literal}) does not (an
// address that allowed_cidrs opens stays with the proxy, which judges the name it sees
// there), the name is not intercepted (Config.Intercepts: http_rules, secrets), and the VM
// is not monitor only. The book remembers, per address, the names whose answers gave it,
// each until its admission ends; the set element lives until the last of them. An answer
// for an intercepted name takes its addresses out of the set (firewall.RevokeFast) and
// keeps them out while it lasts, so that a CDN address shared with a fast name never
// takes the intercepted name's connections from the proxy. Every apply carries the live
// answers whose names the VM's policy still lets through the fast path (fastLocked); one
// no longer allowed is dropped, which forces an apply.
//
// Judge is the verifier's judgement (fastpath.Judge, wired by cmd/egressd): for a flow
// whose whole ClientHello package fastpath read from the packets, the VM is the one whose
// network has the source address (owned by this node, live); the server name, normalised,
// must be allowed on 443 at the destination by the VM's effective policy (Decide), not
// intercepted, and the destination must be an address the DNS filter answered this VM for
// that very name, in an answer still in force (else address_not_resolved). true releases
// the flow (the verifier then waits for the server's acknowledgement of the ClientHello
// before the kernel forwards it: see package fastpath).
//
// Every judgement is recorded as the proxy records a connection: a "connect" record, via
// "fast_path" (ViaFastPath), with the decision's reason and rule; a refusal the verifier
// made (Hello.Err: ambiguous_stream, not_tls, no_host) is recorded too. An allowed flow is
// remembered in the book (key: its four-tuple) with its name and decision. Its "close"
// record, with bytes each way and duration, comes from the flow log when conntrack reports
// it ended (RecordFlow, firewall.MarkFast or MarkFastWait set); a flow allowed and then
// refused (its later packets disagreed with the judged ClientHello) gets its close, reason
// "reset", with the refusal. A flow the book does not know (an earlier run verified it)
// gets a connect record without a name, then its close.
//
// Cuts, as for allowed_tcp: when a VM's effective policy changes, its verified and released
// flows are judged again by the name they were verified with, at their address
// (flushFastLocked, fastDecide), and those no longer allowed, and those the book does not
// know, are cut (firewall.CutFast: the flow's conntrack entry gets MarkFastDeny and keeps
// MarkFast, so the kernel resets the sandbox's next packet, an idle flow is probed into
// sending one, and the close is still recorded as a verified flow's). A VM that goes
// away has all its fast flows cut; a new VM at its address cuts every one it did not
// verify itself. A failed cut is logged and tried again at the next apply.
//
// # Records of the kernel's flows
//
// The flow log (package flowlog, wired by cmd/egressd) reports the connections that
// ended and the first packets that the forward chain logged. RecordFlow makes
// of an allowed_tcp connection what the proxy makes of one it relays: a "connect" record
// (allowed, reason allowed_tcp, the admitting rule, the name as host), stamped with the
// connection's start, and its "close" record with bytes each way and duration. It comes
// when the connection ends (conntrack's TIME_WAIT or CLOSE state; see package flowlog),
// or when a cut or a timeout deletes its entry. RecordAttempt makes a
// "connect" record of each logged packet, at most attemptRate a second over all sandboxes
// (the kernel limits each sandbox too): the VM by its source address, the host the name
// this VM last looked up for the destination when the book remembers one, and the decision
// Decide takes with that name (or the address alone), port and transport. A packet that
// the policy would allow (the name's answer expired) is recorded as a denial, ip_literal,
// whose rule says to look the name up again. In monitor mode the record is allowed with
// would_deny, and closed at once ("untracked": the kernel forwards such flows without
// accounting), so that every allowed connect record has its close.
//
// # Failing closed, restarting
//
// The firewall's rules outlive egressd: if egressd dies, packets from a sandbox still meet
// the same table, whose redirects now lead to closed ports and whose forwarding allows only
// what the last policy allowed, and no sandbox network is made or removed until it is back.
// On start, Run applies the firewall (a gateway whose first apply fails does not start),
// turns on forwarding, and runs a first round before the data path serves: it repairs the
// namespaces of its ready VMs (a reboot loses them all), makes its pending ones, finishes
// its deletions, claims the VMs stored before nodes whose namespaces it finds or whose
// addresses are of its range, and removes namespaces that no stored VM explains,
// leaving other gateways' alone. A later apply that fails leaves the previous table in
// force; it is retried, and Ready reports the gateway not ready until it succeeds.
package gateway
