package nfqueue

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// nfnetlink_queue's message types, attributes and values (linux/netfilter/nfnetlink_queue.h).
const (
	nfqnlMsgPacket  = 0
	nfqnlMsgVerdict = 1
	nfqnlMsgConfig  = 2

	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2
	nfqaInDev      = 5
	nfqaOutDev     = 6
	nfqaPayload    = 10
	nfqaCapLen     = 13

	nfqaCfgCmd      = 1
	nfqaCfgParams   = 2
	nfqaCfgQueueMax = 3
	nfqaCfgMask     = 4
	nfqaCfgFlags    = 5

	nfqnlCfgCmdBind   = 1
	nfqnlCfgCmdUnbind = 2
	nfqnlCopyPacket   = 2
	nfqaCfgFFailOpen  = 1
	nfqaCfgFGSO       = 4
	nfqaCfgFMask      = nfqaCfgFFailOpen | nfqaCfgFGSO // the flags Open decides: both off

	nlaTypeMask   = 0x3fff // without NLA_F_NESTED and NLA_F_NET_BYTEORDER
	nlmsgHdrLen   = 16
	nfgenHdrLen   = 4 // struct nfgenmsg: family, version, res_id (be16)
	packetHdrLen  = 7 // struct nfqnl_msg_packet_hdr: __be32 id; __be16 hw_protocol; __u8 hook (packed)
	copyRange     = 0xffff
	defaultMaxLen = 4096
)

// The netlink message types of nfnetlink_queue: subsystem in the high byte.
const (
	typePacket  = uint16(netfilter.NFSubsysQueue)<<8 | nfqnlMsgPacket
	typeVerdict = uint16(netfilter.NFSubsysQueue)<<8 | nfqnlMsgVerdict
)

var (
	errShort     = errors.New("nfqueue: message too short")
	errNoHeader  = errors.New("nfqueue: packet message without NFQA_PACKET_HDR")
	errNoPayload = errors.New("nfqueue: packet message without payload")
	errCut       = errors.New("nfqueue: packet cut by the kernel (NFQA_CAP_LEN)")
)

// parsePacket reads one NFQNL_MSG_PACKET message's data (nfgenmsg and the attributes after
// it) into p. p.Payload aliases data: the caller copies it before data's buffer is reused.
// Every length is checked before it is read: the payload is the sandbox's packet.
func parsePacket(data []byte, p *Packet) error {
	*p = Packet{}
	if len(data) < nfgenHdrLen {
		return errShort
	}
	var hdr, capLen bool
	var origLen uint32
	err := walk(data[nfgenHdrLen:], func(typ uint16, b []byte) error {
		switch typ {
		case nfqaPacketHdr:
			if len(b) < packetHdrLen {
				return fmt.Errorf("nfqueue: packet header of %d bytes", len(b))
			}
			p.ID, p.Hook, hdr = binary.BigEndian.Uint32(b), b[6], true
		case nfqaPayload:
			p.Payload = b
		case nfqaInDev:
			p.InDev = be32(b)
		case nfqaOutDev:
			p.OutDev = be32(b)
		case nfqaCapLen:
			capLen, origLen = true, be32(b)
		}
		return nil
	})
	switch {
	case err != nil:
		return err
	case !hdr:
		return errNoHeader
	case p.Payload == nil:
		return errNoPayload
	case capLen && int(origLen) > len(p.Payload):
		return errCut
	}
	return nil
}

// walk calls fn for each netlink attribute of b with its type (flags cleared) and data.
// A length that runs past b or below the header is an error; padding may be absent after
// the last attribute.
func walk(b []byte, fn func(typ uint16, data []byte) error) error {
	for len(b) > 0 {
		if len(b) < unix.NLA_HDRLEN {
			return fmt.Errorf("nfqueue: %d trailing bytes after the attributes", len(b))
		}
		l := int(binary.NativeEndian.Uint16(b))
		if l < unix.NLA_HDRLEN || l > len(b) {
			return fmt.Errorf("nfqueue: attribute length %d of %d bytes", l, len(b))
		}
		if err := fn(binary.NativeEndian.Uint16(b[2:])&nlaTypeMask, b[unix.NLA_HDRLEN:l]); err != nil {
			return err
		}
		b = b[min(align4(l), len(b)):]
	}
	return nil
}

