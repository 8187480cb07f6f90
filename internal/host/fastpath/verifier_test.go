package fastpath

import (
	"encoding/binary"
	"slices"
	"testing"

	"github.com/egressd/egressd/internal/dataplane/sni"
	fp "github.com/egressd/egressd/internal/host/fastpath/fastpathtest"
)

const (
	A = Accept
	P = Pass
	D = Drop
	R = Reset
	C = Confirm
	H = Verdict(0) // held: no verdict yet
)

func ttl(n uint8) func(*fp.Segment)     { return func(s *fp.Segment) { s.TTL = n } }
func flags(f uint8) func(*fp.Segment)   { return func(s *fp.Segment) { s.Flags = f } }
func opts(o ...byte) func(*fp.Segment)  { return func(s *fp.Segment) { s.Options = o } }
func ackNum(a uint32) func(*fp.Segment) { return func(s *fp.Segment) { s.Ack = a } }
func badSum(s *fp.Segment)              { s.BadChecksum = true }
func tsOpt(val uint32) func(*fp.Segment) {
	return func(s *fp.Segment) { s.Options = fp.Timestamps(val, 7) }
}
func urgent(p uint16) func(*fp.Segment)  { return func(s *fp.Segment) { s.Urgent = p } }
func ipOpts(o ...byte) func(*fp.Segment) { return func(s *fp.Segment) { s.IPOptions = o } }
func fragment(off uint16) func(*fp.Segment) {
	return func(s *fp.Segment) { s.FragOffset, s.MoreFragments = off, off == 0 }
}

// records re-frames a ClientHello's handshake message into records of at most n bytes.
func records(hello []byte, n int) []byte {
	msg := hello[5:]
	var out []byte
	for len(msg) > 0 {
		k := min(n, len(msg))
		out = append(out, 0x16, 3, 1, byte(k>>8), byte(k))
		out = append(out, msg[:k]...)
		msg = msg[k:]
	}
	return out
}

