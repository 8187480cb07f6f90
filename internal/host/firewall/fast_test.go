package firewall

import (
	"bytes"
	"encoding/binary"
	"regexp"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

var queueText = regexp.MustCompile(`queue num [0-9]+`)

// queueAsDrop is Render's text with the queue statement replaced by drop, for nft -f on a
// kernel without nft_queue (see TestApplyEqualsRender).
func queueAsDrop(render string) string { return queueText.ReplaceAllString(render, "drop") }

// xtQueueAsDrop is a dump (netNS.dump) with the xt NFQUEUE target replaced likewise.
func xtQueueAsDrop(dump string) string {
	return strings.ReplaceAll(dump, `{"xt":{"name":"NFQUEUE","type":"target"}}`, `{"drop":null}`)
}

// checkQueue reads the rules of every fast sandbox's forward chain back through the
// netlink library: exactly one NFQUEUE target, revision 3, queue st.fastQueue, one queue,
// no flags (no bypass: without a reader the kernel drops; no fanout).
func checkQueue(t *testing.T, ns *netNS, st *state) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.h)))
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 8)
	binary.NativeEndian.PutUint16(want[0:], st.fastQueue)
	binary.NativeEndian.PutUint16(want[2:], 1)
	for _, s := range st.sandboxes {
		rules, err := c.GetRules(table(), &nftables.Chain{Name: prefixFwd + s.name})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range rules {
			for _, e := range r.Exprs {
				tg, ok := e.(*expr.Target)
				if !ok {
					continue
				}
				n++
				info, ok := tg.Info.(*xt.Unknown)
				if tg.Name != "NFQUEUE" || tg.Rev != 3 || !ok || !bytes.Equal(*info, want) {
					t.Errorf("fwd_%s: target %s rev %d info %v, want NFQUEUE rev 3 %x", s.name, tg.Name, tg.Rev, tg.Info, want)
				}
			}
		}
		if want := map[bool]int{true: 1, false: 0}[fast(st, s)]; n != want {
			t.Errorf("fwd_%s: %d queue targets, want %d", s.name, n, want)
		}
	}
}
