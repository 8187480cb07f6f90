package firewall

import (
	"fmt"
	"math"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// TableName is the name of egressd's table, in the inet family. egressd owns it whole and
// touches no other table.
const TableName = "egressd"

// Names of the sets and chains that do not depend on a sandbox. Per sandbox there are
// allow_<name>, raw_<name>, nat_<name> and fwd_<name>.
const (
	setHardDeny    = "hard_deny"
	setIfaces      = "sandbox_ifaces"
	mapRaw         = "raw_dispatch"
	mapNAT         = "nat_dispatch"
	mapFwd         = "fwd_dispatch"
	chainRaw       = "raw_pre"
	chainNATPre    = "nat_pre"
	chainInput     = "input"
	chainForward   = "forward"
	chainNATPost   = "nat_post"
	prefixAllow    = "allow_"
	prefixRaw      = "raw_"
	prefixNAT      = "nat_"
	prefixFwd      = "fwd_"
	webPortHTTP    = 80
	webPortHTTPS   = 443
	dnsPortDefault = 53
)

// set is a named set or verdict map of the table, with its elements.
type set struct {
	name     string
	ifname   bool // key type ifname; else ipv4_addr with flags interval
	vmap     bool // ifname : verdict
	tcp      bool // ipv4_addr . inet_service with flags timeout
	elemText []string
	elems    []nftables.SetElement
}

// base describes the hook of a base chain.
type base struct {
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	hookName string
	prio     *nftables.ChainPriority
	prioName string
}

type chain struct {
	name  string
	base  *base // nil for a regular chain (reached by a vmap goto)
	rules []rule
}

// plan is the whole table: what Apply installs and what Render prints.
type plan struct {
	sets   []*set
	chains []*chain
}

func ipSet(name string, rs []ipRange) *set {
	s := &set{name: name}
	for _, r := range rs {
		s.elemText = append(s.elemText, r.String())
		s.elems = append(s.elems, nftables.SetElement{Key: ip4(addr4(r.lo))})
		if r.hi != math.MaxUint32 { // a range that ends at the top has no end element
			s.elems = append(s.elems, nftables.SetElement{Key: ip4(addr4(r.hi + 1)), IntervalEnd: true})
		}
	}
	return s
}

func ifaceSet(name string, sbx []sandbox) *set {
	s := &set{name: name, ifname: true}
	for _, x := range sbx {
		s.elemText = append(s.elemText, fmt.Sprintf("%q", x.iface))
		s.elems = append(s.elems, nftables.SetElement{Key: ifname(x.iface)})
	}
	return s
}

func dispatchMap(name, chainPrefix string, sbx []sandbox) *set {
	s := &set{name: name, ifname: true, vmap: true}
	for _, x := range sbx {
		c := chainPrefix + x.name
		s.elemText = append(s.elemText, fmt.Sprintf("%q : goto %s", x.iface, c))
		s.elems = append(s.elems, nftables.SetElement{
			Key: ifname(x.iface), VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: c},
		})
	}
	return s
}

func baseChain(name string, typ nftables.ChainType, hook *nftables.ChainHook, hookName string,
	prio *nftables.ChainPriority, prioName string, rules ...rule) *chain {
	return &chain{name: name, base: &base{typ, hook, hookName, prio, prioName}, rules: rules}
}

