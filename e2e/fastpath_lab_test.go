package e2e

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/testnet"
)

// The pieces of BenchmarkFastPath (fastpath_bench_test.go) that are not the gateway lab
// itself: a bulk server that looks like TLS to whatever sits in the path, a TLS web server
// on a port the kernel forwards, the bare splice relay (a re-exec of this test binary in the
// gateway namespace), its client namespace, and the CPU counters of /proc.
//
// Addresses, beside gwLab's (gwlab_test.go):
//
//	bulk.example.test  203.0.113.11:443   TLS-fronted raw bulk server (proxy, fast path)
//	                   203.0.113.11:8443  the same, for the forwarded path
//	api.example.test   203.0.113.10:8443  TLS web server (lab CA), for the forwarded path
//	bare relay         198.18.1.1:443 → api.example.test's 203.0.113.10:443
//	                   198.18.1.1:8443 → 203.0.113.11:443, in the gateway namespace,
//	                   reached from a namespace of its own at 198.18.1.2 (no sandbox
//	                   interface, so none of egressd's rules apply to it)
const (
	fpBulkAddr   = "203.0.113.11"
	fpBulkName   = "bulk.example.test"
	fpWebName    = "api.example.test"
	fpAltPort    = "8443" // not 80/443: routed by the kernel for allowed_cidrs
	relayGWAddr  = "198.18.1.1"
	relayCliAddr = "198.18.1.2"
	// relayEnv, set in the environment of this test binary, makes TestMain run the bare
	// relay instead of the tests: "listen=upstream,listen=upstream".
	relayEnv = "EGRESSD_E2E_BARE_RELAY"
)

// fpBulkSize is what the bulk server writes per connection.
const fpBulkSize = 64 << 20

// addBulkServer gives the lab's fake internet the bulk name and its servers, and the web
// server on the alternative port; hello is the exact ClientHello each bulk client sends.
//
// The bulk server is "TLS-fronted raw": it reads one whole genuine ClientHello (a TLS
// record captured from crypto/tls, SNI bulk.example.test, the same bytes on every
// connection), checks it is byte for byte the one the client sent, then writes fpBulkSize
// raw bytes and closes. To the proxy and the fast path the flow starts as TLS to an allowed
// name, which is all they look at before relaying or forwarding; past the hello, bytes are
// bytes to them. Skipping the handshake and the record encryption keeps crypto out of the
// figure, so the bulk figures measure the data path of each design and nothing else.
func addBulkServer(t testing.TB, l *gwLab, hello []byte) {
	t.Helper()
	ipCmd(t, "-n", l.inetNS, "addr", "add", fpBulkAddr+"/32", "dev", "lo")
	l.dns.Set(fpBulkName, fpBulkAddr)
	inet := testnet.In("/run/netns/" + l.inetNS)
	for _, port := range []string{"443", fpAltPort} {
		ln, err := inet.Listen("tcp", net.JoinHostPort(fpBulkAddr, port))
		if err != nil {
			t.Fatalf("bulk server: %v", err)
		}
		t.Cleanup(func() { ln.Close() })
		go serveTLSFrontedRaw(ln, hello, fpBulkSize)
	}
	// The web server again, on a port that is not redirected to the proxy.
	ln, err := inet.Listen("tcp", net.JoinHostPort(webAddr, fpAltPort))
	if err != nil {
		t.Fatalf("web server on %s: %v", fpAltPort, err)
	}
	srv := &http.Server{Handler: testnet.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(tls.NewListener(ln, l.ca.ServerConfig()))
	t.Cleanup(func() { srv.Close() })
}

func serveTLSFrontedRaw(ln net.Listener, hello []byte, n int) {
	chunk := bytes.Repeat([]byte{'x'}, 256<<10)
	testnet.ServeEach(ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		got, err := readTLSRecord(c)
		if err != nil || !bytes.Equal(got, hello) {
			return // the client sees a short read and fails
		}
		for left := n; left > 0; {
			k, err := c.Write(chunk[:min(left, len(chunk))])
			if err != nil {
				return
			}
			left -= k
		}
	})
}

// readTLSRecord reads one TLS handshake record, header included.
func readTLSRecord(r io.Reader) ([]byte, error) {
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, err
	}
	if hdr[0] != 0x16 {
		return nil, fmt.Errorf("not a TLS handshake record: %#x", hdr[0])
	}
	rec := make([]byte, 5+int(binary.BigEndian.Uint16(hdr[3:5])))
	copy(rec, hdr)
	_, err := io.ReadFull(r, rec[5:])
	return rec, err
}

// bulkHelloConfig is the TLS configuration whose ClientHello the bulk clients send. Go's
// default key shares include a post-quantum one (X25519MLKEM768), so the hello is about
// 1.5 kB: more than one segment on a 1500-byte MTU, as with real clients today; the
// real-TLS connections of the conns benchmark send the same kind.
func bulkHelloConfig() *tls.Config {
	return &tls.Config{ServerName: fpBulkName, NextProtos: []string{"http/1.1"}}
}

