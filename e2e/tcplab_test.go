package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/testnet"
)

// The allowed_tcp lab: the gateway lab (gwlab_test.go) plus TCP services that are not web,
// each on its own address of the fake internet, so that a test can tell which one a client
// reached:
//
//	git.test, gitmirror.test  203.0.113.22:22   a fake SSH server (gitmirror shares the address)
//	db.test                   203.0.113.32:5432 a fake PostgreSQL server
//	bulk.test                 203.0.113.40:9000 a byte source for the benchmarks
//	rebind.example.test       198.51.100.10:22  a fake SSH server on the private network
//	meta.example.test         169.254.169.254:22 a fake SSH server on the metadata address
//
// other.example.test (203.0.113.10) has only gwLab's counting listener on port 22.
const (
	gitAddr  = "203.0.113.22"
	dbAddr   = "203.0.113.32"
	bulkAddr = "203.0.113.40"
	// socksAddr is where egressd's SOCKS5 listener is put, inside the gateway namespace.
	socksAddr = "127.0.0.1:1080"
)

type tcpLab struct {
	*gwLab
	git, private, meta *fakeSSH
	db                 *fakePG
}

// newTCPLab starts the gateway lab with extraArgs and the services above.
func newTCPLab(t testing.TB, extraArgs ...string) *tcpLab {
	t.Helper()
	l := &tcpLab{gwLab: newGWLab(t, extraArgs...)}
	for _, a := range []string{gitAddr, dbAddr, bulkAddr} {
		ipCmd(t, "-n", l.inetNS, "addr", "add", a+"/32", "dev", "lo")
	}
	inet := testnet.In("/run/netns/" + l.inetNS)
	l.git = startFakeSSH(t, inet, gitAddr+":22")
	l.private = startFakeSSH(t, inet, privateAddr+":22")
	l.meta = startFakeSSH(t, inet, metaAddr+":22")
	l.db = startFakePG(t, inet, dbAddr+":5432")
	startBulk(t, inet, bulkAddr+":9000")
	l.dns.Set("git.test", gitAddr)
	l.dns.Set("gitmirror.test", gitAddr)
	l.dns.Set("db.test", dbAddr)
	l.dns.Set("bulk.test", bulkAddr)
	return l
}

// gwRun runs a command in the gateway namespace, where egressd's explicit proxy and SOCKS
// listener are (on 127.0.0.1), with no proxy variables; it returns the combined output and
// the exit code (-1: did not run, -2: timed out).
func (l *tcpLab) gwRun(timeout time.Duration, env []string, name string, args ...string) (string, int) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.gwNS, name}, args...)...)
	cmd.Env = append(cleanProxyEnv(), env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	if ctx.Err() != nil {
		code = -2
	}
	return string(out), code
}

// dialGW dials addr from the gateway namespace.
func (l *tcpLab) dialGW(addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return netns.DialIn("/run/netns/"+l.gwNS)(ctx, "tcp", addr)
}

// fakeSSH is an SSH server that does the banner exchange only: it sends its version line,
// records the client's, and closes, so that OpenSSH's ssh fails at key exchange ("connection
// closed"), after having sent its banner: the proof that it got there. A client that says
// fakeSSHProbe instead gets an echo of whatever it sends next, so that a test can hold a
// tunnel open and see bytes cross it.
type fakeSSH struct {
	conns   atomic.Int64
	mu      sync.Mutex
	banners []string
	open    map[net.Conn]bool
}

const (
	fakeSSHBanner = "SSH-2.0-egressd-fake\r\n"
	fakeSSHProbe  = "SSH-2.0-e2e-probe"
)

func startFakeSSH(t testing.TB, n testnet.Net, addr string) *fakeSSH {
	t.Helper()
	s := &fakeSSH{open: map[net.Conn]bool{}}
	ln, err := n.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("fake SSH on %s: %v", addr, err)
	}
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			s.mu.Lock()
			s.open[c] = true
			s.mu.Unlock()
			go s.serve(c)
		}
	}()
	return s
}

