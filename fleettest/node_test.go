package fleettest

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

func TestMain(m *testing.M) { egressdtest.Main(m) }

// node is one egressd process of a fleet.
type node struct {
	*egressdtest.Instance
	name string
}

// startNode runs egressd with free loopback ports and its own data directory, plus args
// (egressdtest.Start); it is stopped when the test ends.
func startNode(t testing.TB, name string, args ...string) *node {
	t.Helper()
	return &node{Instance: egressdtest.Start(t, append([]string{"--node-id", name}, args...)...), name: name}
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
