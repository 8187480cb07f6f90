package fastpath

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/host/fastpath/fastpathtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
)

// Addresses of DESIGN §10: a sandbox and a fake public server.
var (
	vmAddr  = netip.MustParseAddrPort("100.96.0.2:40000")
	srvAddr = netip.MustParseAddrPort("203.0.113.10:443")
	t0      = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

const (
	goodName = "good.test"
	evilName = "evil.test"
)

var (
	helloOnce            sync.Once
	goodHello, evilHello []byte
	bigGood, bigEvil     []byte
)

// hellos captures real ClientHellos from crypto/tls, once: small ones and ones over 4 KiB
// (the default post-quantum key share and many ALPN entries).
func hellos(t testing.TB) {
	helloOnce.Do(func() {
		goodHello = testnet.ClientHello(t, &tls.Config{ServerName: goodName})
		evilHello = testnet.ClientHello(t, &tls.Config{ServerName: evilName})
		var alpn []string
		for i := 0; len(alpn) < 120; i++ {
			alpn = append(alpn, fmt.Sprintf("protocol-%03d-padding-padding", i))
		}
		bigGood = testnet.ClientHello(t, &tls.Config{ServerName: goodName, NextProtos: alpn})
		bigEvil = testnet.ClientHello(t, &tls.Config{ServerName: evilName, NextProtos: alpn})
	})
}

// recorder keeps the verdicts and fails the test on a second verdict for one id.
type recorder struct {
	t     testing.TB
	got   map[uint32]Verdict
	order []uint32
}

func (r *recorder) SetVerdict(id uint32, v Verdict, f Flow) error {
	// Pass names its flow; Reset too, unless the packet has none (a fragment without
	// ports); Accept and Drop none.
	if (v == Pass && !f.Src.IsValid()) || ((v == Accept || v == Drop) && f.Src.IsValid()) {
		r.t.Errorf("packet %d: verdict %v with flow %v", id, v, f)
	}
	if old, ok := r.got[id]; ok {
		r.t.Errorf("packet %d: verdict %v after %v", id, v, old)
	}
	r.got[id] = v
	r.order = append(r.order, id)
	return nil
}

// judge allows goodName and records every call.
type judge struct{ calls []Hello }

func (j *judge) Judge(f Flow, h Hello) bool {
	j.calls = append(j.calls, h)
	return h.Err == nil && h.Name == goodName
}

// conn is one sandbox connection driven by a test.
type conn struct {
	t      testing.TB
	v      *Verifier
	r      *recorder
	j      *judge
	src    netip.AddrPort
	isn    uint32
	ack    uint32
	nextID *uint32 // shared by siblings
	now    time.Time
}

func newConn(t testing.TB, l Limits) *conn {
	r := &recorder{t: t, got: map[uint32]Verdict{}}
	j := &judge{}
	return &conn{t: t, v: New(r, j, l), r: r, j: j, src: vmAddr, isn: 1000, ack: 5000, nextID: new(uint32), now: t0}
}

// sibling is another connection on the same verifier.
func (c *conn) sibling(src string) *conn {
	d := *c
	d.src = netip.MustParseAddrPort(src)
	return &d
}

// send hands one packet to the verifier and returns its id.
func (c *conn) send(s fastpathtest.Segment) uint32 {
	if !s.Src.IsValid() {
		s.Src = c.src
	}
	if !s.Dst.IsValid() {
		s.Dst = srvAddr
	}
	return c.raw(s.Bytes())
}

func (c *conn) raw(b []byte) uint32 {
	*c.nextID++
	id := *c.nextID
	c.v.Handle(Packet{ID: id, Data: b}, c.now)
	return id
}

// fc is the connection as package fastpathtest makes its segments.
func (c *conn) fc() fastpathtest.Conn {
	return fastpathtest.Conn{Src: c.src, Dst: srvAddr, ISN: c.isn, Ack: c.ack}
}

func (c *conn) syn() uint32 {
	s := c.fc().SYN()
	s.Options = nil
	return c.send(s)
}

// data sends b at flow offset off, with ACK|PSH, after applying mods.
func (c *conn) data(off int, b []byte, mods ...func(*fastpathtest.Segment)) uint32 {
	s := c.fc().Data(off, b)
	s.Flags |= fastpathtest.PSH
	for _, m := range mods {
		m(&s)
	}
	return c.send(s)
}

func (c *conn) pureACK() uint32 {
	return c.send(c.fc().ACK())
}

// reply is a server's segment of the connection: from srvAddr to c.src, acknowledging n
// bytes of the client's (ack ISN+1+n), with flags (ACK if 0).
func (c *conn) reply(n int, flags uint8) uint32 {
	if flags == 0 {
		flags = fastpathtest.ACK
	}
	return c.send(fastpathtest.Segment{Src: srvAddr, Dst: c.src, Seq: c.ack - 1, Ack: c.isn + 1 + uint32(n), Flags: flags})
}

// verdicts is the verdict of each id, 0 for none yet.
func (c *conn) verdicts(ids ...uint32) []Verdict {
	out := make([]Verdict, len(ids))
	for i, id := range ids {
		out[i] = c.r.got[id]
	}
	return out
}

// refusal is the error of the judge's last call, nil if none or if it was a judgement.
func (c *conn) refusal() error {
	if len(c.j.calls) == 0 {
		return nil
	}
	return c.j.calls[len(c.j.calls)-1].Err
}

// judged are the names the judge was asked about (calls without Err).
func (c *conn) judged() []string {
	var n []string
	for _, h := range c.j.calls {
		if h.Err == nil {
			n = append(n, h.Name)
		}
	}
	return n
}

func wantErr(t testing.TB, got, want error) {
	t.Helper()
	if want == nil && got != nil || want != nil && !errors.Is(got, want) {
		t.Fatalf("refusal %v, want %v", got, want)
	}
}

// helloWithout is a ClientHello without a server name.
func helloWithout(t testing.TB) []byte {
	return testnet.ClientHello(t, &tls.Config{InsecureSkipVerify: true})
}

// ipSum is the IPv4 header checksum before complementing.
func ipSum(h []byte) uint16 { return uint16(checksum(0, h)) }