// build turns a validated state into the table. Comments are kept short: they are stored
// in the kernel with each rule and shown by `nft list table inet egressd`.
func build(st *state) *plan {
	p := &plan{}
	p.sets = append(p.sets, ipSet(setHardDeny, st.hardDeny), ifaceSet(setIfaces, st.sandboxes))
	for _, s := range st.sandboxes {
		p.sets = append(p.sets, ipSet(prefixAllow+s.name, s.allowed), tcpSet(prefixTCP+s.name, s.tcp))
		if fast(st, s) {
			p.sets = append(p.sets, tcpSet(prefixFast+s.name, s.fast))
		}
	}
	p.sets = append(p.sets,
		dispatchMap(mapRaw, prefixRaw, st.sandboxes),
		dispatchMap(mapNAT, prefixNAT, st.sandboxes),
		dispatchMap(mapFwd, prefixFwd, st.sandboxes))

	raw := []rule{newRule("each sandbox interface to its chain", ifaceVmap("iifname", mapRaw))}
	if st.ifacePrefix != "" {
		raw = append(raw, newRule("sandbox interface not (yet) known: fail closed",
			ifaceWildcard("iifname", st.ifacePrefix), drop()))
	}

	sbxIn := func(f ...frag) []frag { return append([]frag{ifaceInSet("iifname", setIfaces, false)}, f...) }
	input := []rule{
		// Not related: a sandbox's ICMP error is related to whichever connection it quotes,
		// another sandbox's proxied one included (doc.go); a sandbox has none to send here.
		newRule("replies", sbxIn(ctEstablishedOnly(), accept())...),
	}
	if st.proxyPort != 0 {
		input = append(input, newRule("transparent proxy", sbxIn(dport("tcp", st.proxyPort), accept())...))
	}
	if st.dnsPort != 0 {
		input = append(input,
			newRule("DNS filter", sbxIn(dport("udp", st.dnsPort), accept())...),
			newRule("DNS filter", sbxIn(dport("tcp", st.dnsPort), accept())...))
	}
	input = append(input, newRule("nothing else on the gateway is reachable from a sandbox", sbxIn(drop())...))
	if st.proxyPort != 0 {
		input = append(input, newRule("the transparent listeners serve sandboxes only", dport("tcp", st.proxyPort), drop()))
	}
	if st.dnsPort != 0 {
		input = append(input,
			newRule("the transparent listeners serve sandboxes only", dport("udp", st.dnsPort), drop()),
			newRule("the transparent listeners serve sandboxes only", dport("tcp", st.dnsPort), drop()))
	}

	toSbx := ifaceInSet("oifname", setIfaces, false)
	forward := []rule{newRule("each sandbox interface to its chain", ifaceVmap("iifname", mapFwd))}
	if st.fastPath {
		forward = append(forward, fastReplies(st))
	}
	forward = append(forward,
		newRule("replies to what a sandbox was allowed to open", toSbx, ctEstablished(), accept()),
		newRule("nothing else reaches a sandbox", ifaceInSet("oifname", setIfaces, false), drop()),
	)
	if st.ifacePrefix != "" {
		forward = append(forward, newRule("sandbox interface not (yet) known: fail closed",
			ifaceWildcard("oifname", st.ifacePrefix), drop()))
	}
	var post []rule
	if st.sandboxCIDR.IsValid() {
		post = append(post, newRule("sandbox traffic leaving by the uplink",
			ipSaddrIn(st.sandboxCIDR), ifaceInSet("oifname", setIfaces, true), masquerade()))
	}

	if st.fastPath {
		p.chains = append(p.chains, fragChain())
	}
	p.chains = append(p.chains,
		baseChain(chainRaw, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, "prerouting",
			nftables.ChainPriorityRaw, "raw", raw...),
		baseChain(chainNATPre, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, "prerouting",
			nftables.ChainPriorityNATDest, "dstnat",
			newRule("each sandbox interface to its chain", ifaceVmap("iifname", mapNAT))),
		baseChain(chainInput, nftables.ChainTypeFilter, nftables.ChainHookInput, "input",
			nftables.ChainPriorityFilter, "filter", input...),
		baseChain(chainForward, nftables.ChainTypeFilter, nftables.ChainHookForward, "forward",
			nftables.ChainPriorityFilter, "filter", forward...),
		baseChain(chainNATPost, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, "postrouting",
			nftables.ChainPriorityNATSource, "srcnat", post...),
	)
	for _, s := range st.sandboxes {
		p.chains = append(p.chains, sandboxChains(st, s)...)
	}
	return p
}

