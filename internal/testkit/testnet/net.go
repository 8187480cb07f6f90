package testnet

import (
	"net"

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
