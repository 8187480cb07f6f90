package fastpath

import (
	"fmt"
	"testing"
	"time"
)

// The kernel queue is shared by every sandbox and bounded (nfqueue's default MaxLen is
// 4096 packets, full → the kernel drops). Each held packet stays in it until its verdict.
// One sandbox that opens many flows, each holding Segments-1 one-byte pieces of a
// ClientHello that never completes, must not fill it: else every other sandbox's SYNs and
// ClientHellos are dropped for as long as it keeps doing so (Hold at a time, again and
// again). Red team, issue 16.
func TestOneSandboxCannotFillTheQueue(t *testing.T) {
	hellos(t)
	const kernelQueue = 4096
	c := newConn(t, Limits{})
	var sent []uint32
	for i := 0; i < 200; i++ {
		d := c.sibling(fmt.Sprintf("100.96.0.2:%d", 41000+i))
		d.syn()
		for off := 0; off < 31; off++ {
			sent = append(sent, d.data(off, goodHello[off:off+1]))
		}
	}
	held := 0 // packets without a verdict: still in the kernel's queue
	for _, id := range sent {
		if _, ok := c.r.got[id]; !ok {
			held++
		}
	}
	if held > kernelQueue/4 {
		t.Errorf("one sandbox holds %d packets in the kernel queue (of %d)", held, kernelQueue)
	}
	// Another sandbox still gets its flow verified.
	o := c.sibling("100.96.0.3:40001")
	o.syn()
	if id := o.data(0, goodHello); c.r.got[id] != Pass {
		t.Errorf("another sandbox's ClientHello: %v, want pass", c.r.got[id])
	}
	// Past the hold time every flow is refused and nothing stays charged.
	c.v.Sweep(c.now.Add(time.Minute))
	if len(c.v.vms) != 0 || c.v.Stats().HeldBytes != 0 {
		t.Errorf("after the sweep: %d sandboxes charged, %d bytes", len(c.v.vms), c.v.Stats().HeldBytes)
	}
}