func (s *fakeSSH) serve(c net.Conn) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.open, c)
		s.mu.Unlock()
	}()
	c.SetDeadline(time.Now().Add(2 * time.Minute)) // bounded, whatever the client does
	if _, err := io.WriteString(c, fakeSSHBanner); err != nil {
		return
	}
	br := bufio.NewReaderSize(c, 512)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return
	}
	s.mu.Lock()
	banner := strings.TrimRight(string(line), "\r\n")
	s.banners = append(s.banners, banner)
	s.mu.Unlock()
	if banner == fakeSSHProbe {
		io.Copy(c, br)
	}
}

// Banners are the clients' version lines received so far.
func (s *fakeSSH) Banners() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.banners...)
}

// fakePG is a PostgreSQL server that turns every client away after its startup message: it
// declines SSL and GSS encryption ('N'), reads the startup packet, records the user and
// database, and answers an ErrorResponse whose message names them. psql prints that message:
// the proof that it reached this server by name.
type fakePG struct {
	mu       sync.Mutex
	startups []string // "user=... database=..."
}

// fakePGMessage is the start of the FATAL message the fake database answers with.
const fakePGMessage = "egressd fake database says hello to"

func startFakePG(t testing.TB, n testnet.Net, addr string) *fakePG {
	t.Helper()
	s := &fakePG{}
	ln, err := n.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("fake PostgreSQL on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

const (
	pgSSLRequest  = 80877103
	pgGSSRequest  = 80877104
	pgProtocol3_0 = 196608
)

func (s *fakePG) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	for i := 0; i < 3; i++ { // at most GSS, SSL, startup
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		size, code := binary.BigEndian.Uint32(hdr[:4]), binary.BigEndian.Uint32(hdr[4:])
		if size < 8 || size > 10000 {
			return
		}
		body := make([]byte, size-8)
		if _, err := io.ReadFull(c, body); err != nil {
			return
		}
		switch code {
		case pgSSLRequest, pgGSSRequest:
			c.Write([]byte{'N'})
		case pgProtocol3_0:
			params := map[string]string{}
			kv := strings.Split(string(body), "\x00")
			for j := 0; j+1 < len(kv); j += 2 {
				params[kv[j]] = kv[j+1]
			}
			who := "user=" + params["user"] + " database=" + params["database"]
			s.mu.Lock()
			s.startups = append(s.startups, who)
			s.mu.Unlock()
			c.Write(pgError("FATAL", "28000", fakePGMessage+" "+who))
			return
		default:
			return
		}
	}
}

// pgError is an ErrorResponse message.
func pgError(severity, code, msg string) []byte {
	var fields []byte
	for _, f := range []struct {
		k byte
		v string
	}{{'S', severity}, {'V', severity}, {'C', code}, {'M', msg}} {
		fields = append(append(append(fields, f.k), f.v...), 0)
	}
	fields = append(fields, 0)
	out := []byte{'E', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], uint32(4+len(fields)))
	return append(out, fields...)
}

// Startups are the "user=... database=..." of the startup messages received.
func (s *fakePG) Startups() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.startups...)
}

// startBulk serves the benchmarks: a client sends an 8-byte big-endian count, gets that many
// bytes, and the server closes.
func startBulk(t testing.TB, n testnet.Net, addr string) {
	t.Helper()
	ln, err := n.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("bulk server on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	chunk := make([]byte, 256<<10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Minute))
				var hdr [8]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				for left := binary.BigEndian.Uint64(hdr[:]); left > 0; {
					n := min(left, uint64(len(chunk)))
					if _, err := c.Write(chunk[:n]); err != nil {
						return
					}
					left -= n
				}
			}()
		}
	}()
}

// bulkGet asks the bulk server on c for n bytes and reads them all.
func bulkGet(c net.Conn, n uint64) (int64, error) {
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], n)
	if _, err := c.Write(hdr[:]); err != nil {
		return 0, err
	}
	return io.Copy(io.Discard, c)
}

// sessionCreds are the user and password of a session's proxy URL: its ID and token, which
// the SOCKS5 listener takes as RFC 1929 user name and password.
func sessionCreds(t testing.TB, proxyURL string) (string, string) {
	t.Helper()
	u, err := url.Parse(proxyURL)
	if err != nil || u.User == nil {
		t.Fatalf("proxy URL %q without credentials", proxyURL)
	}
	pw, _ := u.User.Password()
	return u.User.Username(), pw
}