func align4(n int) int { return (n + 3) &^ 3 }

// be32 reads a __be32 attribute; a shorter one reads as 0 (the kernel never sends one).
func be32(b []byte) uint32 {
	if len(b) < 4 {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

// verdictLen is the size of a verdict message: nlmsghdr, nfgenmsg, NFQA_VERDICT_HDR.
const verdictLen = nlmsgHdrLen + nfgenHdrLen + 12

// putVerdict writes NFQNL_MSG_VERDICT for packet id of queue num into b (at least
// verdictLen bytes) and returns its length. The message carries no NFQA_CT: the
// conntrack glue that would apply it is missing on common kernels (see doc.go). It asks for no acknowledgement: the kernel
// answers only a failed verdict, with an NLMSG_ERROR that Run counts. Byte order: the
// netlink and attribute headers are the host's, the nfnetlink fields big-endian.
func putVerdict(b []byte, num uint16, id uint32, v Verdict) int {
	ne, be := binary.NativeEndian, binary.BigEndian
	ne.PutUint32(b[0:], verdictLen)
	ne.PutUint16(b[4:], typeVerdict)
	ne.PutUint16(b[6:], uint16(netlink.Request))
	ne.PutUint32(b[8:], 0)  // sequence: nothing waits for an answer
	ne.PutUint32(b[12:], 0) // port id 0: the kernel fills in the sender
	b[16], b[17] = unix.AF_UNSPEC, unix.NFNETLINK_V0
	be.PutUint16(b[18:], num)
	ne.PutUint16(b[20:], 12)
	ne.PutUint16(b[22:], nfqaVerdictHdr)
	be.PutUint32(b[24:], uint32(v)) // struct nfqnl_msg_verdict_hdr { __be32 verdict; __be32 id; }
	be.PutUint32(b[28:], id)
	return verdictLen
}

// configMessage binds queue num (or unbinds it) and, on bind, sets the whole packet to be
// copied, the queue length and the flags in the same message: packets queued between a
// bind and a later parameter message would come without payload.
func configMessage(num uint16, maxLen uint32, bind bool) (netlink.Message, error) {
	h := netfilter.Header{
		SubsystemID: netfilter.NFSubsysQueue,
		MessageType: nfqnlMsgConfig,
		Family:      unix.AF_UNSPEC,
		ResourceID:  num,
		Flags:       netlink.Request | netlink.Acknowledge,
	}
	// struct nfqnl_msg_config_cmd { __u8 command; __u8 _pad; __be16 pf; }: pf is unused
	// by a bind since Linux 3.8 (PF_BIND/PF_UNBIND are no-ops there too).
	if !bind {
		return netfilter.MarshalNetlink(h, []netfilter.Attribute{{Type: nfqaCfgCmd, Data: []byte{nfqnlCfgCmdUnbind, 0, 0, 0}}})
	}
	params := make([]byte, 5) // struct nfqnl_msg_config_params { __be32 copy_range; __u8 copy_mode; } packed
	binary.BigEndian.PutUint32(params, copyRange)
	params[4] = nfqnlCopyPacket
	// Flags: none. Not F_FAIL_OPEN (a full queue drops), not F_GSO (see doc.go), and not
	// F_CONNTRACK, which kernels without the conntrack glue refuse (see doc.go). The mask
	// names the flags that are set to 0 here: a kernel refuses a flag only when it is
	// both set and in the mask.
	return netfilter.MarshalNetlink(h, []netfilter.Attribute{
		{Type: nfqaCfgCmd, Data: []byte{nfqnlCfgCmdBind, 0, 0, unix.AF_INET}},
		{Type: nfqaCfgParams, Data: params},
		{Type: nfqaCfgQueueMax, Data: netfilter.Uint32Bytes(maxLen)},
		{Type: nfqaCfgFlags, Data: netfilter.Uint32Bytes(0)},
		{Type: nfqaCfgMask, Data: netfilter.Uint32Bytes(nfqaCfgFMask)},
	})
}
