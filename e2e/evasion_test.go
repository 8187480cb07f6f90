package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
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
	// benign and evil are one ClientHello that differs only in the server name, at nameAt;
	// bigBenign and bigEvil the same with a post-quantum key share (over 1,500 bytes).
	benign, evil       []byte
	bigBenign, bigEvil []byte
	nameAt             int
}

func newEvasionLab(t *testing.T, fast bool) *evasionLab {
	testnet.RequireRoot(t)
	testnet.Require(t, haveCmd("nft"), "nft")
	var args []string
	if fast {
		out, _ := exec.Command(egressdtest.Binary(t, "egressd"), "--help").CombinedOutput()
		testnet.Require(t, bytes.Contains(out, []byte("fast-path")), "egressd --fast-path (the kernel fast path, issue 16)")
		args = append(args, "--fast-path")
	}
	e := &evasionLab{gwLab: newGWLab(t, args...), fast: fast, rec: map[string]*helloRecorder{}}
	inet := "/run/netns/" + e.inetNS
	// The recorders take data on the SYN (TCP Fast Open without a cookie: 0x1 client, 0x2
	// server, 0x200 no cookie, 0x400 every listener), the most a server could accept.
	if out, err := exec.Command("ip", "netns", "exec", e.inetNS, "sysctl", "-qw", "net.ipv4.tcp_fastopen=0x603").CombinedOutput(); err != nil {
		t.Fatalf("sysctl tcp_fastopen in the fake internet: %v: %s", err, out)
	}
	for _, a := range []string{goodAddr, good2Addr} {
		ipCmd(t, "-n", e.inetNS, "addr", "add", a+"/32", "dev", "lo")
		e.rec[a] = startRecorder(t, inet, a+":443")
	}
	e.dns.Set(goodName, goodAddr)
	e.dns.Set(good2Name, good2Addr)
	e.dns.Set(evilName, goodAddr)
	e.vm = e.sandbox("evade", true)

	small := &tls.Config{ServerName: goodName, CurvePreferences: []tls.CurveID{tls.X25519}}
	e.benign, e.evil, e.nameAt = helloPair(t, small)
	e.bigBenign, e.bigEvil, _ = helloPair(t, &tls.Config{ServerName: goodName})
	if len(e.bigBenign) <= 1500 {
		t.Fatalf("the big ClientHello has %d bytes, want more than 1,500", len(e.bigBenign))
	}
	return e
}

// sandbox makes a VM allowed the two good names on HTTPS, ready for the raw client; lookup
// has it ask the gateway's DNS for them first, so that their addresses are answered.
func (e *evasionLab) sandbox(name string, lookup bool) *client.VM {
	e.t.Helper()
	vm := e.gwLab.vm(name, &policy.Policy{AllowHTTPS: true, AllowedDomains: []string{goodName, good2Name}})
	guardRawPorts(e.t, vm)
	if lookup {
		for name, want := range map[string]string{goodName: goodAddr, good2Name: good2Addr} {
			if got := lookupIn(e.t, vm, name); !slices.Equal(got, []string{want}) {
				e.t.Fatalf("the sandbox looked up %s: %v, want %s", name, got, want)
			}
		}
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

// lookupIn asks the gateway's DNS filter for name's A records from inside the VM.
func lookupIn(t testing.TB, vm *client.VM, name string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := netns.DialIn(vm.Network.Path)(ctx, "udp", net.JoinHostPort(vm.Network.Gateway, "53"))
	if err != nil {
		t.Fatalf("DNS from the sandbox: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	conn := &dns.Conn{Conn: c}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	if err := conn.WriteMsg(m); err != nil {
		t.Fatalf("DNS query for %s: %v", name, err)
	}
	r, err := conn.ReadMsg()
	if err != nil {
		t.Fatalf("DNS answer for %s: %v", name, err)
	}
	var addrs []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			addrs = append(addrs, a.A.String())
		}
	}
	return addrs
}

// helloRecorder is a TCP server that keeps every byte each connection delivered, in order.
type helloRecorder struct {
	mu    sync.Mutex
	conns []*bytes.Buffer // since the last Clear
	evil  []string        // every connection that ever delivered evilName: never cleared
}

func startRecorder(t *testing.T, nsPath, addr string) *helloRecorder {
	t.Helper()
	ln, err := netns.ListenIn(nsPath, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r := &helloRecorder{}
	var open sync.WaitGroup
	t.Cleanup(func() { ln.Close(); open.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			open.Add(1)
			go func() {
				defer open.Done()
				r.keep(c)
			}()
		}
	}()
	return r
}

// keep reads c until it ends or goes quiet for 20 s (a server that never answers).
func (r *helloRecorder) keep(c net.Conn) {
	defer c.Close()
	b := &bytes.Buffer{}
	r.mu.Lock()
	r.conns = append(r.conns, b)
	r.mu.Unlock()
	buf := make([]byte, 4096)
	for {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := c.Read(buf)
		r.mu.Lock()
		b.Write(buf[:n])
		if bytes.Contains(b.Bytes(), []byte(evilName)) && !slices.Contains(r.evil, c.RemoteAddr().String()) {
			r.evil = append(r.evil, c.RemoteAddr().String())
		}
		r.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Got returns what each connection since the last Clear delivered.
func (r *helloRecorder) Got() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]byte
	for _, b := range r.conns {
		out = append(out, bytes.Clone(b.Bytes()))
	}
	return out
}

func (r *helloRecorder) Clear() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conns = nil
}

func (r *helloRecorder) Evil() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.evil)
}

