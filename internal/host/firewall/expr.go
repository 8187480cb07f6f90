package firewall

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// frag is one statement of a rule: the nft text that `nft list` would show for it and the
// kernel expressions that implement it. Rules are sequences of fragments, so what Render
// prints and what Apply installs come from the same place and cannot drift apart.
// Fragments carry their protocol dependencies, which nft adds implicitly: meta nfproto
// ipv4 (for an IPv4 header load) and meta l4proto (for a transport header load). A rule
// emits each once, right before the first fragment that needs it, as nft does.
type frag struct {
	text  string
	exprs []expr.Any
	ipv4  bool // needs "meta nfproto ipv4"; a rule emits it once, before the first fragment that needs it
	l4    byte // needs "meta l4proto <l4>" (0: none); emitted once, likewise
}

const ifnameLen = 16 // IFNAMSIZ

func ifname(n string) []byte {
	b := make([]byte, ifnameLen)
	copy(b, n)
	return b
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func ip4(a netip.Addr) []byte {
	b := a.As4()
	return b[:]
}

func meta(k expr.MetaKey) *expr.Meta { return &expr.Meta{Key: k, Register: 1} }

func cmp(op expr.CmpOp, data []byte) *expr.Cmp {
	return &expr.Cmp{Op: op, Register: 1, Data: data}
}

func lookup(set string, invert bool) *expr.Lookup {
	return &expr.Lookup{SourceRegister: 1, SetName: set, Invert: invert}
}

// ifaceKey is "iifname" or "oifname".
func ifaceKey(dir string) expr.MetaKey {
	if dir == "oifname" {
		return expr.MetaKeyOIFNAME
	}
	return expr.MetaKeyIIFNAME
}

// ifaceInSet: iifname @set / iifname != @set (or oifname).
func ifaceInSet(dir, set string, negate bool) frag {
	op := ""
	if negate {
		op = "!= "
	}
	return frag{fmt.Sprintf("%s %s@%s", dir, op, set), []expr.Any{meta(ifaceKey(dir)), lookup(set, negate)}, false, 0}
}

// ifaceWildcard: iifname "eg*", a prefix match (the compare is as long as the prefix).
func ifaceWildcard(dir, prefix string) frag {
	return frag{fmt.Sprintf("%s %q", dir, prefix+"*"), []expr.Any{
		meta(ifaceKey(dir)), cmp(expr.CmpOpEq, []byte(prefix)),
	}, false, 0}
}

// ifaceVmap: iifname vmap @map, the O(1) dispatch to a sandbox's chain.
func ifaceVmap(dir, set string) frag {
	return frag{fmt.Sprintf("%s vmap @%s", dir, set), []expr.Any{
		meta(ifaceKey(dir)),
		&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: set},
	}, false, 0}
}

func nfprotoIPv4() []expr.Any {
	return []expr.Any{meta(expr.MetaKeyNFPROTO), cmp(expr.CmpOpEq, []byte{unix.NFPROTO_IPV4})}
}

// notIPv4: meta nfproto != ipv4 (in the inet family that is IPv6).
func notIPv4() frag {
	return frag{"meta nfproto != ipv4", []expr.Any{
		meta(expr.MetaKeyNFPROTO), cmp(expr.CmpOpNeq, []byte{unix.NFPROTO_IPV4}),
	}, false, 0}
}

const (
	offSaddr = 12
	offDaddr = 16
)

func loadIP(off uint32) []expr.Any {
	return []expr.Any{&expr.Payload{
		DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4,
	}}
}

// ipSaddrNeq: ip saddr != A.
func ipSaddrNeq(a netip.Addr) frag {
	return frag{"ip saddr != " + a.String(), append(loadIP(offSaddr), cmp(expr.CmpOpNeq, ip4(a))), true, 0}
}

// ipSaddrEq: ip saddr A.
func ipSaddrEq(a netip.Addr) frag {
	return frag{"ip saddr " + a.String(), append(loadIP(offSaddr), cmp(expr.CmpOpEq, ip4(a))), true, 0}
}

// ipSaddrIn: ip saddr P (a prefix).
func ipSaddrIn(p netip.Prefix) frag {
	mask := make([]byte, 4)
	binary.BigEndian.PutUint32(mask, ^uint32(0)<<(32-p.Bits()))
	ex := append(loadIP(offSaddr),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		cmp(expr.CmpOpEq, ip4(p.Addr())))
	return frag{"ip saddr " + p.String(), ex, true, 0}
}

