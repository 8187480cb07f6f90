package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// ctnetlink's message and attributes that FastMarker sends (linux/netfilter/nfnetlink_conntrack.h).
const (
	ctMsgNew        = 0  // IPCTNL_MSG_CT_NEW: without NLM_F_CREATE, an update of an entry
	ctaTupleOrig    = 1  // CTA_TUPLE_ORIG
	ctaMark         = 8  // CTA_MARK
	ctaMarkMask     = 21 // CTA_MARK_MASK
	ctaTupleIP      = 1  // CTA_TUPLE_IP
	ctaTupleProto   = 2  // CTA_TUPLE_PROTO
	ctaIPv4Src      = 1  // CTA_IP_V4_SRC
	ctaIPv4Dst      = 2  // CTA_IP_V4_DST
	ctaProtoNum     = 1  // CTA_PROTO_NUM
	ctaProtoSrcPort = 2  // CTA_PROTO_SRC_PORT
	ctaProtoDstPort = 3  // CTA_PROTO_DST_PORT
)

// ErrNoFlow is FastMarker.Mark's error when conntrack has no entry for the flow (it ended,
// was cut, or is not confirmed yet: a SYN still on its way).
var ErrNoFlow = errors.New("firewall: conntrack has no such flow")

// FastMarker sets the fast path's verdicts on flows, in the flow's conntrack entry, under
// a mask of the fast path's bits only, so that the other bits of the ct mark stay whatever
// other software put there: MarkFastWait on a flow egressd released (Release: its held
// packets then get NF_ACCEPT, and its packets, the server's too, keep coming to the queue),
// MarkFast once the server acknowledged the ClientHello (Confirm: the kernel forwards the
// rest), MarkFastDeny on one it refused (Mark; the held packet then gets NF_REPEAT and
// the forward chain resets it) or cut (Cut). The queue's verdict could carry the mark
// itself (NFQA_CT), but only on kernels with CONFIG_NETFILTER_NETLINK_GLUE_CT; an update
// through ctnetlink works on every kernel with conntrack's netlink interface (see doc.go).
//
// It keeps one netlink socket open, so that a verdict costs one request and its
// acknowledgement; calls are serialised. It is safe for concurrent use.
type FastMarker struct {
	mu sync.Mutex
	c  *netlink.Conn
}

// NewFastMarker opens a FastMarker in the current network namespace, or the one named by
// WithNetNSFd.
func NewFastMarker(opts ...Option) (*FastMarker, error) {
	o := collect(opts)
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: o.netnsFd})
	if err != nil {
		return nil, fmt.Errorf("firewall: fast marker: netlink: %w", err)
	}
	return &FastMarker{c: c}, nil
}

// Mark sets MarkFast (refused false) or MarkFastDeny (refused true) on the TCP flow from
// src to dst as the sandbox sent it (the original tuple: fast-path flows are routed, not
// DNATed), clearing the other fast-path marks. It returns ErrNoFlow when conntrack has no
// confirmed entry for it.
func (m *FastMarker) Mark(src, dst netip.AddrPort, refused bool) error {
	if refused {
		return m.set(src, dst, MarkFastDeny, markFastAll)
	}
	return m.set(src, dst, MarkFast, markFastAll)
}

// Release sets MarkFastWait on the flow from src to dst, clearing the other fast-path
// marks: its ClientHello was judged allowed, and the server's packets now go to the queue
// until one acknowledges it. ErrNoFlow as Mark.
func (m *FastMarker) Release(src, dst netip.AddrPort) error {
	return m.set(src, dst, MarkFastWait, markFastAll)
}

// Confirm sets MarkFast on a released flow from src to dst and clears MarkFastWait: the
// kernel forwards the rest. It leaves MarkFastDeny as it is, so that a flow cut (Cut)
// while it waited stays refused. ErrNoFlow as Mark.
func (m *FastMarker) Confirm(src, dst netip.AddrPort) error {
	return m.set(src, dst, MarkFast, MarkFast|MarkFastWait)
}

// Cut sets MarkFastDeny on a verified (or released) flow and keeps its MarkFast (or
// MarkFastWait): the kernel resets it from its next packet on, and the flow log still
// reports it, bytes and all, as a flow that was verified (its close record).
func (m *FastMarker) Cut(src, dst netip.AddrPort) error {
	return m.set(src, dst, MarkFastDeny, MarkFastDeny)
}

// set changes the flow's ct mark to (mark &^ mask) | value.
func (m *FastMarker) set(src, dst netip.AddrPort, value, mask uint32) error {
	msg, err := fastMarkMessage(src, dst, value, mask)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.c.Execute(msg); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%w: %s → %s", ErrNoFlow, src, dst)
		}
		return fmt.Errorf("firewall: mark flow %s → %s: %w", src, dst, err)
	}
	return nil
}

// Close closes the socket.
func (m *FastMarker) Close() error { return m.c.Close() }

// fastMarkMessage is the ctnetlink update that sets the bits value under mask in a flow's
// ct mark.
func fastMarkMessage(src, dst netip.AddrPort, value, mask uint32) (netlink.Message, error) {
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	if !s.Is4() || !d.Is4() {
		return netlink.Message{}, fmt.Errorf("firewall: mark flow %s → %s: not IPv4", src, dst)
	}
	s4, d4 := s.As4(), d.As4()
	tuple := netfilter.Attribute{Type: ctaTupleOrig, Nested: true, Children: []netfilter.Attribute{
		{Type: ctaTupleIP, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaIPv4Src, Data: s4[:]},
			{Type: ctaIPv4Dst, Data: d4[:]},
		}},
		{Type: ctaTupleProto, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaProtoNum, Data: []byte{unix.IPPROTO_TCP}},
			{Type: ctaProtoSrcPort, Data: binary.BigEndian.AppendUint16(nil, src.Port())},
			{Type: ctaProtoDstPort, Data: binary.BigEndian.AppendUint16(nil, dst.Port())},
		}},
	}}
	return netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink,
		MessageType: ctMsgNew,
		Family:      netfilter.ProtoIPv4,
		Flags:       netlink.Request | netlink.Acknowledge,
	}, []netfilter.Attribute{
		tuple,
		{Type: ctaMark, Data: binary.BigEndian.AppendUint32(nil, value)},
		{Type: ctaMarkMask, Data: binary.BigEndian.AppendUint32(nil, mask)},
	})
}
