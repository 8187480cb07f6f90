package e2e

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// The evasion suite of the kernel fast path (issue 16, DESIGN §4): a sandbox that is root in
// its namespace crafts the packets of a TLS flow (rawflow_test.go) so that a verifier reading
// the packets and the server's TCP stack could read two different ClientHellos: the verifier
// the allowed name, the server the denied one. Each case runs against the proxy path (which
// must block it today: its own TCP stack reassembles what the server would) and against
// --fast-path (whose verifier must reset the flow before a byte reaches the server).
//
// The fake internet has a recorder on 203.0.113.20 and .21 port 443 that keeps every byte
// each connection delivers. good.example.test answers .20, good2.example.test .21, and
// evil.example.test .20 too: a CDN address serving an allowed and a denied name. The policy
// allows the two good names on HTTPS; evil is not in it.
const (
	goodName  = "good.example.test"
	good2Name = "good2.example.test"
	evilName  = "evil.example.test" // as long as goodName: one hello becomes the other in place
	goodAddr  = "203.0.113.20"
	good2Addr = "203.0.113.21"
)

// evasionLab is the namespace lab with the recorders, a VM that looked the good names up,
// and the hellos the cases send.
type evasionLab struct {
	*gwLab
	fast bool
	vm   *client.VM
	rec  map[string]*helloRecorder // by address
	*hellos
}

// hellos are the ClientHellos the cases send: benign and evil are one ClientHello that
// differs only in the server name, at nameAt; bigBenign and bigEvil the same with a
// post-quantum key share (over 1,500 bytes).
type hellos struct {
	benign, evil       []byte
	bigBenign, bigEvil []byte
	nameAt             int
}

func newHellos(t *testing.T) *hellos {
	h := &hellos{}
	small := &tls.Config{ServerName: goodName, CurvePreferences: []tls.CurveID{tls.X25519}}
	h.benign, h.evil, h.nameAt = helloPair(t, small)
	h.bigBenign, h.bigEvil, _ = helloPair(t, &tls.Config{ServerName: goodName})
	if len(h.bigBenign) <= 1500 {
		t.Fatalf("the big ClientHello has %d bytes, want more than 1,500", len(h.bigBenign))
	}
	return h
}

func newEvasionLab(t *testing.T, m gwMode) *evasionLab {
	testnet.Require(t, haveCmd("nft"), "nft")
	e := &evasionLab{gwLab: newGWLab(t, m.args...), fast: m.fast(), rec: map[string]*helloRecorder{}}
	inet := "/run/netns/" + e.inetNS
	acceptFastOpen(t, e.inetNS)
	for _, a := range []string{goodAddr, good2Addr} {
		ipCmd(t, "-n", e.inetNS, "addr", "add", a+"/32", "dev", "lo")
		e.rec[a] = startRecorder(t, inet, a+":443")
	}
	e.dns.Set(goodName, goodAddr)
	e.dns.Set(good2Name, good2Addr)
	e.dns.Set(evilName, goodAddr)
	e.vm = e.sandbox("evade", true)

	e.hellos = newHellos(t)
	return e
}

// sandbox makes a VM allowed the two good names on HTTPS, ready for the raw client; lookup
// has it ask the gateway's DNS for them first, so that their addresses are answered.
func (e *evasionLab) sandbox(name string, lookup bool) *client.VM {
	e.t.Helper()
	vm := e.gwLab.vm(name, &policy.Policy{AllowHTTPS: true, AllowedDomains: []string{goodName, good2Name}})
	guardRawPorts(e.t, vm.Network.Netns)
	if lookup {
		e.lookup(vm, goodName, good2Name)
	}
	return vm
}

// helloPair captures a ClientHello for goodName and makes the evil one from it by writing
// evilName over the name: the two differ in those bytes only.
func helloPair(t *testing.T, cfg *tls.Config) (benign, evil []byte, nameAt int) {
	t.Helper()
	benign = testnet.ClientHello(t, cfg)
	if bytes.Count(benign, []byte(goodName)) != 1 {
		t.Fatalf("the ClientHello holds %q %d times, want once", goodName, bytes.Count(benign, []byte(goodName)))
	}
	nameAt = bytes.Index(benign, []byte(goodName))
	evil = bytes.Replace(benign, []byte(goodName), []byte(evilName), 1)
	return benign, evil, nameAt
}

