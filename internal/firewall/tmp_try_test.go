package firewall

import (
	"fmt"
	"net/netip"
	"testing"
)

func TestTmpRender(t *testing.T) {
	fmt.Print(Render(Desired{
		Sandboxes: []Sandbox{{Name: "egressd-1a2b3c4d5e", HostIface: "eg1a2b3c4d5e", Addr: netip.MustParseAddr("100.96.0.2"), Gateway: netip.MustParseAddr("100.96.0.1"),
			Allowed: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("198.51.100.0/25"), netip.MustParsePrefix("203.0.113.7/32")}}},
		ProxyPort: 15001, DNSPort: 15053, SandboxCIDR: netip.MustParsePrefix("100.96.0.0/16"), IfacePrefix: "eg",
		HardDeny: []netip.Prefix{netip.MustParsePrefix("198.18.0.2/32")},
	}))
}