// ipDaddrInSet: ip daddr @set.
func ipDaddrInSet(set string) frag {
	return frag{"ip daddr @" + set, append(loadIP(offDaddr), lookup(set, false)), true, 0}
}

// dport: tcp dport N / udp dport N.
func dport(proto string, port uint16) frag { return portIs(proto, "dport", 2, port) }

// sport: tcp sport P (or udp), with its l4proto dependency.
func sport(proto string, port uint16) frag { return portIs(proto, "sport", 0, port) }

// portIs: <proto> <field> P, the 16-bit port at offset off of the transport header.
func portIs(proto, field string, off uint32, port uint16) frag {
	p := byte(unix.IPPROTO_TCP)
	if proto == "udp" {
		p = unix.IPPROTO_UDP
	}
	return frag{text: fmt.Sprintf("%s %s %d", proto, field, port), exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
		cmp(expr.CmpOpEq, be16(port)),
	}, l4: p}
}

// ctState: ct state <text>, the flow's state is one of bits.
func ctState(text string, bits uint32) frag {
	return frag{"ct state " + text, []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		cmp(expr.CmpOpNeq, make([]byte, 4)),
	}, false, 0}
}

// ctEstablished: ct state established,related.
func ctEstablished() frag {
	return ctState("established,related", expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED)
}

// ctStateNew: ct state new (the first packet of a flow conntrack has not seen before).
func ctStateNew() frag { return ctState("new", expr.CtStateBitNEW) }

// ctStateInvalid: ct state invalid (conntrack refused the packet, which has no entry: a
// bad checksum, a segment out of the window, ...).
func ctStateInvalid() frag { return ctState("invalid", expr.CtStateBitINVALID) }

// ctMarked: ct mark & MarkTCP == MarkTCP, the flow was admitted by a tcp_<name> set.
func ctMarked() frag { return ctMarkHas(MarkTCP) }

// ctMarkHas: ct mark & bit == bit.
func ctMarkHas(bit uint32) frag {
	m := binaryutil.NativeEndian.PutUint32(bit)
	return frag{fmt.Sprintf("ct mark & %#08x == %#08x", bit, bit), []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeyMARK},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: make([]byte, 4)},
		cmp(expr.CmpOpEq, m),
	}, false, 0}
}

// ctEstablishedOnly: ct state established, without related. A packet's own source
// (anti-spoofing) does not say whose connection conntrack relates it to: an ICMP error is
// related to the connection its quoted packet belongs to, whoever sends it, so a sandbox
// could send one quoting another sandbox's connection.
func ctEstablishedOnly() frag { return ctState("established", expr.CtStateBitESTABLISHED) }

// ctMarkSet: ct mark set ct mark | MarkTCP, leaving the other bits of the mark alone.
func ctMarkSet() frag {
	return frag{fmt.Sprintf("ct mark set ct mark | %#08x", MarkTCP), []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeyMARK},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^MarkTCP), Xor: binaryutil.NativeEndian.PutUint32(MarkTCP)},
		&expr.Ct{Register: 1, SourceRegister: true, Key: expr.CtKeyMARK},
	}, false, 0}
}

// ctMarkClear: ct mark set ct mark & ~bits, leaving the other bits of the mark alone.
func ctMarkClear(bits uint32) frag {
	return frag{fmt.Sprintf("ct mark set ct mark & %#08x", ^bits), []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeyMARK},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^bits), Xor: make([]byte, 4)},
		&expr.Ct{Register: 1, SourceRegister: true, Key: expr.CtKeyMARK},
	}, false, 0}
}

const (
	tcpFlagsOff = 13
	tcpFIN      = 0x01
	tcpSYN      = 0x02
	tcpRST      = 0x04
	tcpACK      = 0x10
)

// tcpFlags: the flags byte masked with mask compared (op) to want.
func tcpFlags(text string, mask, want byte, op expr.CmpOp) frag {
	return frag{text: text, exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: tcpFlagsOff, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{mask}, Xor: []byte{0}},
		cmp(op, []byte{want}),
	}, l4: unix.IPPROTO_TCP}
}

