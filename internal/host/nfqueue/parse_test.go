package nfqueue

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"reflect"
	"testing"
)

// Packet messages captured from the kernel (6.18, queue without conntrack, output hook):
// nfgenmsg, NFQA_PACKET_HDR, NFQA_IFINDEX_OUTDEV, NFQA_PAYLOAD (no padding after the last).
var captured = []string{
	// UDP 127.0.0.1:34354 → :9000 "accept me", id 1
	"0200000c0b0001000000000108000300080006000000000129000a004500002505074000401137bf7f0000017f0000018632232800119dc4616363657074206d65",
	// UDP "drop me", id 2
	"0200000c0b0001000000000208000300080006000000000127000a004500002305084000401137c07f0000017f00000186322328000fff2264726f70206d65",
	// TCP SYN to :9100, id 2
	"0200000e0b0001000000000208000300080006000000000138000a00450000347ac540004006c1fc7f0000017f000001e792238ca71972652e07ff728010003f373400000101080a7f0bebe000e38360",
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// attr is one netlink attribute, padded.
func attr(typ uint16, data []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// plus is a captured message (its last attribute unpadded) with attributes appended.
func plus(t testing.TB, msg string, attrs ...[]byte) []byte {
	b := unhex(t, msg)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return append(b, bytes.Join(attrs, nil)...)
}

func be(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// withOthers is a captured message with attributes the client does not read inserted
// before the payload: NFQA_MARK, NFQA_HWADDR, and a nested NFQA_CT with NFQA_CT_INFO as a
// queue bound with F_CONNTRACK would get (a tuple, CTA_STATUS, CTA_MARK). They are
// skipped whole.
func withOthers(t testing.TB) []byte {
	b := unhex(t, captured[0])
	const nested = 0x8000 // NLA_F_NESTED
	tuple := attr(1|nested, attr(1|nested, attr(1, []byte{127, 0, 0, 1})))
	ct := attr(11|nested, bytes.Join([][]byte{tuple, attr(3, be(0x188)), attr(8, be(7))}, nil))
	head, payload := b[:4+12+8], b[4+12+8:]
	return bytes.Join([][]byte{head, attr(3, be(5)), attr(9, make([]byte, 12)), ct, attr(12, be(2)), payload}, nil)
}

func TestParsePacket(t *testing.T) {
	udp := unhex(t, captured[0])
	tests := []struct {
		name string
		data []byte
		want Packet
		err  error
	}{
		{"captured UDP", udp, Packet{ID: 1, Hook: 3, OutDev: 1, Payload: udp[4+12+8+4:]}, nil},
		{"other attributes skipped", withOthers(t), Packet{ID: 1, Hook: 3, OutDev: 1, Payload: udp[4+12+8+4:]}, nil},
		{"in device", plus(t, captured[0], attr(nfqaInDev, be(9))),
			Packet{ID: 1, Hook: 3, InDev: 9, OutDev: 1, Payload: udp[4+12+8+4:]}, nil},
		{"whole despite a cap length", plus(t, captured[0], attr(nfqaCapLen, be(37))),
			Packet{ID: 1, Hook: 3, OutDev: 1, Payload: udp[4+12+8+4:]}, nil},
		{"cut", plus(t, captured[0], attr(nfqaCapLen, be(1000))), Packet{}, errCut},
		{"no payload", udp[:4+12+8], Packet{}, errNoPayload},
		{"no header", append(udp[:4:4], udp[4+12:]...), Packet{}, errNoHeader},
		{"short", udp[:3], Packet{}, errShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Packet
			err := parsePacket(tt.data, &p)
			if !errors.Is(err, tt.err) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if !bytes.Equal(p.Payload, tt.want.Payload) {
				t.Errorf("payload % x, want % x", p.Payload, tt.want.Payload)
			}
			p.Payload, tt.want.Payload = nil, nil
			if !reflect.DeepEqual(p, tt.want) {
				t.Errorf("got %+v, want %+v", p, tt.want)
			}
		})
	}
}

// Lengths that run past the message, or below an attribute header, are errors.
func TestParsePacketMalformed(t *testing.T) {
	udp := unhex(t, captured[0])
	for name, data := range map[string][]byte{
		"payload past the end":   udp[:len(udp)-1],
		"attribute length 2":     append(unhex(t, captured[0])[:24], 2, 0, 10, 0),
		"trailing bytes":         plus(t, captured[0], []byte{1, 2}),
		"short header":           append(udp[:4:4], attr(nfqaPacketHdr, []byte{0, 0, 0, 1, 8, 0})...),
		"attribute past the end": append(unhex(t, captured[0])[:24], 9, 0, 11, 0x80, 1, 2, 3, 4),
	} {
		var p Packet
		if err := parsePacket(data, &p); err == nil {
			t.Errorf("%s: parsed as %+v", name, p)
		}
	}
}

// The verdict message, byte for byte (host order for netlink headers; x86 and arm64 are
// little-endian).
func TestPutVerdict(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("golden bytes are little-endian")
	}
	for _, tt := range []struct {
		name string
		num  uint16
		id   uint32
		v    Verdict
		want string
	}{
		{"accept", 0x1234, 0xa0b0c0d, Accept,
			"20000000" + "0103" + "0100" + "00000000" + "00000000" + // nlmsghdr: 32 bytes, NFQNL_MSG_VERDICT, NLM_F_REQUEST
				"0000" + "1234" + // nfgenmsg: AF_UNSPEC, v0, queue 0x1234
				"0c000200" + "00000001" + "0a0b0c0d"}, // NFQA_VERDICT_HDR: NF_ACCEPT, id
		{"repeat", 5, 7, Repeat,
			"20000000" + "0103" + "0100" + "00000000" + "00000000" +
				"0000" + "0005" +
				"0c000200" + "00000004" + "00000007"}, // NF_REPEAT, and no NFQA_CT
		{"drop", 6568, 1, Drop,
			"20000000" + "0103" + "0100" + "00000000" + "00000000" +
				"0000" + "19a8" +
				"0c000200" + "00000000" + "00000001"},
	} {
		b := make([]byte, verdictLen+8) // the bytes after the message stay as they were
		n := putVerdict(b, tt.num, tt.id, tt.v)
		if got := hex.EncodeToString(b[:n]); got != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, got, tt.want)
		}
		if n != verdictLen || !bytes.Equal(b[n:], make([]byte, 8)) {
			t.Errorf("%s: %d bytes written: % x", tt.name, n, b)
		}
	}
}