// blocked checks the outcome of an evasion attempt, as tc describes it: no recorder got a
// byte (but of the benign hello, where tc.benignMay). With the fast path,
// the handshake it let through reached the server (the attempt was the fast path's to
// judge, not the proxy's), and the sandbox got a reset and egressd recorded a denial on
// port 443 with one of tc.reasons (any, if none), as far as tc.fastDrops and
// tc.fastUnjudged allow.
func (e *evasionLab) blocked(t *testing.T, c *rawFlow, since time.Time, tc evasionCase) {
	t.Helper()
	if e.fast && c.SawSYNAck() {
		if _, ok := e.rec[c.dst.Addr().String()].await(5*time.Second, c.src.Port(), func([]byte) bool { return true }); !ok {
			t.Errorf("the handshake from port %d did not reach the server: the flow did not take the fast path", c.src.Port())
		}
	}
	var reset bool
	if e.fast && !tc.fastDrops && !tc.fastUnjudged {
		if reset = c.WaitReset(10 * time.Second); !reset {
			t.Errorf("the sandbox got no reset: %s", c.Seen())
		}
	} else {
		// The proxy refuses, or forwards what it judged; the fast path drops what it never
		// reads: either way, the bytes that arrive are what counts.
		c.WaitEnd(3 * time.Second)
		reset = c.WaitReset(0)
	}
	for addr, r := range e.rec {
		for _, got := range r.Got() {
			benignMay := tc.benignMay && (!e.fast || tc.fastBenignMay)
			if len(got) > 0 && (!benignMay || !bytes.HasPrefix(e.benign, got)) {
				t.Errorf("the server at %s got %d bytes (evil name in them: %v): %q", addr, len(got), carriesEvil(got), got)
			}
		}
	}
	if e.fast && (reset || !tc.fastUnjudged) {
		reasons := tc.reasons
		evs := e.awaitEvents(t, 10*time.Second, client.EventsFilter{VMID: c.vmID, Decision: "deny", Since: since}, func(evs []client.Event) bool {
			return slices.ContainsFunc(evs, func(ev client.Event) bool {
				return ev.Port == 443 && (len(reasons) == 0 || slices.Contains(reasons, ev.Reason))
			})
		})
		for _, ev := range evs {
			t.Logf("denial: reason %s, rule %q, host %q, ip %s", ev.Reason, ev.Rule, ev.Host, ev.IP)
		}
	}
}

// allowed checks that a flow went through: the recorder at addr got exactly hello, the
// sandbox got no reset, and egressd recorded it as allowed. With the fast path, the kernel
// forwarded it (the server saw the sandbox's port, the record says "fast_path") unless
// viaProxy.
func (e *evasionLab) allowed(t *testing.T, c *rawFlow, addr string, hello []byte, viaProxy bool) {
	t.Helper()
	port, ok := e.rec[addr].await(10*time.Second, 0, func(b []byte) bool { return bytes.Equal(b, hello) })
	switch {
	case !ok:
		t.Errorf("the server at %s did not get the %d-byte hello: got %d connections %v; sandbox: %s", addr, len(hello), len(e.rec[addr].Got()), lens(e.rec[addr].Got()), c.Seen())
	case e.fast && !viaProxy && port != c.src.Port():
		t.Errorf("the hello came from port %d, not the sandbox's %d: the proxy forwarded it, not the fast path", port, c.src.Port())
	case e.fast && viaProxy && port == c.src.Port():
		t.Errorf("the hello came from the sandbox's port %d: the kernel forwarded it, not the proxy", port)
	}
	// The record of the flow says which path carried it.
	want := ""
	if e.fast && !viaProxy {
		want = "fast_path"
	}
	e.awaitEvents(t, 10*time.Second, client.EventsFilter{VMID: c.vmID, Kind: client.EventConnect, Decision: "allow", Since: c.started}, func(evs []client.Event) bool {
		return slices.ContainsFunc(evs, func(ev client.Event) bool { return ev.Host == goodName && ev.Via == want })
	})
	if c.WaitReset(0) {
		t.Errorf("the sandbox got a reset: %s", c.Seen())
	}
}