// tcpSYNOnly: a connection's first packet, SYN without ACK (nor FIN, RST).
func tcpSYNOnly() frag {
	return tcpFlags("tcp flags syn / fin,syn,rst,ack", tcpFIN|tcpSYN|tcpRST|tcpACK, tcpSYN, expr.CmpOpEq)
}

// tcpNotSYNOnly: a TCP packet that is not a connection's first (tcpSYNOnly).
func tcpNotSYNOnly() frag {
	return tcpFlags("tcp flags != syn / fin,syn,rst,ack", tcpFIN|tcpSYN|tcpRST|tcpACK, tcpSYN, expr.CmpOpNeq)
}

// tcpNotSYN: any TCP packet without SYN.
func tcpNotSYN() frag { return tcpFlags("tcp flags ! syn", tcpSYN, 0, expr.CmpOpEq) }

// regConcat2 is the second 32-bit register of a concatenation (NFT_REG32_01): the key
// ip daddr . tcp dport is laid out from register 1 on, one field per 32-bit register.
const regConcat2 = 9

// daddrDportInSet: ip daddr . tcp dport @set.
func daddrDportInSet(set string) frag {
	return frag{text: "ip daddr . tcp dport @" + set, exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offDaddr, Len: 4},
		&expr.Payload{DestRegister: regConcat2, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		lookup(set, false),
	}, ipv4: true, l4: unix.IPPROTO_TCP}
}

// rejectReset: reject with tcp reset (the rule has matched TCP already).
func rejectReset() frag {
	return frag{"reject with tcp reset", []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}, false, 0}
}

// limitRate: limit rate N/second burst B packets.
func limitRate(rate uint64, burst uint32) frag {
	return frag{fmt.Sprintf("limit rate %d/second burst %d packets", rate, burst), []expr.Any{
		&expr.Limit{Type: expr.LimitTypePkts, Rate: rate, Unit: expr.LimitTimeSecond, Burst: burst},
	}, false, 0}
}

// nflog: log prefix "P" group G, the packet to NFLOG group G (read by package flowlog).
func nflog(prefix string, group uint16) frag {
	return frag{fmt.Sprintf("log prefix %q group %d", prefix, group), []expr.Any{&expr.Log{
		Key: 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_GROUP, Group: group, Data: []byte(prefix),
	}}, false, 0}
}

func verdict(k expr.VerdictKind, text string) frag {
	return frag{text, []expr.Any{&expr.Verdict{Kind: k}}, false, 0}
}

func accept() frag { return verdict(expr.VerdictAccept, "accept") }
func drop() frag   { return verdict(expr.VerdictDrop, "drop") }
func ret() frag    { return verdict(expr.VerdictReturn, "return") }

// dnat: dnat ip to A:P. As with nft, no nfproto dependency: in the inet family the kernel
// applies an IPv4 NAT to IPv4 packets only.
func dnat(a netip.Addr, port uint16) frag {
	ex := []expr.Any{
		&expr.Immediate{Register: 1, Data: ip4(a)},
		&expr.Immediate{Register: 2, Data: be16(port)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
	return frag{fmt.Sprintf("dnat ip to %s:%d", a, port), ex, false, 0}
}

func masquerade() frag { return frag{"masquerade", []expr.Any{&expr.Masq{}}, false, 0} }

// rule is one rule of a chain.
type rule struct {
	frags   []frag
	comment string // stored in the rule's userdata: `nft list` shows it
}

func newRule(comment string, fs ...frag) rule { return rule{frags: fs, comment: comment} }

func (r rule) text() string {
	parts := make([]string, 0, len(r.frags)+1)
	for _, f := range r.frags {
		parts = append(parts, f.text)
	}
	if r.comment != "" {
		parts = append(parts, fmt.Sprintf("comment %q", r.comment))
	}
	return strings.Join(parts, " ")
}

func (r rule) exprs() []expr.Any {
	var ex []expr.Any
	ipv4, l4 := false, map[byte]bool{}
	for _, f := range r.frags {
		if f.ipv4 && !ipv4 {
			ex, ipv4 = append(ex, nfprotoIPv4()...), true
		}
		if f.l4 != 0 && !l4[f.l4] {
			ex, l4[f.l4] = append(ex, meta(expr.MetaKeyL4PROTO), cmp(expr.CmpOpEq, []byte{f.l4})), true
		}
		ex = append(ex, f.exprs...)
	}
	return ex
}
