package testnet

import (
	"net"
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
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(banner))
			c.Close()
		}
	}()
}