func lens(bs [][]byte) []int {
	var n []int
	for _, b := range bs {
		n = append(n, len(b))
	}
	return n
}

// clear forgets what the recorders got, before a case.
func (e *evasionLab) clear() {
	for _, r := range e.rec {
		r.Clear()
	}
}

// flow is a raw flow from the lab's VM to addr:443, its handshake done.
func (e *evasionLab) flow(t *testing.T, addr string) *rawFlow {
	t.Helper()
	c := newRawFlow(t, e.vm, addr+":443")
	c.Handshake()
	return c
}

// TestFastPathEvasion runs every case in both modes of the gateway (gwModes), each in a lab
// of its own: TestFastPathEvasion/proxy/<case> and TestFastPathEvasion/fast-path/<case>.
func TestFastPathEvasion(t *testing.T) { eachGWMode(t, runEvasion) }

func runEvasion(t *testing.T, m gwMode) {
	e := newEvasionLab(t, m)
	for _, tc := range evasionCases() {
		e.clear()
		t.Run(tc.name, func(t *testing.T) {
			switch {
			case tc.run != nil:
				tc.run(t, e)
			default:
				since := time.Now()
				c := newRawFlow(t, e.vm, goodAddr+":443")
				if !tc.noHandshake {
					c.Handshake()
				}
				tc.send(e.hellos, c)
				e.blocked(t, c, since, tc)
			}
		})
	}
	// Late bytes too: no connection to a recorder, in the whole run, delivered the evil name.
	for addr, r := range e.rec {
		if evil := r.Evil(); len(evil) > 0 {
			t.Errorf("the server at %s got the evil name from %v", addr, evil)
		}
	}
}

// evasionCase is one case of the suite: either an attempt over one flow to goodAddr, which
// must be blocked (send), or a case with checks of its own (run).
type evasionCase struct {
	name string
	// send sends the attempt, after the handshake unless noHandshake.
	send        func(h *hellos, c *rawFlow)
	noHandshake bool
	// benignMay: the server's own stack reads the benign hello from these packets, so the
	// proxy path, whose stack reads as the server's, may forward it. fastBenignMay: so may
	// the fast path, because the whole benign hello came first and was verified before
	// anything disagreed (the flow is reset at the disagreement, but the server has it).
	benignMay, fastBenignMay bool
	// serverReads: sent straight to a server, these packets deliver the evil name to it
	// (TestFastPathEvasionServerView shows it): that is what the gateway must stop.
	serverReadsEvil bool
	// reasons: the fast path's denial has one of these reasons (any, if empty).
	reasons []string
	// fastDrops: the fast path may refuse these packets by dropping them, without a reset
	// (a refused SYN: its conntrack entry, which would carry the refusal, never came to be).
	// fastUnjudged: its firewall may drop them before the verifier reads them (conntrack's
	// invalid state, TCP in IP fragments), so no denial is recorded either.
	fastDrops, fastUnjudged bool
	run                     func(t *testing.T, e *evasionLab)
}

