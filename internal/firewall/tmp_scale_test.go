package firewall

import (
	"fmt"
	"testing"
	"time"
)

func TestTmpScale(t *testing.T) {
	for _, n := range []int{50, 200, 1000, 4000} {
		ns := newNetNS(t, "scale")
		var s []Sandbox
		for i := 0; i < n; i++ {
			s = append(s, sbx(i, fmt.Sprintf("vm%d", i), "198.51.100.0/24", "203.0.113.7/32"))
		}
		d := withSandboxes(s...)
		start := time.Now()
		err := ns.firewall().Apply(d)
		t.Logf("n=%d: %v in %v", n, err, time.Since(start))
		start = time.Now()
		err = ns.firewall().Apply(d)
		t.Logf("n=%d again: %v in %v", n, err, time.Since(start))
	}
}