// sandboxChains are the three chains of one sandbox, reached by goto from the dispatch
// maps: whatever they do not drop falls to the base chain's policy (accept), and never
// back into the base chain's later rules.
func sandboxChains(st *state, s sandbox) []*chain {
	toDNS := dnat(s.gateway, st.dnsPort)
	toProxy := dnat(s.gateway, st.proxyPort)
	nat := []rule{
		newRule("DNS to the DNS filter, whatever the destination", dport("udp", dnsPortDefault), toDNS),
		newRule("DNS to the DNS filter, whatever the destination", dport("tcp", dnsPortDefault), dnat(s.gateway, st.dnsPort)),
		newRule("hard deny: not redirected, dropped in forward or input", ipDaddrInSet(setHardDeny), ret()),
	}
	if fast(st, s) {
		nat = append(nat, fastNAT(s))
	}
	nat = append(nat,
		// allowed_cidrs destinations too: the proxy judges the names seen on them
		// (DESIGN §4) and dials the address; their other ports are routed as they are.
		newRule("web to the transparent proxy", dport("tcp", webPortHTTP), toProxy),
		newRule("web to the transparent proxy", dport("tcp", webPortHTTPS), dnat(s.gateway, st.proxyPort)))
	return []*chain{
		{name: prefixRaw + s.name, rules: []rule{
			newRule("no IPv6 from a sandbox", notIPv4(), drop()),
			newRule("anti-spoofing", ipSaddrNeq(s.addr), drop()),
		}},
		{name: prefixNAT + s.name, rules: nat},
		{name: prefixFwd + s.name, rules: fwdRules(st, s)},
	}
}

// fast reports whether sandbox s has the fast path: FastPath is on and s is not in
// monitor (whose HTTPS stays with the proxy, which applies monitor itself).
func fast(st *state, s sandbox) bool { return st.fastPath && !s.monitor }

// fwdRules is a sandbox's forward chain (the order is explained in doc.go).
func fwdRules(st *state, s sandbox) []rule {
	rs := []rule{
		// Recorded like every denial (DESIGN §6), monitor or not: the kernel drops it.
		newRule("hard deny: the first packet of a flow",
			ipDaddrInSet(setHardDeny), ctStateNew(), limitRate(logRate, logBurst), nflog(PrefixDeny, st.logGroup)),
		newRule("hard deny", ipDaddrInSet(setHardDeny), drop()),
	}
	if fast(st, s) {
		// Before allowed_cidrs: an address in both must still be verified.
		rs = append(rs, fastFwd(st)...)
	}
	rs = append(rs,
		newRule("allowed_cidrs", ipSaddrEq(s.addr), ipDaddrInSet(prefixAllow+s.name), accept()),
		// Established, not related: another sandbox's ICMP errors can be related to this
		// sandbox's connections (doc.go), and the mark is not the sender's.
		// Not a SYN either: conntrack takes a SYN of a four-tuple whose connection the server
		// reset as part of that (marked) entry, and the new connection would pass by the
		// old mark after its element expired. A SYN always meets the set.
		newRule("allowed_tcp: a connection outlives its element", ctEstablishedOnly(), ctMarked(), tcpNotSYNOnly(), accept()),
		// New only: a SYN that conntrack finds invalid (a bad checksum, say) has no entry,
		// so it would leave without masquerade, carrying the sandbox's own address.
		newRule("allowed_tcp: new connections", ipSaddrEq(s.addr), ctStateNew(), tcpSYNOnly(),
			daddrDportInSet(prefixTCP+s.name), ctMarkSet(), accept()))
	if s.monitor {
		return append(rs,
			newRule("monitor: the first packet of a would-be denied flow",
				ctStateNew(), limitRate(logRate, logBurst), nflog(PrefixMonitor, st.logGroup)),
			newRule("monitor: everything else from a sandbox passes", accept()))
	}
	return append(rs,
		newRule("a cut connection's next packet: reset", ctStateNew(), tcpNotSYN(), rejectReset()),
		newRule("the first packet of a denied flow",
			ctStateNew(), limitRate(logRate, logBurst), nflog(PrefixDeny, st.logGroup)),
		newRule("everything else from a sandbox", drop()))
}

// objects counts what the batch adds: chains, rules, sets and set elements.
func (p *plan) objects() int {
	n := len(p.chains) + len(p.sets)
	for _, c := range p.chains {
		n += len(c.rules)
	}
	for _, s := range p.sets {
		n += len(s.elems)
	}
	return n
}
