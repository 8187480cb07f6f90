package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The fast path's conntrack marks (doc.go "The fast path"). egressd sets them on a flow
// it held in the fast queue: MarkFastWait once it has judged the ClientHello allowed and
// released the held packets (the server's packets then come to the queue too, until one
// acknowledges the whole ClientHello), MarkFast once the server has (the kernel forwards
// the rest of the flow), MarkFastDeny if it refused the flow (the kernel resets it). They
// are the bits above MarkTCP, for the same reasons (clear of the marks in common use, see
// MarkTCP), and each is read and set alone, so the other bits of a ct mark are left alone.
const (
	MarkFast     uint32 = 0x0200_0000 // a fast-path flow egressd verified, and its server confirmed
	MarkFastDeny uint32 = 0x0400_0000 // a fast-path flow egressd refused: reset by the kernel
	MarkFastWait uint32 = 0x0800_0000 // a fast-path flow egressd released: waiting for the server to acknowledge the ClientHello
)

// markFastAll is the fast path's marks: every verdict mark clears the others but a cut's
// MarkFastDeny (FastMarker).
const markFastAll = MarkFast | MarkFastWait | MarkFastDeny

// DefaultFastQueue is the NFQUEUE number of the fast path when Desired.FastQueue is 0:
// the one after DefaultLogGroup (a queue and a log group are separate numberings; the
// neighbour is only easy to remember).
const DefaultFastQueue uint16 = 6568

const (
	prefixFast   = "fast_"
	chainFragPre = "frag_pre" // "frag" alone is an nft keyword: nft -f would refuse the chain
	fragPrio     = -450       // before conntrack's defrag (-400): fragments are seen as such
)

// fastEndpoints validates the endpoints of a fast_<name> set: those of a tcp_<name> set,
// with port 443 only.
func fastEndpoints(eps []Endpoint) ([]endpoint, error) {
	for _, e := range eps {
		if e.Port != webPortHTTPS {
			return nil, fmt.Errorf("endpoint %v:%d: the fast path is for port %d only", e.Addr, e.Port, webPortHTTPS)
		}
	}
	return endpoints(eps)
}

// AdmitFast puts eps into the fast_<name> set of sandbox name, as Admit does for
// tcp_<name>: each with its timeout, one batch, an element already there gets the new
// timeout. Every port must be 443. It fails for a sandbox that has no fast_<name> set (no
// such sandbox, FastPath off, or a Monitor sandbox).
func (f *Firewall) AdmitFast(name string, eps []Endpoint) error {
	es, err := fastEndpoints(eps)
	return f.elements("admit fast", prefixFast, name, es, err, true)
}

// RevokeFast removes eps from the fast_<name> set, as Revoke does for tcp_<name>: absent
// elements are no error, timeouts are ignored. Flows already routed stay so (the NAT
// decision is taken on a flow's first packet): CutFast cuts the verified ones.
func (f *Firewall) RevokeFast(name string, eps []Endpoint) error {
	es, err := fastEndpoints(keysOnly(eps))
	return f.elements("revoke fast", prefixFast, name, es, err, false)
}

// CutFast refuses sandbox's verified or released fast flows (MarkFast or MarkFastWait set,
// MarkFastDeny not: a released flow's ClientHello was judged as a verified one's) for which
// keep(src, dst) is false (src: the sandbox's address and port; dst: the original
// destination); keep nil keeps none. It adds MarkFastDeny to their conntrack entries
// (FastMarker.Cut: MarkFast stays, so the flow log still records the flow's close) rather
// than deleting them: the forward chain then answers the sandbox's
// next packet of each with a TCP reset, whatever the rest of the table says by then.
// (A deleted entry's next packet is a new flow, which the nat chain may send to the
// transparent proxy once the address left fast_<name>, and the lab showed such a cut
// download stall instead of reset.) An idle flow sends no next packet, so CutFast then
// makes the sandbox send one: it sends the sandbox a probe from the server's address that
// the sandbox's TCP answers with an ACK, which the rule resets (probe.go). Refused flows
// are reset by the kernel already, and flows egressd still holds are its own to decide.
// It returns how many flows it refused. A probe that could not be sent does not undo the
// cut and does not stop the others; CutFast then returns the count and an error saying
// so (a sandbox the gateway no longer routes to is not told, and that is no error).
func (f *Firewall) CutFast(sandbox netip.Addr, keep func(src, dst netip.AddrPort) bool) (int, error) {
	a := sandbox.Unmap()
	if !a.Is4() {
		return 0, fmt.Errorf("firewall: cut fast: %v is not an IPv4 address", sandbox)
	}
	flows, err := listFlows(options{netnsFd: f.netnsFd})
	if err != nil {
		return 0, fmt.Errorf("firewall: cut fast flows of %v: %w", a, err)
	}
	var m *FastMarker
	var p *prober
	var unprobed []error // the cut stands; only the sandbox may learn of it later
	n := 0
	filter := fastFilter{src: a, keep: keep}
	for _, fl := range flows {
		if !filter.MatchConntrackFlow(fl) {
			continue
		}
		if m == nil {
			if m, err = NewFastMarker(WithNetNSFd(f.netnsFd)); err != nil {
				return n, fmt.Errorf("firewall: cut fast flows of %v: %w", a, err)
			}
			defer m.Close()
			if p, err = newProber(f.netnsFd); err != nil {
				unprobed = append(unprobed, err)
			} else {
				defer p.Close()
			}
		}
		src, _ := ipOf(fl.Forward.SrcIP)
		dst, _ := ipOf(fl.Forward.DstIP)
		client, server := netip.AddrPortFrom(src, fl.Forward.SrcPort), netip.AddrPortFrom(dst, fl.Forward.DstPort)
		err := m.Cut(client, server)
		switch {
		case err == nil:
			n++
			if p != nil {
				if err := p.probe(client, server); err != nil && !gone(err) {
					unprobed = append(unprobed, err)
				}
			}
		case errors.Is(err, ErrNoFlow): // it ended meanwhile
		default:
			return n, errors.Join(fmt.Errorf("firewall: cut fast flows of %v: %w", a, err), errors.Join(unprobed...))
		}
	}
	if len(unprobed) > 0 {
		return n, fmt.Errorf("firewall: cut %d fast flows of %v, but an idle one learns of it only when it next sends: %w", n, a, errors.Join(unprobed...))
	}
	return n, nil
}

