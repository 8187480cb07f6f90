package testnet

import (
	"net"
	"sync"
	"testing"

	"github.com/egressd/egressd/internal/host/netns"
)

// Net makes the sockets of the fake internet's servers: in the test's own namespace
// (Loopback) or inside a namespace the test made (In).
type Net struct {
	Listen       func(network, addr string) (net.Listener, error)
	ListenPacket func(network, addr string) (net.PacketConn, error)
}

// Loopback makes sockets in the test's own namespace; use loopback addresses with it.
var Loopback = Net{Listen: net.Listen, ListenPacket: net.ListenPacket}

// In makes sockets inside the network namespace at path.
func In(path string) Net {
	return Net{
		Listen:       func(network, addr string) (net.Listener, error) { return netns.ListenIn(path, network, addr) },
		ListenPacket: func(network, addr string) (net.PacketConn, error) { return netns.ListenPacketIn(path, network, addr) },
	}
}

// ServeBanner serves a raw TCP service on addr that sends banner to every connection and
// closes it: a database or SSH port that answers first, for probes that must (or must not)
// reach it. It stops when the test ends.
func ServeBanner(t testing.TB, n Net, addr, banner string) {
	t.Helper()
	ln, err := n.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go ServeEach(ln, func(c net.Conn) { c.Write([]byte(banner)) })
}

// ServeEach accepts connections on ln until it is closed (Accept fails) and serves each
// with fn on a goroutine of its own, closing the connection when fn returns (fn may close
// it too). It returns once ln is closed and every fn has returned: a test that closes ln
// at cleanup and waits for ServeEach knows that no server of its is still running.
func ServeEach(ln net.Listener, fn func(net.Conn)) {
	var open sync.WaitGroup
	defer open.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		open.Add(1)
		go func() {
			defer open.Done()
			defer c.Close()
			fn(c)
		}()
	}
}