// evasionCases are the cases of issue 16. The overlapping ones disagree on the name's first
// four bytes ("good" against "evil", at nameAt).
func evasionCases() []evasionCase {
	psh := func(off int, b []byte) seg { return seg{off: off, data: b, flags: tcpPSH} }
	// The reasons of the fast path's denials: packets that read more than one way, or a
	// name read whole and judged (docs/reasons.md).
	ambiguous, notAllowed := []string{"ambiguous_stream"}, []string{"host_not_allowed"}
	cases := []evasionCase{
		{name: "benign hello in one segment (control)", run: func(t *testing.T, e *evasionLab) {
			c := e.flow(t, goodAddr)
			c.Send(psh(0, e.benign))
			e.allowed(t, c, goodAddr, e.benign, false)
		}},
		{name: "benign hello over 1,500 bytes (control)", run: func(t *testing.T, e *evasionLab) {
			c := e.flow(t, goodAddr)
			c.SendStream(e.bigBenign, 1000)
			e.allowed(t, c, goodAddr, e.bigBenign, false)
		}},
		{name: "overlap, benign first", reasons: ambiguous, benignMay: true, send: func(h *hellos, c *rawFlow) {
			c.Send(psh(0, h.benign[:h.nameAt+4]))
			c.Send(psh(h.nameAt, h.evil[h.nameAt:]))
		}},
		{name: "overlap, evil first", reasons: ambiguous, serverReadsEvil: true, send: func(h *hellos, c *rawFlow) {
			c.Send(psh(0, h.evil[:h.nameAt+4]))
			c.Send(psh(h.nameAt, h.benign[h.nameAt:]))
		}},
		// The later segment first: the server queues it out of order, then trims it where
		// the earlier one, arriving second, overlaps it.
		{name: "out of order, evil in the later segment", reasons: ambiguous, benignMay: true, send: func(h *hellos, c *rawFlow) {
			c.Send(psh(h.nameAt, h.evil[h.nameAt:]))
			c.Send(psh(0, h.benign[:h.nameAt+4]))
		}},
		{name: "out of order, evil in the earlier segment", reasons: ambiguous, serverReadsEvil: true, send: func(h *hellos, c *rawFlow) {
			c.Send(psh(h.nameAt, h.benign[h.nameAt:]))
			c.Send(psh(0, h.evil[:h.nameAt+4]))
		}},
		// The benign hello is whole in the first segment: the fast path may verify it and
		// mark the flow before the retransmission arrives, which the kernel then forwards
		// and the server drops (it has those bytes): no reset, no record; or it is still
		// queued, and refused.
		{name: "retransmission with other bytes, benign first", reasons: ambiguous, benignMay: true, fastBenignMay: true, fastUnjudged: true, send: func(h *hellos, c *rawFlow) {
			c.Send(psh(0, h.benign))
			c.Send(psh(0, h.evil))
		}},
		// The same, pressed: the evil retransmission sent back to back, 2,000 times, so that
		// some arrive while the fast path marks the flow and lets the held benign segments
		// go; one that the kernel forwarded ahead of a benign segment would be what the
		// server reads. Five flows each, for the race's sake; the hello whole, and in two
		// segments sent in reverse (the second held while the first is let go).
		racing("retransmissions racing the verdict", func(h *hellos, c *rawFlow) []byte {
			c.Send(psh(0, h.benign))
			return h.evil
		}),
		racing("retransmissions racing the verdict, hello out of order", func(h *hellos, c *rawFlow) []byte {
			c.Send(psh(h.nameAt+4, h.benign[h.nameAt+4:]))
			c.Send(psh(0, h.benign[:h.nameAt+4]))
			return h.evil[:h.nameAt+4]
		}),
		{name: "retransmission with other bytes, evil first", reasons: append(ambiguous, notAllowed...), serverReadsEvil: true, send: func(h *hellos, c *rawFlow) {
			c.Send(psh(0, h.evil))
			c.Send(psh(0, h.benign))
		}},
		// The first bytes before the flow's first byte: a server trims what it already
		// counts as received (the SYN's sequence number and before) and reads the rest.
		{name: "a segment starting before the first byte", reasons: ambiguous, serverReadsEvil: true, send: func(h *hellos, c *rawFlow) {
			c.Send(psh(-5, append([]byte("xxxxx"), h.evil...)))
		}},
		// A second SYN with another ISN on an open flow: a server answers it with a
		// challenge ACK and keeps counting from the first, so it drops the benign hello
		// sent after the second ISN and reads the evil one sent after the first.
		{name: "a second SYN with another ISN", reasons: append(ambiguous, notAllowed...), serverReadsEvil: true, send: func(h *hellos, c *rawFlow) {
			isn := c.iss + 1<<30 | 1
			c.SecondSYN(isn)
			c.Send(seg{data: h.benign, flags: tcpPSH, isn: isn})
			c.Send(psh(0, h.evil))
		}},
		// PAWS (RFC 7323): with timestamps on, a server drops a segment whose TSval is older
		// than the last it took, and takes the evil one sent after, with a fresh TSval. The
		// pause lets a verifier that took the old segment judge it and mark the flow.
		{name: "a segment with an old timestamp (PAWS), then the evil one", noHandshake: true, reasons: ambiguous, serverReadsEvil: true, send: func(h *hellos, c *rawFlow) {
			c.UseTimestamps(1 << 24)
			c.Handshake()
			c.Send(seg{data: h.benign, flags: tcpPSH, tsval: 1})
			time.Sleep(300 * time.Millisecond)
			c.Send(psh(0, h.evil))
		}},
		// The same with the benign segment carrying no timestamp at all, on a flow that
		// agreed to them: whether a server takes it is the server's choice (RFC 7323 says
		// drop; the server view logs what Linux does).
		{name: "a segment without its timestamp, then the evil one", noHandshake: true, reasons: append(ambiguous, notAllowed...), benignMay: true, fastBenignMay: true, fastUnjudged: true, send: func(h *hellos, c *rawFlow) {
			c.UseTimestamps(1 << 24)
			c.Handshake()
			c.Send(seg{data: h.benign, flags: tcpPSH, noTS: true})
			time.Sleep(300 * time.Millisecond)
			c.Send(psh(0, h.evil))
		}},
		// A reset inside the window but not at the next byte: a server answers it with a
		// challenge ACK and keeps the connection (RFC 5961); a gateway that forgot the flow
		// on it must not let the evil hello through after.
		{name: "a reset the server ignores, then the evil hello", reasons: append(ambiguous, notAllowed...), fastDrops: true, fastUnjudged: true, serverReadsEvil: true, send: func(h *hellos, c *rawFlow) {
			c.Send(seg{off: 100, flags: tcpRST})
			time.Sleep(100 * time.Millisecond)
			c.Send(psh(0, h.evil))
		}},
		// A control: the gateway's stack and the servers drop a bad checksum (veth does not
		// vouch for one), as a server behind a real network does; the trick below needs it.
		{name: "bad checksum alone", fastUnjudged: true, reasons: ambiguous, send: func(h *hellos, c *rawFlow) {
			c.Send(seg{data: h.benign, flags: tcpPSH, badChecksum: true})
		}},
		// The checksum trick: the server drops the benign segment and takes the evil one.
		{name: "bad checksum on the benign hello, then the evil one", reasons: append(ambiguous, notAllowed...), serverReadsEvil: true, send: func(h *hellos, c *rawFlow) {
			c.Send(seg{data: h.benign, flags: tcpPSH, badChecksum: true})
			c.Send(psh(0, h.evil))
		}},
		// The recorders take data on the SYN (acceptFastOpen).
		{name: "data on the SYN (TCP Fast Open)", fastDrops: true, reasons: ambiguous, noHandshake: true, serverReadsEvil: true, send: func(h *hellos, c *rawFlow) {
			if c.SYN(h.evil) {
				c.Send(seg{})
			}
		}},
		// The IP payload (a 20-byte TCP header, then the hello) cut inside the name.
		{name: "IP fragments", fastUnjudged: true, reasons: append(ambiguous, notAllowed...), serverReadsEvil: true, send: func(h *hellos, c *rawFlow) {
			c.SendFragments(psh(0, h.evil), (20+h.nameAt+2)/8*8)
		}},
		{name: "40-byte segments past the bound", reasons: append(ambiguous, notAllowed...), serverReadsEvil: true, send: func(h *hellos, c *rawFlow) {
			c.SendStream(h.bigEvil, 40)
		}},
		{name: "hello over many records", reasons: append(ambiguous, notAllowed...), serverReadsEvil: true, send: func(h *hellos, c *rawFlow) {
			c.SendStream(inRecords(h.evil, 16), 1400)
		}},
		{name: "a second ClientHello behind the benign one", reasons: ambiguous, serverReadsEvil: true, send: func(h *hellos, c *rawFlow) {
			c.Send(psh(0, append(slices.Clone(h.benign), h.evil...)))
		}},
		// One byte more, marked urgent: a server takes it out of the stream (BSD urgent
		// pointer, the byte before it) and reads the evil hello.
		{name: "urgent data", reasons: ambiguous, serverReadsEvil: true, send: func(h *hellos, c *rawFlow) {
			c.Send(seg{data: append(slices.Clone(h.evil), 0), flags: tcpPSH | tcpURG, urg: uint16(len(h.evil) + 1)})
		}},
		{name: "same ports, another destination after a verified hello", run: func(t *testing.T, e *evasionLab) {
			c := e.flow(t, goodAddr)
			c.Send(psh(0, e.benign))
			e.allowed(t, c, goodAddr, e.benign, false)
			other := netip.MustParseAddr(good2Addr)
			c.SendTo(other, psh(len(e.benign), e.evil))
			c.SendTo(other, psh(0, e.evil))
			// Nothing to wait for but time: the packets go nowhere.
			time.Sleep(2 * time.Second)
			if got := e.rec[good2Addr].Got(); len(got) != 0 {
				t.Errorf("the server at %s got %v bytes", good2Addr, lens(got))
			}
			for _, got := range e.rec[goodAddr].Got() {
				if !bytes.Equal(got, e.benign) {
					t.Errorf("the server at %s got %q", goodAddr, got)
				}
			}
		}},
		{name: "allowed name to another allowed name's address", run: func(t *testing.T, e *evasionLab) {
			since := time.Now()
			c := e.flow(t, good2Addr)
			c.Send(psh(0, e.benign))
			if e.fast {
				e.blocked(t, c, since, evasionCase{reasons: []string{"address_not_resolved"}})
				return
			}
			// The proxy dials what it resolved itself for the name.
			e.allowed(t, c, goodAddr, e.benign, true)
			if got := e.rec[good2Addr].Got(); len(got) != 0 {
				t.Errorf("the server at %s got %v bytes", good2Addr, lens(got))
			}
		}},
		{name: "an address never answered goes to the proxy", run: func(t *testing.T, e *evasionLab) {
			vm := e.sandbox("unasked", false)
			c := newRawFlow(t, vm, goodAddr+":443")
			c.Handshake()
			c.Send(psh(0, e.benign))
			e.allowed(t, c, goodAddr, e.benign, true)
		}},
	}
	// The name split between two segments at each of its positions: the evil name is
	// refused at every split, the benign one goes through at every split (reassembly works).
	for i := 0; i <= len(goodName); i++ {
		cases = append(cases, evasionCase{name: fmt.Sprintf("evil name split at %d", i), reasons: notAllowed, serverReadsEvil: true, send: func(h *hellos, c *rawFlow) {
			c.Send(psh(0, h.evil[:h.nameAt+i]))
			c.Send(psh(h.nameAt+i, h.evil[h.nameAt+i:]))
		}}, evasionCase{name: fmt.Sprintf("benign name split at %d", i), run: func(t *testing.T, e *evasionLab) {
			c := e.flow(t, goodAddr)
			c.Send(psh(0, e.benign[:e.nameAt+i]))
			c.Send(psh(e.nameAt+i, e.benign[e.nameAt+i:]))
			e.allowed(t, c, goodAddr, e.benign, false)
		}})
	}
	return cases
}

// racing is a case of five flows that each send the benign hello (send) and then, 2,000
// times back to back, the evil bytes send returns at offset 0.
func racing(name string, send func(h *hellos, c *rawFlow) []byte) evasionCase {
	return evasionCase{name: name, run: func(t *testing.T, e *evasionLab) {
		tc := evasionCase{reasons: []string{"ambiguous_stream"}, benignMay: true, fastBenignMay: true, fastUnjudged: true}
		for i := 0; i < 5 && !t.Failed(); i++ {
			e.clear()
			since := time.Now()
			c := e.flow(t, goodAddr)
			evil := send(e.hellos, c)
			for j := 0; j < 2000; j++ {
				c.Send(seg{data: evil, flags: tcpPSH})
			}
			e.blocked(t, c, since, tc)
			c.Close()
		}
	}}
}

// inRecords cuts the handshake messages of hello (one TLS record) into records of at most
// size bytes each.
func inRecords(hello []byte, size int) []byte {
	hdr, body := hello[:5], hello[5:]
	var out []byte
	for len(body) > 0 {
		n := min(size, len(body))
		out = append(out, hdr[0], hdr[1], hdr[2], byte(n>>8), byte(n))
		out = append(out, body[:n]...)
		body = body[n:]
	}
	return out
}