// fastFilter matches the flows CutFast refuses.
type fastFilter struct {
	src  netip.Addr
	keep func(src, dst netip.AddrPort) bool
}

func (f fastFilter) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool {
	src, ok1 := ipOf(fl.Forward.SrcIP)
	dst, ok2 := ipOf(fl.Forward.DstIP)
	if !ok1 || !ok2 || src != f.src || fl.Forward.Protocol != unix.IPPROTO_TCP ||
		fl.Mark&(MarkFast|MarkFastWait) == 0 || fl.Mark&MarkFastDeny != 0 {
		return false
	}
	return f.keep == nil || !f.keep(netip.AddrPortFrom(src, fl.Forward.SrcPort), netip.AddrPortFrom(dst, fl.Forward.DstPort))
}

// queue: queue num Q, the packet to NFQUEUE Q, without bypass (no reader: the kernel
// drops it) and without fanout.
//
// Installed as the xtables NFQUEUE target (revision 3) through nft_compat, not as nft's
// own queue expression: kernels built without nft_queue (CONFIG_NFT_QUEUE), such as the
// project's lab machines, have the target, and it queues the same way. nft lists it as an
// xt target it cannot print; Render writes what it does, as nft's own statement.
func queue(num uint16) frag {
	// struct xt_NFQ_info_v3: queuenum, queues_total, flags (host order), padded to 8 bytes
	// (XT_ALIGN) as iptables sends it and the kernel lists it.
	info := make([]byte, 8)
	binary.NativeEndian.PutUint16(info[0:], num)
	binary.NativeEndian.PutUint16(info[2:], 1)
	target := xt.Unknown(info)
	return frag{text: fmt.Sprintf("queue num %d", num), exprs: []expr.Any{
		&expr.Target{Name: "NFQUEUE", Rev: 3, Info: &target},
	}}
}

// ipTCPFragment: ip frag-off & 0x3fff != 0 ip protocol tcp, a TCP packet that is a
// fragment (more fragments, or an offset: the first fragment too). ip protocol, not meta
// l4proto: the transport protocol of a fragment that is not the first is not known.
func ipTCPFragment() frag {
	return frag{text: "ip frag-off & 0x3fff != 0 ip protocol tcp", exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 6, Len: 2},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: be16(0x3fff), Xor: []byte{0, 0}},
		cmp(expr.CmpOpNeq, []byte{0, 0}),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 9, Len: 1},
		cmp(expr.CmpOpEq, []byte{unix.IPPROTO_TCP}),
	}, ipv4: true}
}

// fragChain is the base chain that drops TCP in IP fragments from a sandbox (FastPath).
func fragChain() *chain {
	return baseChain(chainFragPre, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, "prerouting",
		nftables.ChainPriorityRef(fragPrio), fmt.Sprint(fragPrio),
		newRule("fast path: no TCP in IP fragments from a sandbox",
			ifaceInSet("iifname", setIfaces, false), ipTCPFragment(), drop()))
}

// fastNAT is the rule of nat_<name> that routes a flow to a fast_<name> endpoint.
func fastNAT(s sandbox) rule {
	return newRule("fast path: routed, verified from its packets", daddrDportInSet(prefixFast+s.name), ret())
}

// fastReplies is the forward base chain's rule, before the one accepting replies, that
// queues the server's packets of a released flow (MarkFastWait) until egressd confirms it
// (doc.go "The fast path"). At forward, a reply's destination is the sandbox again (the
// masquerade is undone in prerouting).
func fastReplies(st *state) rule {
	return newRule("fast path: the server's packets until it acknowledged the ClientHello",
		ifaceInSet("oifname", setIfaces, false), sport("tcp", webPortHTTPS), ctMarkHas(MarkFastWait), queue(st.fastQueue))
}

// fastFwd are the fast path's rules of fwd_<name> (the order is explained in doc.go).
// Every TCP 443 packet that reaches forward from a sandbox was routed by fastNAT (all other
// 443 is DNATed to the proxy, or hard-denied and dropped before these).
func fastFwd(st *state) []rule {
	https := func(fs ...frag) []frag { return append([]frag{dport("tcp", webPortHTTPS)}, fs...) }
	return []rule{
		newRule("fast path: refused", https(ctMarkHas(MarkFastDeny), rejectReset())...),
		newRule("fast path: verified", https(ctEstablishedOnly(), ctMarkHas(MarkFast), tcpNotSYNOnly(), accept())...),
		newRule("fast path: a cut flow's next packet", https(ctStateNew(), tcpNotSYNOnly(), rejectReset())...),
		newRule("fast path: conntrack finds it invalid", https(ctStateInvalid(), drop())...),
		// A SYN starts a flow anew, also when conntrack takes it into the entry of a closed
		// one (state CLOSE after the server's reset), marks included: without this, the new
		// connection's data would pass by the old flow's MarkFast unverified.
		newRule("fast path: a SYN starts unverified", https(tcpSYNOnly(), ctMarkClear(MarkFast|MarkFastWait))...),
		newRule("fast path: held until egressd verified its ClientHello", https(queue(st.fastQueue))...),
	}
}
