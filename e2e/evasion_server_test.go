package e2e

import (
	"bytes"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/testnet"
)

// What a server reads: the recorder of the evasion suite, and the suite's calibration, which
// sends each attempt straight to a recorder, with no gateway between, and checks that the
// server's TCP stack really reads the evil name from those packets. Without it a case could
// pass because the packets were nonsense to any server, not because the gateway stopped them.

// acceptFastOpen makes the servers of namespace ns take data on the SYN: TCP Fast Open
// without a cookie (0x1 client, 0x2 server, 0x200 no cookie needed, 0x400 every listener),
// the most a server could accept.
func acceptFastOpen(t testing.TB, ns string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_fastopen=0x603").CombinedOutput(); err != nil {
		t.Fatalf("sysctl tcp_fastopen in %s: %v: %s", ns, err, out)
	}
}

// TestFastPathEvasionServerView sends every attempt of the suite from an attacker namespace
// joined straight to the fake internet: the recorder must read the evil name wherever the
// case says a server does.
func TestFastPathEvasionServerView(t *testing.T) {
	testnet.RequireRoot(t)
	testnet.Require(t, haveCmd("ip"), "ip (iproute2)")
	testnet.Require(t, haveCmd("nft"), "nft")
	inet, _ := testnet.NewNetNS(t, "egt-inet")
	atk, _ := testnet.NewNetNS(t, "egt-atk")
	ipCmd(t, "link", "add", "atk0", "netns", atk, "type", "veth", "peer", "name", "atk1", "netns", inet)
	ipCmd(t, "-n", atk, "addr", "add", "198.18.1.2/30", "dev", "atk0")
	ipCmd(t, "-n", inet, "addr", "add", "198.18.1.1/30", "dev", "atk1")
	ipCmd(t, "-n", inet, "addr", "add", goodAddr+"/32", "dev", "lo")
	ipCmd(t, "-n", atk, "link", "set", "atk0", "up")
	ipCmd(t, "-n", inet, "link", "set", "atk1", "up")
	ipCmd(t, "-n", atk, "route", "add", "default", "via", "198.18.1.1")
	acceptFastOpen(t, inet)
	guardRawPorts(t, atk)
	rec := startRecorder(t, "/run/netns/"+inet, goodAddr+":443")
	h := newHellos(t)

	for _, tc := range evasionCases() {
		if tc.send == nil {
			continue
		}
		rec.Clear()
		t.Run(tc.name, func(t *testing.T) {
			c := newRawFlowIn(t, "/run/netns/"+atk, netip.MustParseAddr("198.18.1.2"), goodAddr+":443")
			if !tc.noHandshake {
				c.Handshake()
			}
			tc.send(h, c)
			evil := carriesEvil
			if !tc.serverReadsEvil {
				time.Sleep(500 * time.Millisecond) // for the log only
				t.Logf("the server read %v bytes (evil: %v)", lens(rec.Got()), slices.ContainsFunc(rec.Got(), evil))
				return
			}
			deadline := time.Now().Add(5 * time.Second)
			for !slices.ContainsFunc(rec.Got(), evil) {
				if time.Now().After(deadline) {
					t.Fatalf("the server never read the evil name: %v bytes; the client saw %s", lens(rec.Got()), c.Seen())
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// helloRecorder is a TCP server that keeps every byte each connection delivered, in order.
type helloRecorder struct {
	mu    sync.Mutex
	conns []*recConn // since the last Clear
	evil  []string   // every connection that ever delivered evilName: never cleared
}

// recConn is what one connection delivered, and its client's port: a flow the gateway's
// kernel forwarded keeps the sandbox's port (masquerading changes only the address), one
// the proxy dialled has a port of the gateway's.
type recConn struct {
	port uint16
	b    bytes.Buffer
}

func startRecorder(t *testing.T, nsPath, addr string) *helloRecorder {
	t.Helper()
	ln, err := netns.ListenIn(nsPath, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r := &helloRecorder{}
	served := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-served })
	go func() {
		defer close(served)
		testnet.ServeEach(ln, r.keep)
	}()
	return r
}

// keep reads c until it ends or goes quiet for 20 s (a server that never answers).
func (r *helloRecorder) keep(c net.Conn) {
	defer c.Close()
	rc := &recConn{port: uint16(c.RemoteAddr().(*net.TCPAddr).Port)}
	b := &rc.b
	r.mu.Lock()
	r.conns = append(r.conns, rc)
	r.mu.Unlock()
	buf := make([]byte, 4096)
	for {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := c.Read(buf)
		r.mu.Lock()
		b.Write(buf[:n])
		if carriesEvil(b.Bytes()) && !slices.Contains(r.evil, c.RemoteAddr().String()) {
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
	for _, rc := range r.conns {
		out = append(out, bytes.Clone(rc.b.Bytes()))
	}
	return out
}

// await waits (bound at most) for a connection since the last Clear, from port (0: any),
// whose bytes satisfy ok, and returns its port.
func (r *helloRecorder) await(bound time.Duration, port uint16, ok func([]byte) bool) (uint16, bool) {
	deadline := time.Now().Add(bound)
	for {
		r.mu.Lock()
		for _, rc := range r.conns {
			if (port == 0 || rc.port == port) && ok(rc.b.Bytes()) {
				r.mu.Unlock()
				return rc.port, true
			}
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			return 0, false
		}
		time.Sleep(50 * time.Millisecond)
	}
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

// carriesEvil reports whether a server reading b reads the evil name: in the bytes, or in
// the handshake messages that TLS records carry in pieces.
func carriesEvil(b []byte) bool {
	if bytes.Contains(b, []byte(evilName)) {
		return true
	}
	var hs []byte
	for len(b) >= 5 && b[0] == 22 {
		n := int(b[3])<<8 | int(b[4])
		if len(b) < 5+n {
			n = len(b) - 5
		}
		hs = append(hs, b[5:5+n]...)
		b = b[5+n:]
	}
	return bytes.Contains(hs, []byte(evilName))
}

// FuzzEvasionParsers: the suite's two readers (a received packet; the handshake bytes of TLS
// records) take any input without panicking, and a packet the raw client builds reads back.
func FuzzEvasionParsers(f *testing.F) {
	c := &rawFlow{src: netip.MustParseAddrPort("100.96.0.2:47001"), dst: netip.MustParseAddrPort(goodAddr + ":443")}
	built := c.segment(c.dst.Addr(), tcpACK|tcpPSH, 7, 9, nil, []byte("\x16\x03\x01\x00\x02hi"), 0, false)
	f.Add(built)
	inPieces := inRecords(append([]byte{22, 3, 1, 0, 21}, []byte("\x01\x00\x00\x11"+evilName)...), 3)
	if !carriesEvil(inPieces) || carriesEvil(bytes.ReplaceAll(inPieces, []byte("e"), []byte("E"))) {
		f.Fatal("carriesEvil does not read the name across records")
	}
	f.Add(inPieces)
	f.Add([]byte{0x45})
	f.Fuzz(func(t *testing.T, b []byte) {
		carriesEvil(b)
		parseSegment(b)
	})
	h, ok := parseSegment(built)
	if !ok || h.src != c.src || h.dst != c.dst || h.seq != 7 || h.flags != tcpACK|tcpPSH || h.payload != 7 {
		f.Fatalf("a built segment reads back as %+v, %v", h, ok)
	}
	if tcpChecksum(c.src.Addr(), c.dst.Addr(), built[20:]) != 0 {
		f.Fatal("the checksum of a built segment does not verify")
	}
}
