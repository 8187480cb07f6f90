package firewall

import (
	"net/netip"
	"os"
	"os/exec"
	"testing"

	"github.com/vishvananda/netns"
)

func TestTmpApply(t *testing.T) {
	exec.Command("ip", "netns", "add", "egfw-tmp1").Run()
	defer exec.Command("ip", "netns", "del", "egfw-tmp1").Run()
	h, err := netns.GetFromName("egfw-tmp1")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	f := New(WithNetNSFd(int(h)))
	d := Desired{
		Sandboxes: []Sandbox{{Name: "egressd-1a2b3c4d5e", HostIface: "eg1a2b3c4d5e", Addr: netip.MustParseAddr("100.96.0.2"), Gateway: netip.MustParseAddr("100.96.0.1"),
			Allowed: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("198.51.100.0/25"), netip.MustParsePrefix("203.0.113.7/32")}}},
		ProxyPort: 15001, DNSPort: 15053, SandboxCIDR: netip.MustParsePrefix("100.96.0.0/16"), IfacePrefix: "eg",
		HardDeny: []netip.Prefix{netip.MustParsePrefix("198.18.0.2/32")},
	}
	if err := f.Apply(d); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(d); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", "egfw-tmp1", "nft", "list", "ruleset").CombinedOutput()
	os.WriteFile("/tmp/fwtry/applied.nft", out, 0o644)
	t.Log(string(out), err)
	out, _ = exec.Command("ip", "netns", "exec", "egfw-tmp1", "nft", "--debug=netlink", "list", "ruleset").CombinedOutput()
	os.WriteFile("/tmp/fwtry/applied.dbg", out, 0o644)
}
