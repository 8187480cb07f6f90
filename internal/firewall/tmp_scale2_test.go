package firewall

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestTmpBigSet(t *testing.T) {
	for _, n := range []int{1000, 3000, 10000} {
		ns := newNetNS(t, "big")
		s := sbx(0, "vm0")
		for i := 0; i < n; i++ {
			// disjoint /32s in 198.51.100.0/24 .. spread: use 203.0.0.0/8-ish? only allowed ranges: use 198.18.x.y
			a := addr4(u32(ip("198.18.0.0")) + uint32(2*i))
			s.Allowed = append(s.Allowed, netip.PrefixFrom(a, 32))
		}
		start := time.Now()
		err := ns.firewall().Apply(withSandboxes(s))
		out := ""
		if err == nil {
			out = ns.exec(t, "nft", "list", "set", "inet", "egressd", "allow_vm0")
		}
		t.Logf("n=%d: %v in %v; listed %d bytes", n, err, time.Since(start), len(out))
		_ = fmt.Sprint
	}
}