// awaitHello waits (10 s at most) until a connection to the recorder at addr delivered want,
// and reports whether one did.
func (e *evasionLab) awaitHello(addr string, want []byte) bool {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if slices.ContainsFunc(e.rec[addr].Got(), func(b []byte) bool { return bytes.Equal(b, want) }) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// blocked checks the outcome of an evasion attempt. With the fast path: the sandbox got a
// reset, no recorder got a byte, and egressd recorded a denial of the flow (when record).
// With the proxy: whatever reached a recorder is the start of the benign hello (the bytes
// the proxy judged), never a byte of the evil one.
func (e *evasionLab) blocked(t *testing.T, c *rawFlow, since time.Time, record bool) {
	t.Helper()
	if e.fast {
		if !c.WaitReset(10 * time.Second) {
			t.Errorf("the sandbox got no reset: %s", c.Seen())
		}
	} else {
		c.WaitEnd(3 * time.Second) // the proxy refuses, or forwards what it judged: either will do
	}
	for addr, r := range e.rec {
		for _, got := range r.Got() {
			if e.fast && len(got) > 0 || !bytes.HasPrefix(e.benign, got) && !bytes.HasPrefix(e.bigBenign, got) {
				t.Errorf("the server at %s got %d bytes (evil name in them: %v): %q", addr, len(got), bytes.Contains(got, []byte(evilName)), got)
			}
		}
	}
	if e.fast && record {
		evs := e.awaitEvents(t, 10*time.Second, client.EventsFilter{VMID: c.vmID, Decision: "deny", Since: since}, func(evs []client.Event) bool {
			return slices.ContainsFunc(evs, func(ev client.Event) bool { return ev.Port == 443 })
		})
		for _, ev := range evs {
			t.Logf("denial: reason %s, rule %q, host %q, ip %s", ev.Reason, ev.Rule, ev.Host, ev.IP)
		}
	}
}

// allowed checks that a flow went through: the recorder at addr got exactly hello, and the
// sandbox got no reset.
func (e *evasionLab) allowed(t *testing.T, c *rawFlow, addr string, hello []byte) {
	t.Helper()
	if !e.awaitHello(addr, hello) {
		t.Errorf("the server at %s did not get the %d-byte hello: got %d connections %v; sandbox: %s", addr, len(hello), len(e.rec[addr].Got()), lens(e.rec[addr].Got()), c.Seen())
	}
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

func modeName(fast bool) string {
	if fast {
		return "fast path"
	}
	return "proxy"
}

// evasionCase is one attempt: run sends it and checks the outcome.
type evasionCase struct {
	name string
	run  func(t *testing.T, e *evasionLab)
}

func TestFastPathEvasionProxy(t *testing.T) { runEvasion(t, false) }
func TestFastPathEvasionFast(t *testing.T)  { runEvasion(t, true) }

func runEvasion(t *testing.T, fast bool) {
	e := newEvasionLab(t, fast)
	for _, tc := range evasionCases() {
		e.clear()
		t.Run(tc.name, func(t *testing.T) { tc.run(t, e) })
	}
	// Late bytes too: no connection to a recorder, in the whole run, delivered the evil name.
	for addr, r := range e.rec {
		if evil := r.Evil(); len(evil) > 0 {
			t.Errorf("%s: the server at %s got the evil name from %v", modeName(fast), addr, evil)
		}
	}
}

// evasionCases are the attempts of issue 16's list. n is where the name starts in a hello:
// the overlapping cases disagree on the name's first bytes ("good" against "evil").
func evasionCases() []evasionCase {
	// attempt is a case that sends over one flow to goodAddr and must be blocked.
	attempt := func(name string, send func(e *evasionLab, c *rawFlow)) evasionCase {
		return evasionCase{name, func(t *testing.T, e *evasionLab) {
			since := time.Now()
			c := e.flow(t, goodAddr)
			send(e, c)
			e.blocked(t, c, since, true)
		}}
	}
	psh := func(off int, b []byte) seg { return seg{off: off, data: b, flags: tcpPSH} }
	cases := []evasionCase{
		{"benign hello in one segment (control)", func(t *testing.T, e *evasionLab) {
			c := e.flow(t, goodAddr)
			c.Send(psh(0, e.benign))
			e.allowed(t, c, goodAddr, e.benign)
		}},
		{"benign hello over 1,500 bytes (control)", func(t *testing.T, e *evasionLab) {
			c := e.flow(t, goodAddr)
			c.SendStream(e.bigBenign, 1000)
			e.allowed(t, c, goodAddr, e.bigBenign)
		}},
		attempt("overlap, benign first", func(e *evasionLab, c *rawFlow) {
			c.Send(psh(0, e.benign[:e.nameAt+4]))
			c.Send(psh(e.nameAt, e.evil[e.nameAt:]))
		}),
		attempt("overlap, evil first", func(e *evasionLab, c *rawFlow) {
			c.Send(psh(0, e.evil[:e.nameAt+4]))
			c.Send(psh(e.nameAt, e.benign[e.nameAt:]))
		}),
		// The later segment first: the server queues it out of order, then trims it where
		// the earlier one, arriving second, overlaps it.
		attempt("out of order, evil in the later segment", func(e *evasionLab, c *rawFlow) {
			c.Send(psh(e.nameAt, e.evil[e.nameAt:]))
			c.Send(psh(0, e.benign[:e.nameAt+4]))
		}),
		attempt("out of order, evil in the earlier segment", func(e *evasionLab, c *rawFlow) {
			c.Send(psh(e.nameAt, e.benign[e.nameAt:]))
			c.Send(psh(0, e.evil[:e.nameAt+4]))
		}),
		attempt("retransmission with other bytes, benign first", func(e *evasionLab, c *rawFlow) {
			c.Send(psh(0, e.benign))
			c.Send(psh(0, e.evil))
		}),
		attempt("retransmission with other bytes, evil first", func(e *evasionLab, c *rawFlow) {
			c.Send(psh(0, e.evil))
			c.Send(psh(0, e.benign))
		}),
		// The checksum trick: a server drops the benign segment and takes the evil one.
		attempt("bad checksum on the benign hello, then the evil one", func(e *evasionLab, c *rawFlow) {
			c.Send(seg{data: e.benign, flags: tcpPSH, badChecksum: true})
			c.Send(psh(0, e.evil))
		}),
		{"data on the SYN (TCP Fast Open)", func(t *testing.T, e *evasionLab) {
			since := time.Now()
			c := newRawFlow(t, e.vm, goodAddr+":443")
			if c.SYN(e.evil) {
				c.Send(seg{})
			}
			e.blocked(t, c, since, true)
		}},
		// The TCP header (20 bytes) and data cut inside the name.
		attempt("IP fragments", func(e *evasionLab, c *rawFlow) {
			c.SendFragments(psh(0, e.evil), (20+e.nameAt+2)/8*8)
		}),
		attempt("40-byte segments past the bound", func(e *evasionLab, c *rawFlow) {
			c.SendStream(e.bigEvil, 40)
		}),
		attempt("hello over many records", func(e *evasionLab, c *rawFlow) {
			c.SendStream(inRecords(e.evil, 16), 1400)
		}),
		attempt("a second ClientHello behind the benign one", func(e *evasionLab, c *rawFlow) {
			c.Send(psh(0, append(slices.Clone(e.benign), e.evil...)))
		}),
		attempt("urgent data", func(e *evasionLab, c *rawFlow) {
			c.Send(seg{data: e.evil, flags: tcpPSH | tcpURG, urg: uint16(e.nameAt + 1)})
		}),
		{"same ports, another destination after a verified hello", func(t *testing.T, e *evasionLab) {
			c := e.flow(t, goodAddr)
			c.Send(psh(0, e.benign))
			if !e.awaitHello(goodAddr, e.benign) {
				t.Fatalf("the benign hello did not arrive: %s", c.Seen())
			}
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
		{"allowed name to another allowed name's address", func(t *testing.T, e *evasionLab) {
			since := time.Now()
			c := e.flow(t, good2Addr)
			c.Send(psh(0, e.benign))
			if e.fast {
				e.blocked(t, c, since, true)
				return
			}
			// The proxy dials what it resolved itself for the name.
			e.allowed(t, c, goodAddr, e.benign)
			if got := e.rec[good2Addr].Got(); len(got) != 0 {
				t.Errorf("the server at %s got %v bytes", good2Addr, lens(got))
			}
		}},
		{"an address never answered goes to the proxy", func(t *testing.T, e *evasionLab) {
			vm := e.sandbox("unasked", false)
			c := newRawFlow(t, vm, goodAddr+":443")
			c.Handshake()
			c.Send(psh(0, e.benign))
			e.allowed(t, c, goodAddr, e.benign)
		}},
	}
	// The name split between two segments at each of its positions: the evil name is
	// refused at every split, the benign one goes through at every split (reassembly works).
	for i := 0; i <= len(goodName); i++ {
		cases = append(cases, attempt(fmt.Sprintf("evil name split at %d", i), func(e *evasionLab, c *rawFlow) {
			c.Send(psh(0, e.evil[:e.nameAt+i]))
			c.Send(psh(e.nameAt+i, e.evil[e.nameAt+i:]))
		}), evasionCase{fmt.Sprintf("benign name split at %d", i), func(t *testing.T, e *evasionLab) {
			c := e.flow(t, goodAddr)
			c.Send(psh(0, e.benign[:e.nameAt+i]))
			c.Send(psh(e.nameAt+i, e.benign[e.nameAt+i:]))
			e.allowed(t, c, goodAddr, e.benign)
		}})
	}
	return cases
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
