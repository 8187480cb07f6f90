package e2e

import (
	"crypto/tls"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/host/firewall"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// Red-team cases of the kernel fast path (issue 16) that the evasion suite does not cover:
// attacks on the state the kernel keeps between flows (conntrack entries and their marks),
// rather than on the bytes of one flow.

// resetName is answered with resetAddr, where a server reads one TLS record per
// connection and then resets it (what a TLS server does with a hello it rejects while
// bytes are unread, or what a colluding server does on purpose).
const (
	resetName = "reset.example.test"
	resetAddr = "203.0.113.22"
)

// resetServer keeps what each connection delivered before the server reset it.
type resetServer struct {
	mu    sync.Mutex
	conns [][]byte
}

func startResetServer(t *testing.T, nsPath, addr string) *resetServer {
	t.Helper()
	ln, err := netns.ListenIn(nsPath, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &resetServer{}
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
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				rec, _ := readTLSRecord(c)
				s.mu.Lock()
				s.conns = append(s.conns, rec)
				s.mu.Unlock()
				c.(*net.TCPConn).SetLinger(0) // close with a reset
				c.Close()
			}()
		}
	}()
	return s
}

func (s *resetServer) got() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.conns)
}

// TestFastPathAdvReopenAfterServerReset: after the server resets a verified flow, conntrack
// keeps its entry (state CLOSE, for nf_conntrack_tcp_timeout_close) with its mark, and takes
// a new SYN of the same four-tuple as part of it (the reset was not the client's, no FIN
// was seen: the entry is reused, not replaced). The SYN still goes to the queue (no SYN
// passes by the mark), but egressd, which forgot the verified flow, takes it for a new one;
// if the mark survived the SYN, the new connection's data is established and marked
// MarkFast, and the kernel forwards a ClientHello egressd never read: here one for a
// name the policy does not allow. It must be reset, and the server must not read it.
func TestFastPathAdvReopenAfterServerReset(t *testing.T) {
	requireFastPath(t)
	testnet.Require(t, haveCmd("nft"), "nft")
	l := newGWLab(t, "--fast-path")
	ipCmd(t, "-n", l.inetNS, "addr", "add", resetAddr+"/32", "dev", "lo")
	srv := startResetServer(t, "/run/netns/"+l.inetNS, resetAddr+":443")
	l.dns.Set(resetName, resetAddr)
	vm := l.vm("reopen", &policy.Policy{AllowHTTPS: true, AllowedDomains: []string{resetName}})
	guardRawPorts(t, vm.Network.Netns)
	l.lookup(vm, resetName)

	x25519 := []tls.CurveID{tls.X25519}
	benign := testnet.ClientHello(t, &tls.Config{ServerName: resetName, CurvePreferences: x25519})
	evil := testnet.ClientHello(t, &tls.Config{ServerName: evilName, CurvePreferences: x25519})

	// 1. A verified flow, which the server resets once it has the hello.
	first := newRawFlow(t, vm, resetAddr+":443")
	first.Handshake()
	first.SendStream(benign, 1000)
	if !first.WaitReset(5 * time.Second) {
		t.Fatalf("the server did not reset the first flow: %s", first.Seen())
	}
	if got := srv.got(); len(got) != 1 || !slices.Equal(got[0], benign) {
		t.Fatalf("the server did not read the benign hello by the fast path: %d connections", len(got))
	}
	if n := l.fastConnects(vm, resetName); n == 0 {
		t.Fatal("the first flow did not take the fast path")
	}
	// 2. Past the verifier's memory of verified flows (2 s), within conntrack's of a
	// closed one (10 s by default): the same four-tuple, another ISN.
	time.Sleep(3 * time.Second)
	rawPort.Store(int32(first.src.Port()) - 1) // the next raw flow takes the same port
	second := newRawFlow(t, vm, resetAddr+":443")
	if second.src != first.src {
		t.Fatalf("the second flow is from %v, not %v", second.src, first.src)
	}
	if !second.SYN(nil) {
		t.Logf("no SYN-ACK for the reopened tuple (%s): refused at the SYN", second.Seen())
		return
	}
	second.Send(seg{})
	second.SendStream(evil, 1000)
	reset := second.WaitReset(5 * time.Second)
	for i, b := range srv.got() {
		if carriesEvil(b) {
			t.Errorf("connection %d: the server read the evil hello (%d bytes) the gateway never judged", i, len(b))
		}
	}
	if !reset {
		t.Errorf("the reopened flow with an unjudged hello was not reset: %s", second.Seen())
	}
}

// queueStats reads the fast queue's line of /proc/net/netfilter/nfnetlink_queue in the
// gateway's namespace: packets waiting for a verdict, and those the kernel dropped because
// the queue was full.
func queueStats(t *testing.T, ns string) (waiting, dropped int) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/netfilter/nfnetlink_queue").CombinedOutput()
	if err != nil {
		t.Fatalf("nfnetlink_queue in %s: %v: %s", ns, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 7 && f[0] == strconv.Itoa(int(firewall.DefaultFastQueue)) {
			waiting, _ = strconv.Atoi(f[2])
			dropped, _ = strconv.Atoi(f[5])
			return waiting, dropped
		}
	}
	t.Fatalf("no fast queue in %s: %s", ns, out)
	return 0, 0
}

// TestFastPathAdvOneSandboxCannotFillTheQueue: one sandbox opens many flows to an allowed
// address and holds in each as many one-byte pieces of a ClientHello as a flow may, never
// completing one. Every held packet waits in the kernel's fast queue, which all sandboxes
// share (4096 packets; full, the kernel drops): the sandbox must not fill it, or every
// other sandbox's new HTTPS connections are dropped for as long as it keeps at it.
func TestFastPathAdvOneSandboxCannotFillTheQueue(t *testing.T) {
	requireFastPath(t)
	e := newEvasionLab(t, gwMode{"fast-path", []string{"--fast-path"}})
	const flows, pieces = 140, 31 // 4340 packets, more than the queue's 4096
	var cs []*rawFlow
	for i := 0; i < flows; i++ {
		cs = append(cs, e.flow(t, goodAddr))
	}
	for _, c := range cs {
		for off := 0; off < pieces; off++ {
			c.Send(seg{off: off, data: e.benign[off : off+1], flags: tcpPSH})
		}
	}
	waiting, dropped := queueStats(t, e.gwNS)
	t.Logf("fast queue: %d packets waiting, %d dropped", waiting, dropped)
	if waiting >= 4096 || dropped > 0 {
		t.Errorf("one sandbox filled the shared queue: %d packets waiting, %d dropped", waiting, dropped)
	}
	// Another sandbox's connection meanwhile.
	other := e.sandbox("victim", true)
	c := newRawFlow(t, other, goodAddr+":443")
	c.Handshake()
	c.SendStream(e.benign, 1000)
	e.allowed(t, c, goodAddr, e.benign, false)
}