// The bind message: command, params, length, flags and mask; the unbind message. The
// flags are all off, F_CONNTRACK (2) too, and the mask names F_FAIL_OPEN and F_GSO only.
func TestConfigMessage(t *testing.T) {
	for _, tt := range []struct {
		bind bool
		want map[uint16][]byte
	}{
		{true, map[uint16][]byte{
			nfqaCfgCmd:      {nfqnlCfgCmdBind, 0, 0, 2},
			nfqaCfgParams:   {0, 0, 0xff, 0xff, nfqnlCopyPacket},
			nfqaCfgQueueMax: be(100),
			nfqaCfgFlags:    be(0),
			nfqaCfgMask:     be(5),
		}},
		{false, map[uint16][]byte{nfqaCfgCmd: {nfqnlCfgCmdUnbind, 0, 0, 0}}},
	} {
		m, err := configMessage(3, 100, tt.bind)
		if err != nil {
			t.Fatal(err)
		}
		got := map[uint16][]byte{}
		if err := walk(m.Data[4:], func(typ uint16, b []byte) error { got[typ] = b; return nil }); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tt.want) || binary.BigEndian.Uint16(m.Data[2:]) != 3 {
			t.Errorf("bind %v: attributes % x, want % x; header % x", tt.bind, got, tt.want, m.Data[:4])
		}
	}
}

func TestParseProc(t *testing.T) {
	table := []byte("    3  12345     0 2 65535     0     0        4  1\n" +
		"   17  12346     2 2 65535    10     3      900  1\n")
	if q, u := parseProc(table, 17); q != 10 || u != 3 {
		t.Errorf("queue 17: %d %d", q, u)
	}
	if q, u := parseProc(table, 4); q != 0 || u != 0 {
		t.Errorf("absent queue: %d %d", q, u)
	}
	if q, u := parseProc([]byte("garbage\n1 2\n"), 1); q != 0 || u != 0 {
		t.Errorf("garbage: %d %d", q, u)
	}
}

// The parser never panics, never reads beyond its input, and a packet it accepts has a
// header and a payload within the message.
func FuzzParsePacket(f *testing.F) {
	for _, s := range captured {
		f.Add(unhex(f, s))
	}
	f.Add(withOthers(f))
	f.Add(plus(f, captured[0], attr(nfqaCapLen, be(1000))))
	f.Fuzz(func(t *testing.T, data []byte) {
		var p Packet
		if err := parsePacket(data, &p); err != nil {
			return
		}
		if p.Payload == nil || len(p.Payload) > len(data) {
			t.Fatalf("accepted %+v from %d bytes", p, len(data))
		}
	})
}

// Parsing allocates nothing: the payload aliases the message.
func TestParseAllocs(t *testing.T) {
	data := withOthers(t)
	var p Packet
	if n := testing.AllocsPerRun(100, func() { _ = parsePacket(data, &p) }); n != 0 {
		t.Errorf("%v allocations per parse", n)
	}
	var b [verdictLen]byte
	if n := testing.AllocsPerRun(100, func() { putVerdict(b[:], 1, 2, Accept) }); n != 0 {
		t.Errorf("%v allocations per verdict message", n)
	}
}

func BenchmarkParsePacket(b *testing.B) {
	data := withOthers(b)
	var p Packet
	b.ReportAllocs()
	for b.Loop() {
		_ = parsePacket(data, &p)
	}
}
