package fleettest

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/egressdtest"
)

func TestMain(m *testing.M) { egressdtest.Main(m) }

// node is one egressd process. egressdtest.Start expects every instance to create its own
// admin key, but in a fleet only the first node to start does; so nodes are started here,
// with the same binary.
type node struct {
	t         testing.TB
	name      string
	URL       string // the API's (or, for a gateway, the ops endpoints') base URL
	ProxyAddr string
	DataDir   string

	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	log    bytes.Buffer
}

// startNode runs egressd with free loopback ports and its own data directory, plus args, and
// waits until /healthz answers. It is stopped when the test ends; its log is printed if the
// test failed.
func startNode(t testing.TB, name string, args ...string) *node {
	t.Helper()
	// FreePort's ports were free a moment ago; another process may take one before egressd
	// binds it, so that collision is retried on new ports, a few times at most.
	for attempt := 0; attempt < 5; attempt++ {
		if n := startNodeOnce(t, name, args...); n != nil {
			return n
		}
	}
	t.Fatalf("egressd %s could not bind free ports in 5 attempts", name)
	return nil
}

// startNodeOnce is one try of startNode; it returns nil when a port was taken.
func startNodeOnce(t testing.TB, name string, args ...string) *node {
	t.Helper()
	n := &node{t: t, name: name, ProxyAddr: egressdtest.FreePort(t), DataDir: filepath.Join(t.TempDir(), name)}
	apiAddr := egressdtest.FreePort(t)
	n.URL = "http://" + apiAddr
	all := append([]string{
		"--api-listen", apiAddr,
		"--proxy-listen", n.ProxyAddr,
		"--data-dir", n.DataDir,
		"--api-rate-limit", "0",
	}, args...)
	n.cmd = exec.Command(egressdtest.Binary(t, "egressd"), all...)
	n.cmd.Stdout, n.cmd.Stderr = n, n
	n.cmd.Env = cleanEnv()
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start egressd %s: %v", name, err)
	}
	n.exited = make(chan struct{})
	go func() { n.cmd.Wait(); close(n.exited) }()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("egressd %s log:\n%s", name, n.Log())
		}
	})
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-n.exited:
			if strings.Contains(n.Log(), "address already in use") {
				return nil
			}
			t.Fatalf("egressd %s exited at start:\n%s", name, n.Log())
		default:
		}
		if code, _ := n.get("/healthz"); code == http.StatusOK {
			return n
		}
	}
	t.Fatalf("egressd %s did not answer /healthz in 20s:\n%s", name, n.Log())
	return nil
}

// Write collects the process's output.
func (n *node) Write(p []byte) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.log.Write(p)
}

// Log is what the process has written so far.
func (n *node) Log() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.log.String()
}

func (n *node) stop() {
	select {
	case <-n.exited:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
}

// AdminKey is the key the node wrote to its data directory (only the first API node does).
func (n *node) AdminKey() string {
	n.t.Helper()
	b, err := os.ReadFile(filepath.Join(n.DataDir, "admin.key"))
	if err != nil {
		n.t.Fatalf("egressd %s: admin key: %v", n.name, err)
	}
	return strings.TrimSpace(string(b))
}

// get fetches path from the node's API address and returns the status and body (0 when
// the request failed).
func (n *node) get(path string) (int, string) {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(n.URL + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// cleanEnv drops EGRESSD_* variables of the developer's shell, which would change flags.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EGRESSD_") {
			env = append(env, kv)
		}
	}
	return env
}

// forwarder relays TCP connections from a loopback port to a target (the PostgreSQL
// server), and can be taken down and brought back: to one egressd, the database is then gone
// and back, while other tests keep using the real server. It keeps its port while down,
// closing every connection it accepts, so that nothing else can take the port meanwhile.
type forwarder struct {
	Addr   string
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
}

func startForwarder(t testing.TB, target string) *forwarder {
	t.Helper()
	f := &forwarder{target: target, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.Addr = ln.Addr().String()
	t.Cleanup(func() { ln.Close(); f.Down() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.relay(c)
		}
	}()
	return f
}

// Down cuts every relayed connection and refuses new ones, as a database crash would.
func (f *forwarder) Down() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = true
	for c := range f.conns {
		c.Close()
	}
	clear(f.conns)
}

// Up relays new connections again.
func (f *forwarder) Up() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = false
}

func (f *forwarder) relay(c net.Conn) {
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		c.Close()
		return
	}
	up, err := net.DialTimeout("tcp", f.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	f.mu.Lock()
	if f.down { // taken down while dialling
		f.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	f.conns[c], f.conns[up] = true, true
	f.mu.Unlock()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) { io.Copy(dst, src); dst.Close(); src.Close(); done <- struct{}{} }
	go cp(up, c)
	go cp(c, up)
	<-done
	<-done
	f.mu.Lock()
	delete(f.conns, c)
	delete(f.conns, up)
	f.mu.Unlock()
}

// via is dbURL with its host and port replaced by the forwarder's.
func via(t testing.TB, dbURL string, f *forwarder) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = f.Addr
	return u.String()
}

// hostOf is the host:port of a postgres:// URL.
func hostOf(t testing.TB, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "5432")
	}
	return u.Host
}

// waitFor polls cond every few milliseconds until it holds or patience runs out.
func waitFor(t testing.TB, patience time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < patience {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", patience, what)
	return 0
}

// ctx is a context for one API call.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}