// bulkFetch sends hello on c and reads until the server closes; it fails unless exactly
// want bytes came.
func bulkFetch(c net.Conn, hello []byte, want int64, buf []byte) error {
	defer c.Close()
	if _, err := c.Write(hello); err != nil {
		return fmt.Errorf("sending the ClientHello: %w", err)
	}
	var got int64
	for {
		n, err := c.Read(buf)
		got += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("after %d bytes: %w", got, err)
		}
	}
	if got != want {
		return fmt.Errorf("got %d bytes of %d", got, want)
	}
	return nil
}

// tlsGet makes one new connection to addr, completes a real TLS handshake for
// api.example.test (trusting the lab CA, no session resumption), sends GET / with HTTP/1.1
// and reads the whole answer.
func tlsGet(addr string, cfg *tls.Config) error {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", fpWebName)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != "hello from "+fpWebName+"\n" {
		return fmt.Errorf("answer %d %q, %v", resp.StatusCode, body, err)
	}
	return nil
}

// bareRelay is the relay process and the namespace its clients connect from.
type bareRelay struct {
	pid      int
	clientNS string // path of the client namespace
}

// startBareRelay makes a client namespace joined to the gateway namespace by a veth pair
// (198.18.1.2 ↔ 198.18.1.1) and runs the bare relay in the gateway namespace as a process
// of its own, so that its CPU can be read apart from egressd's and the benchmark's. The
// relay's upstream connections leave by the gateway's uplink address like egressd's, so
// the fake internet needs no route back to 198.18.1.0/30. The namespace goes when the test
// ends (and the veth pair with it); the relay is stopped by its PID, and also exits when its
// stdin closes, so that it cannot outlive this process.
func startBareRelay(t testing.TB, l *gwLab) *bareRelay {
	t.Helper()
	name, _ := testnet.NewNetNS(t, "egt-rc")
	ipCmd(t, "link", "add", "rly0", "netns", l.gwNS, "type", "veth", "peer", "name", "rly1", "netns", name)
	ipCmd(t, "-n", l.gwNS, "addr", "add", relayGWAddr+"/30", "dev", "rly0")
	ipCmd(t, "-n", name, "addr", "add", relayCliAddr+"/30", "dev", "rly1")
	ipCmd(t, "-n", l.gwNS, "link", "set", "rly0", "up")
	ipCmd(t, "-n", name, "link", "set", "rly1", "up")

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), relayEnv+"="+
		relayGWAddr+":443="+webAddr+":443,"+relayGWAddr+":8443="+fpBulkAddr+":443")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := netns.StartIn("/run/netns/"+l.gwNS, cmd); err != nil {
		t.Fatalf("starting the bare relay: %v", err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("it said %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("bare relay did not start: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bare relay not ready after 10s")
	}
	return &bareRelay{pid: cmd.Process.Pid, clientNS: "/run/netns/" + name}
}

// runBareRelayIfAsked is the relay process: when relayEnv is set, it listens on each listen
// address, relays every connection to its upstream and exits when stdin closes; it never
// returns then. The copy is io.Copy between two *net.TCPConn in each direction
// (TCPConn.ReadFrom), which Linux does with splice: no parsing, no decision, no buffer in
// user space. It is the floor of any design that terminates TCP in the gateway.
func runBareRelayIfAsked() {
	spec := os.Getenv(relayEnv)
	if spec == "" {
		return
	}
	for _, pair := range strings.Split(spec, ",") {
		listen, upstream, ok := strings.Cut(pair, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "bare relay: bad pair %q\n", pair)
			os.Exit(2)
		}
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bare relay: %v\n", err)
			os.Exit(1)
		}
		go testnet.ServeEach(ln, func(c net.Conn) { relayOne(c.(*net.TCPConn), upstream) })
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

func relayOne(down *net.TCPConn, upstream string) {
	defer down.Close()
	c, err := net.DialTimeout("tcp", upstream, 5*time.Second)
	if err != nil {
		return
	}
	up := c.(*net.TCPConn)
	defer up.Close()
	done := make(chan struct{})
	go func() {
		up.ReadFrom(down) // splice
		up.CloseWrite()
		close(done)
	}()
	down.ReadFrom(up) // splice
	down.CloseWrite()
	// The client closes once it has read the answer; a client that does not is cut.
	down.SetReadDeadline(time.Now().Add(30 * time.Second))
	<-done
}

// cpuTicks is USER_HZ, the unit of /proc's CPU counters on every Linux.
const cpuTicks = 100

// procCPU is the CPU seconds (user + system, all threads) the process pid has used.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: the fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// utime and stime are fields 14 and 15 of proc(5); f[0] is field 3 (state).
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return float64(ut+st) / cpuTicks, nil
}

// machineCPU is the non-idle CPU seconds of the whole machine since boot (/proc/stat):
// user, nice, system, irq, softirq and steal; guest time is already counted in user.
func machineCPU() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: first line %q", line)
	}
	var busy uint64
	for _, k := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		v, err := strconv.ParseUint(f[k], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += v
	}
	return float64(busy) / cpuTicks, nil
}
