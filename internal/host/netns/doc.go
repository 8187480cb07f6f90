// Package netns gives each sandbox of the transparent gateway its network (DESIGN §4), and
// is the only package of egressd that switches network namespaces.
//
// # What a sandbox network is
//
// A VM created with network mode "netns" gets a named network namespace joined to the
// gateway by a veth pair:
//
//	gateway namespace (egressd's own; the host's in production)
//	  eg0123456789   veth, 100.96.0.1/30, up, IPv6 off, rp_filter=1 (strict)
//	        │
//	sandbox namespace egressd-0123456789, mounted at /run/netns/egressd-0123456789
//	  eth0           veth, 100.96.0.2/30, up, IPv6 off
//	  lo             up, IPv4 only
//	  default via 100.96.0.1 dev eth0
//	/etc/netns/egressd-0123456789/resolv.conf: nameserver 100.96.0.1
//
// The names come from Name(tenant, vm_id), a hash, so that a restarted egressd finds the
// namespaces it made. Subnets come from an Allocator over the operator's sandbox range
// (--sandbox-cidr, 100.96.0.0/16 in tests): the i-th /30 of the range, gateway .1, sandbox
// .2. NewAttachment (or Manager.Attachment) puts name, interface, addresses and path
// together in an Attachment; that is what the gateway stores and what the firewall names.
//
// The namespace is mounted exactly as `ip netns add` does it, so `ip netns list`,
// `ip netns exec <name> …` and `ip -n <name> …` work on it, and `ip netns exec` puts the
// resolv.conf over /etc/resolv.conf, so that a process in the sandbox asks the gateway's
// DNS filter and nothing else. IPv6 is switched off inside (net.ipv6.conf.all, default,
// eth0 and lo) and on the gateway end: sandboxes are IPv4-only and the firewall drops IPv6
// anyway.
//
// # Lifecycle
//
// A Manager does the work. The zero value (or NewManager()) runs from the process's own
// namespace, with /run/netns and /etc/netns:
//
//   - Create(a) makes the network, or brings an existing one back to a: after an egressd
//     restart it finds everything in place and changes nothing; what is missing or wrong
//     (the veth deleted by hand, an address or route changed by root inside the sandbox,
//     IPv6 switched back on, a resolv.conf removed, a namespace file left unmounted by a
//     crash) it repairs. If Create fails on a namespace it made itself, it removes it again.
//   - Delete(name) removes the namespace mount and file, the veth pair (deleting one end
//     removes both: a sandbox whose namespace a process still holds is cut off all the
//     same) and /etc/netns/<name>. What is missing is no error; another gateway's namespace
//     of the name is refused and left alone.
//   - List() names the sandbox networks present, for removing at start those that the
//     store no longer knows.
//   - Start(name, cmd) runs a command inside a sandbox, as `egressctl exec` does.
//
// Several gateways may share /run/netns: tests and the end-to-end harness run egressd in
// namespaces of their own, side by side. A sandbox namespace belongs to the gateway for
// which it holds a namespace id (see `ip netns list-id`): Create sets one at once, and the
// kernel sets one anyway once the veth joins them. List names only this gateway's
// namespaces (plus its own "eg…" veths and resolv.conf directories left without a
// namespace, which are nobody's to tell), and Create and Delete refuse a namespace of another
// gateway that has interfaces, instead of taking it over or removing it.
//
// The methods are serialised by the Manager; one Manager per process is the intended use.
//
// # Running code in a namespace
//
// A network namespace belongs to a thread, not to a process, and a Go program's goroutines
// hop between threads. So egressd never switches the namespace of a thread that other code
// may run on: every switch happens in this package, on a fresh goroutine locked to its OS
// thread, never the main thread; the thread goes back to its namespace before it is
// unlocked, and a thread that cannot be put back is left locked, so that the runtime ends
// it with its goroutine instead of reusing it. What a thread does inside lasts where it
// should: a socket belongs to the namespace it was made in for its whole life, and a child
// process inherits the namespace of the thread that forked it.
//
//   - Do(path, fn) runs fn inside the namespace at path and waits. Goroutines started by
//     fn are not inside; names are not resolved inside (the resolver uses other goroutines).
//   - DialIn(path), ListenIn(path, …) and ListenPacketIn(path, …) make sockets inside a
//     namespace, from IP literals only. Tests and the end-to-end harness use them to run
//     servers in their fake internet and clients in sandboxes, without adding anything to
//     the machine's own namespace.
//   - StartIn(path, cmd) and RunIn start a process inside. With WithResolvConf the process
//     also gets a private mount namespace, as under `ip netns exec`: the given file over
//     /etc/resolv.conf and a /sys that shows the namespace's interfaces. Do not set
//     SysProcAttr.Pdeathsig with WithResolvConf: the thread that forked the process ends
//     right away, and the signal follows the thread.
//   - CreateNS and RemoveNS make and remove a bare namespace at any path (the harness's
//     gateway and fake internet); Sysctl and SetSysctl read and write kernel parameters of
//     the calling namespace, or, inside Do, of the namespace Do entered.
//
// # The gateway namespace
//
// In production egressd runs in the host's namespace, and the Manager changes it: it adds
// the "eg…" interfaces with their addresses and per-interface sysctls, and EnableForwarding
// sets net.ipv4.ip_forward=1 there, which the gateway needs to forward what allowed_cidrs
// allows. That turns on routing for the whole host; egressd's nftables table drops what it
// does not allow from sandboxes, and the host's own interfaces are the operator's to
// guard. Tests must never change the machine's namespace: they make a namespace of their
// own and pass WithGatewayNS(handle), and then every gateway-side change goes there
// (netlink through a socket opened inside it, sysctls through Do). EnableForwarding in a
// test is Do(gatewayPath, EnableForwarding).
//
// # Operating notes
//
//   - egressd needs root (CAP_SYS_ADMIN for mounts and setns, CAP_NET_ADMIN), and must run
//     in the host's mount namespace, or one whose /run/netns propagates to it: Create
//     makes /run/netns a shared mount (as `ip netns add` does), so that namespaces appear
//     in, and deletions reach, the mount namespaces of `ip netns exec` and of Start. Under
//     systemd, give egressd none of PrivateMounts=, ProtectSystem= or ReadWritePaths=: each
//     puts it in a mount namespace whose mounts do not reach the host, so the namespaces it
//     mounts under /run/netns would be invisible there (see deploy/egressd.service).
//   - /etc/netns must be writable: `ip netns exec` looks for resolv.conf there and nowhere
//     else. WithResolvDir moves the files for egressd's own use (Start), not for iproute2.
//   - Root inside a sandbox can change its own namespace (addresses, routes, IPv6) but
//     nothing on the gateway. The gateway must therefore tell sandboxes apart by their
//     interface (iifname "eg…"), never by source address alone; strict rp_filter on each
//     gateway end drops forged sources as well. The next Create repairs the sandbox side.
//   - Name has 40 bits: two VMs of one gateway collide with a probability of about one in
//     2 million per 1,000 VMs. The caller refuses a new VM whose name is already in use.
package netns