// TestRules: one case per rule of the verifier, with hand-built packets.
func TestRules(t *testing.T) {
	hellos(t)
	g, e := goodHello, evilHello
	half := len(g) / 2
	withExtra := append(slices.Clone(g), 0x17, 3, 3, 0, 1, 0)
	// A second handshake message in the ClientHello's record.
	secondMsg := slices.Clone(g)
	secondMsg = append(secondMsg, 20, 0, 0, 0)
	binary.BigEndian.PutUint16(secondMsg[3:], uint16(len(secondMsg)-5))
	appData := records(g, 1<<14)
	appData[0] = 0x17
	twoRecords := records(g, 100)
	badSecondRecord := slices.Clone(twoRecords)
	badSecondRecord[105] = 0x15
	noSNI := helloWithout(t)
	md5 := append([]byte{19, 18}, make([]byte, 16)...)

	cases := []struct {
		name   string
		lim    Limits
		run    func(c *conn) []uint32
		want   []Verdict
		err    error    // the last refusal the judge heard of
		judged []string // names judged
	}{
		{"benign in one segment", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.pureACK(), c.data(0, g)}
		}, []Verdict{A, A, P}, nil, []string{goodName}},
		{"denied name", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, e), c.data(0, e)}
		}, []Verdict{A, R, D}, nil, []string{evilName}},
		{"benign in two segments", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g[:half]), c.data(half, g[half:])}
		}, []Verdict{A, P, P}, nil, []string{goodName}},
		{"out of order", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(half, g[half:]), c.data(0, g[:half])}
		}, []Verdict{A, P, P}, nil, []string{goodName}},
		{"duplicate with the same bytes", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g[:half]), c.data(0, g[:half]), c.data(10, g[10:half+5]), c.data(half, g[half:])}
		}, []Verdict{A, P, P, P, P}, nil, []string{goodName}},
		{"overlap with other bytes", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g[:half]), c.data(half-5, e[half-5:])}
		}, []Verdict{A, D, R}, ErrOverlap, nil},
		{"retransmission with other bytes", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g[:half]), c.data(0, e[:half])}
		}, []Verdict{A, D, R}, ErrOverlap, nil},
		{"bytes before the first data byte", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(-1, g)}
		}, []Verdict{A, R}, ErrOverlap, nil},
		{"multi-record hello", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, twoRecords)}
		}, []Verdict{A, P}, nil, []string{goodName}},
		{"non-handshake record inside the hello", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, badSecondRecord)}
		}, []Verdict{A, R}, sni.ErrMalformed, nil},
		{"SYN with data (Fast Open)", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.send(fp.Segment{Seq: c.isn, Flags: fp.SYN, Payload: g})}
		}, []Verdict{R}, ErrFastOpen, nil},
		{"SYN with FIN", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.send(fp.Segment{Seq: c.isn, Flags: fp.SYN | fp.FIN})}
		}, []Verdict{R}, ErrMalformed, nil},
		{"SYN retransmitted", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.syn(), c.data(0, g)}
		}, []Verdict{A, A, P}, nil, []string{goodName}},
		{"second SYN, other ISN", Limits{}, func(c *conn) []uint32 {
			a := c.syn()
			c.isn += 99
			return []uint32{a, c.syn(), c.data(0, g)}
		}, []Verdict{A, R, D}, ErrSecondSYN, nil},
		{"SYN after data", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g[:half]), c.syn()}
		}, []Verdict{A, D, R}, ErrSecondSYN, nil},
		{"data without SYN", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.data(0, g), c.data(0, g)}
		}, []Verdict{R, D}, ErrUnknownFlow, nil},
		{"bad TCP checksum", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g, badSum)}
		}, []Verdict{A, R}, ErrChecksum, nil},
		{"bad IPv4 checksum", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g, func(s *fp.Segment) { s.BadIPChecksum = true })}
		}, []Verdict{A, R}, ErrChecksum, nil},
		{"checksum trick", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g, badSum), c.data(0, e)}
		}, []Verdict{A, R, D}, ErrChecksum, nil},
		{"refused flow: a fragment or a bad checksum is dropped", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, e), c.data(0, g, fragment(0)), c.data(0, g, badSum)}
		}, []Verdict{A, R, D, D}, nil, []string{evilName}},
		{"verified flow: a bad checksum resets", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g), c.data(len(g), []byte("GET"), badSum)}
		}, []Verdict{A, P, R}, ErrChecksum, []string{goodName}},
		{"SYN-ACK from the sandbox", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.send(fp.Segment{Seq: c.isn, Ack: 1, Flags: fp.SYN | fp.ACK})}
		}, []Verdict{R}, ErrMalformed, nil},
		{"first fragment", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g, fragment(0))}
		}, []Verdict{A, R}, ErrFragment, nil},
		{"later fragment", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g, fragment(100))}
		}, []Verdict{A, R}, nil, nil},
		{"not TCP", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.send(fp.Segment{Protocol: 17, Payload: g})}
		}, []Verdict{D}, nil, nil},
		{"not IPv4", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.raw([]byte{0x60, 0, 0, 0})}
		}, []Verdict{D}, nil, nil},
		{"TCP header cut short, known flow", Limits{}, func(c *conn) []uint32 {
			b := c.syn()
			p := fp.Segment{Src: c.src, Dst: srvAddr, Flags: fp.ACK}.Bytes()
			p = p[:30]
			binary.BigEndian.PutUint16(p[2:], 30)
			p[10], p[11] = 0, 0
			binary.BigEndian.PutUint16(p[10:], ^ipSum(p[:20]))
			return []uint32{b, c.raw(p), c.data(0, g)}
		}, []Verdict{A, R, D}, ErrMalformed, nil},
		{"urgent flag", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g, flags(fp.ACK|fp.URG))}
		}, []Verdict{A, R}, ErrUrgent, nil},
		{"urgent pointer without the flag", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g, urgent(3))}
		}, []Verdict{A, R}, ErrUrgent, nil},
		{"RST drops what is held and ends the flow", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g[:half]), c.send(fp.Segment{Seq: c.isn + 1, Ack: c.ack, Flags: fp.RST | fp.ACK}), c.data(half, g[half:])}
		}, []Verdict{A, D, A, R}, ErrFIN, nil},
		{"FIN without data, then the last ACK, then data", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, nil, flags(fp.ACK|fp.FIN)), c.pureACK(), c.data(0, g)}
		}, []Verdict{A, A, A, R}, ErrFIN, nil},
		{"new connection on the tuple of a closed one", Limits{}, func(c *conn) []uint32 {
			a, b := c.syn(), c.data(0, nil, flags(fp.ACK|fp.FIN))
			c.isn += 5000
			return []uint32{a, b, c.syn(), c.data(0, g)}
		}, []Verdict{A, A, A, P}, nil, []string{goodName}},
		{"FIN after data", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g[:half]), c.data(half, nil, flags(fp.ACK|fp.FIN))}
		}, []Verdict{A, D, R}, ErrFIN, nil},
		{"FIN with the hello", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g, flags(fp.ACK|fp.FIN))}
		}, []Verdict{A, R}, ErrFIN, nil},
		{"past HelloBytes", Limits{HelloBytes: 100}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(50, g[50:150])}
		}, []Verdict{A, R}, ErrTooLarge, nil},
		{"record announces more than HelloBytes", Limits{HelloBytes: 100}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g[:5])}
		}, []Verdict{A, R}, ErrTooLarge, nil},
		{"too many segments", Limits{Segments: 3}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g[:1]), c.data(1, g[1:2]), c.data(2, g[2:3]), c.data(3, g[3:])}
		}, []Verdict{A, D, D, D, R}, ErrTooManySegments, nil},
		{"not TLS", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, []byte("GET / HTTP/1.1\r\n"))}
		}, []Verdict{A, R}, ErrNotTLS, nil},
		{"TLS record but not a ClientHello", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, []byte{0x16, 3, 1, 0, 4, 2, 0, 0, 0})}
		}, []Verdict{A, R}, ErrNotTLS, nil},
		{"application data record first", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, appData)}
		}, []Verdict{A, R}, ErrNotTLS, nil},
		{"bytes after the hello in its segment", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, withExtra)}
		}, []Verdict{A, R}, ErrBeyondHello, nil},
		{"bytes after the hello held first", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(len(g), []byte{0x17, 3, 3, 0, 1, 0}), c.data(0, g)}
		}, []Verdict{A, D, R}, ErrBeyondHello, nil},
		{"second handshake message in the hello's record", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, secondMsg)}
		}, []Verdict{A, R}, ErrBeyondHello, nil},
		{"no server name", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, noSNI)}
		}, []Verdict{A, R}, sni.ErrNoServerName, nil},
		{"lower TTL than the SYN", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g, ttl(3))}
		}, []Verdict{A, R}, ErrTTL, nil},
		{"segment without ACK", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g, flags(fp.PSH))}
		}, []Verdict{A, R}, ErrAck, nil},
		{"acknowledgement number changes", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.pureACK(), c.data(0, g, ackNum(c.ack+70000))}
		}, []Verdict{A, A, R}, ErrAck, nil},
		{"timestamps kept", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.send(fp.Segment{Seq: c.isn, Flags: fp.SYN, Options: fp.Timestamps(100, 0)}), c.data(0, nil, tsOpt(101)), c.data(0, g, tsOpt(101))}
		}, []Verdict{A, A, P}, nil, []string{goodName}},
		{"timestamp missing after the SYN's", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.send(fp.Segment{Seq: c.isn, Flags: fp.SYN, Options: fp.Timestamps(100, 0)}), c.data(0, g)}
		}, []Verdict{A, R}, ErrTimestamp, nil},
		{"timestamp older than one sent (PAWS)", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.send(fp.Segment{Seq: c.isn, Flags: fp.SYN, Options: fp.Timestamps(100, 0)}), c.data(0, nil, tsOpt(1<<20)), c.data(0, g, tsOpt(101))}
		}, []Verdict{A, A, R}, ErrTimestamp, nil},
		{"MD5 signature option", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g, opts(md5...))}
		}, []Verdict{A, R}, ErrOption, nil},
		{"MSS option after the SYN", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g, opts(2, 4, 5, 0xb4))}
		}, []Verdict{A, R}, ErrOption, nil},
		{"SYN options of a client", Limits{}, func(c *conn) []uint32 {
			o := append([]byte{2, 4, 5, 0xb4, 4, 2, 1, 3, 3, 7, 34, 2}, fp.Timestamps(5, 0)...)
			return []uint32{c.send(fp.Segment{Seq: c.isn, Flags: fp.SYN, Options: o}), c.data(0, g, tsOpt(6))}
		}, []Verdict{A, P}, nil, []string{goodName}},
		{"IP options", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g, ipOpts(7, 7, 4, 0))}
		}, []Verdict{A, R}, ErrOption, nil},
		{"flows per sandbox", Limits{FlowsPerVM: 1}, func(c *conn) []uint32 {
			d := c.sibling("100.96.0.2:40001")
			o := c.sibling("100.96.0.3:40001")
			return []uint32{c.syn(), d.syn(), o.syn()}
		}, []Verdict{A, R, A}, nil, nil},
		{"flows overall", Limits{Flows: 1}, func(c *conn) []uint32 {
			o := c.sibling("100.96.0.3:40001")
			return []uint32{c.syn(), o.syn()}
		}, []Verdict{A, R}, ErrLimit, nil},
		{"bytes per sandbox", Limits{BytesPerVM: 300}, func(c *conn) []uint32 {
			d := c.sibling("100.96.0.2:40001")
			return []uint32{c.syn(), d.syn(), c.data(0, g[:200]), d.data(0, g[:200])}
		}, []Verdict{A, A, H, R}, ErrLimit, nil},
		{"released: late duplicate, data after, other bytes", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g), c.data(0, g[:half]), c.data(len(g), []byte("GET")), c.data(0, e[:half])}
		}, []Verdict{A, P, A, A, R}, ErrOverlap, []string{goodName}},
		{"released: SYN again", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g), c.syn()}
		}, []Verdict{A, P, R}, ErrSecondSYN, []string{goodName}},
		// The server's side (server.go).
		{"server: SYN-ACK and a partial ACK accepted, the whole hello's ACK confirms", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g[:half]), c.data(half, g[half:]), c.reply(0, fp.SYN|fp.ACK), c.reply(half, 0), c.reply(len(g), 0)}
		}, []Verdict{A, P, P, A, A, C}, nil, []string{goodName}},
		{"server: an ACK past the hello (data after it) confirms", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g), c.data(len(g), []byte("GET")), c.reply(len(g)+3, 0)}
		}, []Verdict{A, P, A, C}, nil, []string{goodName}},
		{"server: an ACK behind the first byte does not confirm", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g), c.reply(-1, 0), c.reply(len(g)-1, 0)}
		}, []Verdict{A, P, A, A}, nil, []string{goodName}},
		{"server: no confirmation before the hello is judged", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g[:half]), c.reply(half, 0), c.data(half, g[half:])}
		}, []Verdict{A, P, D, P}, nil, []string{goodName}},
		{"server: packet without ACK does not confirm", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g), c.send(fp.Segment{Src: srvAddr, Dst: c.src, Ack: c.isn + 1 + uint32(len(g)), Flags: fp.PSH})}
		}, []Verdict{A, P, A}, nil, []string{goodName}},
		{"server: the racing retransmission after release is reset, not confirmed after", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g), c.data(0, e), c.reply(len(g), 0)}
		}, []Verdict{A, P, R, D}, ErrOverlap, []string{goodName}},
		{"server: confirmed flow: late client packets checked, server packets accepted", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g), c.reply(len(g), 0), c.reply(len(g), 0), c.data(0, g), c.data(0, e)}
		}, []Verdict{A, P, C, A, A, R}, ErrOverlap, []string{goodName}},
		{"server: unknown flow dropped, never reset", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.reply(10, 0), c.reply(0, fp.SYN|fp.ACK), c.send(fp.Segment{Src: srvAddr, Dst: c.src, Flags: fp.ACK, BadChecksum: true})}
		}, []Verdict{D, D, D}, nil, nil},
		{"server: a packet of an unverified flow dropped", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.reply(0, fp.SYN|fp.ACK), c.data(0, g)}
		}, []Verdict{A, D, P}, nil, []string{goodName}},
		{"server: a bad checksum is dropped, the flow goes on", Limits{}, func(c *conn) []uint32 {
			bad := fp.Segment{Src: srvAddr, Dst: c.src, Ack: c.isn + 1 + uint32(len(g)), Flags: fp.ACK, BadChecksum: true}
			return []uint32{c.syn(), c.data(0, g), c.send(bad), c.reply(len(g), 0)}
		}, []Verdict{A, P, D, C}, nil, []string{goodName}},
		{"server: RST forgets the flow", Limits{}, func(c *conn) []uint32 {
			return []uint32{c.syn(), c.data(0, g), c.reply(len(g), fp.RST|fp.ACK), c.reply(len(g), 0), c.data(len(g), []byte("GET"))}
		}, []Verdict{A, P, A, D, R}, ErrUnknownFlow, []string{goodName}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newConn(t, tc.lim)
			ids := tc.run(c)
			if got := c.verdicts(ids...); !slices.Equal(got, tc.want) {
				t.Errorf("verdicts %v, want %v", got, tc.want)
			}
			if tc.err != nil {
				wantErr(t, c.refusal(), tc.err)
			}
			if got := c.judged(); !slices.Equal(got, tc.judged) {
				t.Errorf("judged %q, want %q", got, tc.judged)
			}
			if len(c.r.got) != len(c.r.order) {
				t.Errorf("%d verdicts for %d packets", len(c.r.order), len(c.r.got))
			}
		})
	}
}
