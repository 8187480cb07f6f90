package flowlog

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
)

// ipv4 builds an IPv4 packet: header of ihl words (options zero), then l4.
func ipv4(proto byte, src, dst string, ihl int, fragOff uint16, l4 []byte) []byte {
	h := make([]byte, ihl*4)
	h[0] = 0x40 | byte(ihl)
	binary.BigEndian.PutUint16(h[2:4], uint16(len(h)+len(l4)))
	binary.BigEndian.PutUint16(h[6:8], fragOff)
	h[8], h[9] = 64, proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	return append(h, l4...)
}

func ports(sport, dport uint16) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b, sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	return b
}

// message builds an NFULNL_MSG_PACKET message's data from attributes.
func message(t testing.TB, attrs ...netlink.Attribute) []byte {
	b, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{2, 0, 0x19, 0xa7}, b...)
}

func prefix(s string) netlink.Attribute {
	return netlink.Attribute{Type: nfulaPrefix, Data: append([]byte(s), 0)}
}
func payload(p []byte) netlink.Attribute {
	return netlink.Attribute{Type: nfulaPayload, Data: p}
}

func TestParsePacket(t *testing.T) {
	now := time.Unix(1700000000, 0)
	ts := make([]byte, 16)
	binary.BigEndian.PutUint64(ts, 1800000000)
	binary.BigEndian.PutUint64(ts[8:], 250000)
	tests := []struct {
		name  string
		attrs []netlink.Attribute
		want  Attempt
		err   bool
	}{
		{"tcp syn", []netlink.Attribute{prefix("deny"), payload(ipv4(6, "100.96.0.2", "203.0.113.10", 5, 0, ports(40000, 22)))},
			Attempt{Src: ip("100.96.0.2"), Dst: ip("203.0.113.10"), Proto: 6, SrcPort: 40000, Port: 22, Prefix: "deny", At: now}, false},
		{"udp with ip options and a timestamp", []netlink.Attribute{{Type: nfulaTimestamp, Data: ts}, prefix("monitor"),
			payload(ipv4(17, "100.96.0.6", "198.51.100.7", 15, 0, ports(5353, 9)))},
			Attempt{Src: ip("100.96.0.6"), Dst: ip("198.51.100.7"), Proto: 17, SrcPort: 5353, Port: 9, Prefix: "monitor",
				At: time.Unix(1800000000, 250000000)}, false},
		{"icmp echo", []netlink.Attribute{prefix("deny"), payload(ipv4(1, "100.96.0.2", "203.0.113.1", 5, 0, []byte{8, 0, 0, 0}))},
			Attempt{Src: ip("100.96.0.2"), Dst: ip("203.0.113.1"), Proto: 1, ICMPType: 8, Prefix: "deny", At: now}, false},
		{"ports cut off by the snap length", []netlink.Attribute{prefix("deny"), payload(ipv4(6, "100.96.0.2", "203.0.113.10", 5, 0, []byte{1, 2, 3}))},
			Attempt{Src: ip("100.96.0.2"), Dst: ip("203.0.113.10"), Proto: 6, Prefix: "deny", At: now}, false},
		{"a later fragment has no ports", []netlink.Attribute{prefix("deny"), payload(ipv4(6, "100.96.0.2", "203.0.113.10", 5, 185, ports(1, 2)))},
			Attempt{Src: ip("100.96.0.2"), Dst: ip("203.0.113.10"), Proto: 6, Prefix: "deny", At: now}, false},
		{"prefix without NUL, unknown attributes skipped", []netlink.Attribute{{Type: 99, Data: []byte{1}}, {Type: nfulaPrefix, Data: []byte("deny")},
			payload(ipv4(6, "100.96.0.2", "203.0.113.10", 5, 0, ports(1, 2)))},
			Attempt{Src: ip("100.96.0.2"), Dst: ip("203.0.113.10"), Proto: 6, SrcPort: 1, Port: 2, Prefix: "deny", At: now}, false},
		{"bad timestamp ignored", []netlink.Attribute{{Type: nfulaTimestamp, Data: []byte{1, 2}}, payload(ipv4(6, "100.96.0.2", "203.0.113.10", 5, 0, ports(1, 2)))},
			Attempt{Src: ip("100.96.0.2"), Dst: ip("203.0.113.10"), Proto: 6, SrcPort: 1, Port: 2, At: now}, false},
		{"no payload", []netlink.Attribute{prefix("deny")}, Attempt{}, true},
		{"ipv6 payload", []netlink.Attribute{payload(append([]byte{0x60}, make([]byte, 39)...))}, Attempt{}, true},
		{"short ipv4", []netlink.Attribute{payload(ipv4(6, "100.96.0.2", "203.0.113.10", 5, 0, nil)[:19])}, Attempt{}, true},
		{"ihl below 5", []netlink.Attribute{payload(func() []byte { p := ipv4(6, "100.96.0.2", "203.0.113.10", 5, 0, nil); p[0] = 0x44; return p }())}, Attempt{}, true},
		{"ihl beyond the bytes", []netlink.Attribute{payload(ipv4(6, "100.96.0.2", "203.0.113.10", 15, 0, nil)[:40])}, Attempt{}, true},
	}
	for _, tt := range tests {
		got, err := ParsePacket(message(t, tt.attrs...), now)
		if (err != nil) != tt.err {
			t.Errorf("%s: error %v, want error %v", tt.name, err, tt.err)
			continue
		}
		if got != tt.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tt.name, got, tt.want)
		}
	}
	for _, raw := range [][]byte{nil, {2, 0, 0}, {2, 0, 0, 0, 5, 0}, {2, 0, 0, 0, 200, 0, 9, 0}} {
		if _, err := ParsePacket(raw, now); err == nil {
			t.Errorf("ParsePacket(%x) accepted", raw)
		}
	}
	long := make([]byte, 1000)
	for i := range long {
		long[i] = 'x'
	}
	a, err := ParsePacket(message(t, netlink.Attribute{Type: nfulaPrefix, Data: long}, payload(ipv4(6, "100.96.0.2", "203.0.113.10", 5, 0, ports(1, 2)))), now)
	if err != nil || len(a.Prefix) != maxPrefixLen {
		t.Errorf("long prefix: %d bytes, %v", len(a.Prefix), err)
	}
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// FuzzParsePacket: whatever the bytes, ParsePacket does not panic, and what it accepts
// has IPv4 addresses and a bounded prefix; a packet built from fields parses back to them.
func FuzzParsePacket(f *testing.F) {
	f.Add([]byte{}, byte(6), uint16(22), byte(5), uint16(0), "deny")
	f.Add([]byte{0x45, 0}, byte(17), uint16(53), byte(15), uint16(0), "monitor")
	f.Add([]byte{2, 0, 0, 0, 8, 0, 9, 0, 0x45, 0, 0, 0}, byte(1), uint16(0), byte(6), uint16(1), "")
	f.Fuzz(func(t *testing.T, raw []byte, proto byte, port uint16, ihl byte, frag uint16, pfx string) {
		now := time.Unix(1, 0)
		for _, data := range [][]byte{raw, append([]byte{2, 0, 0, 0}, raw...)} {
			a, err := ParsePacket(data, now)
			if err == nil && (!a.Src.Is4() || !a.Dst.Is4() || len(a.Prefix) > maxPrefixLen) {
				t.Fatalf("accepted %x as %+v", data, a)
			}
		}
		ihl = 5 + ihl%11
		pkt := ipv4(proto, "100.96.0.2", "203.0.113.10", int(ihl), frag&0x1fff, ports(1234, port))
		var pb []byte
		if len(pfx) < maxPrefixLen && !containsNUL(pfx) {
			pb = append([]byte(pfx), 0)
		}
		a, err := ParsePacket(message(t, netlink.Attribute{Type: nfulaPrefix, Data: pb}, payload(pkt)), now)
		if err != nil {
			t.Fatalf("a well-formed packet refused: %v", err)
		}
		wantPort := uint16(0)
		if (proto == 6 || proto == 17) && frag&0x1fff == 0 {
			wantPort = port
		}
		if a.Src != ip("100.96.0.2") || a.Dst != ip("203.0.113.10") || a.Proto != proto || a.Port != wantPort ||
			(pb != nil && a.Prefix != pfx) {
			t.Fatalf("round trip: %+v (proto %d port %d frag %d prefix %q)", a, proto, port, frag, pfx)
		}
	})
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

func TestRepeats(t *testing.T) {
	t0 := time.Unix(1000, 0)
	syn := Attempt{Src: ip("100.96.0.2"), Dst: ip("203.0.113.10"), Proto: 6, SrcPort: 40000, Port: 22}
	other := syn
	other.SrcPort = 40001 // a new connection: a new attempt
	r := newRepeats(0)
	steps := []struct {
		a    Attempt
		at   time.Duration
		want bool
	}{
		{syn, 0, false}, {syn, time.Second, true}, {other, 2 * time.Second, false},
		{syn, 9 * time.Second, true}, {syn, 11 * time.Second, false}, {syn, 12 * time.Second, true},
	}
	for i, s := range steps {
		if got := r.repeat(s.a, t0.Add(s.at)); got != s.want {
			t.Errorf("step %d: repeat = %v, want %v", i, got, s.want)
		}
	}
	if off := newRepeats(-1); off.repeat(syn, t0) || off.repeat(syn, t0) {
		t.Error("a negative window suppressed an attempt")
	}
	// Bounded: a flood of distinct attempts never grows the map past maxRepeats.
	for i := 0; i < 3*maxRepeats; i++ {
		a := syn
		a.SrcPort = uint16(i)
		a.Port = uint16(i >> 16)
		r.repeat(a, t0.Add(13*time.Second))
		if len(r.last) > maxRepeats {
			t.Fatalf("%d entries", len(r.last))
		}
	}
}
