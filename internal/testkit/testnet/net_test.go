package testnet

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// TestServeEach: every accepted connection is served by fn and closed after it, and
// ServeEach returns only once the listener is closed and every fn has returned.
func TestServeEach(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var served, finished atomic.Int32
	done := make(chan struct{})
	go func() {
		ServeEach(ln, func(c net.Conn) {
			served.Add(1)
			c.Write([]byte("hi"))
			<-release
			finished.Add(1)
		})
		close(done)
	}()
	const n = 3
	for i := range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b := make([]byte, 2)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "hi" {
			t.Fatalf("connection %d: %q, %v", i, b, err)
		}
	}
	ln.Close()
	select {
	case <-done:
		t.Fatal("ServeEach returned while its servers were still running")
	default:
	}
	close(release)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ServeEach did not return after the listener closed")
	}
	if served.Load() != n || finished.Load() != n {
		t.Fatalf("served %d, finished %d, want %d", served.Load(), finished.Load(), n)
	}
}
