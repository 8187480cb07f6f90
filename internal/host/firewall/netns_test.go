package firewall

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/vishvananda/netns"
)

// netNS is a network namespace that the test created (ip netns add egfw-<role>-<random>)
// and deletes when it ends. Every command of these tests names one with `ip -n` or
// `ip netns exec`, and every Firewall is opened on one with WithNetNSFd: nothing is
// changed in the machine's own namespace.
type netNS struct {
	name string
	h    netns.NsHandle
}

// requireKernel skips (fails under CI=true) unless the test can make namespaces and has
// the tools to look into them.
func requireKernel(t *testing.T) {
	t.Helper()
	testnet.RequireRoot(t)
	for _, tool := range []string{"ip", "nft"} {
		_, err := exec.LookPath(tool)
		testnet.Require(t, err == nil, tool)
	}
}

func newNetNS(t *testing.T, role string) *netNS {
	t.Helper()
	requireKernel(t)
	n := &netNS{}
	n.name, n.h = testnet.NewNetNS(t, "egfw-"+role)
	return n
}

// firewall is a Firewall working in this namespace.
func (n *netNS) firewall() *Firewall { return New(WithNetNSFd(int(n.h))) }

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runErr(args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(args ...string) (string, error) {
	cmd := exec.Command(args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Start()
	if err == nil {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err = <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			err = fmt.Errorf("timed out")
		}
	}
	return out.String(), err
}

// ip runs `ip -n <ns> args...`.
func (n *netNS) ip(t *testing.T, args ...string) {
	run(t, append([]string{"ip", "-n", n.name}, args...)...)
}

// exec runs a command inside the namespace.
func (n *netNS) exec(t *testing.T, args ...string) string {
	return run(t, append([]string{"ip", "netns", "exec", n.name}, args...)...)
}

// nftInput feeds an nft script to `nft -f -` inside the namespace.
func (n *netNS) nftInput(t *testing.T, script string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", n.name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f in %s: %v\n%s\n%s", n.name, err, out, script)
	}
}

// do runs fn on an OS thread switched into the namespace: sockets fn creates belong to it.
// If the thread cannot be switched back, it stays locked and Go discards it.
func (n *netNS) do(fn func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(n.h); err != nil {
			errc <- err
			return
		}
		fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("switching back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	return <-errc
}

// dump is `nft -j list table inet egressd` made canonical: handles and expiries dropped, set elements
// sorted (a hash set lists them in no fixed order), one object a line. "" if no table.
func (n *netNS) dump(t *testing.T) string {
	t.Helper()
	out, err := runErr("ip", "netns", "exec", n.name, "nft", "-j", "list", "table", "inet", TableName)
	if err != nil {
		if strings.Contains(out, "No such file") {
			return ""
		}
		t.Fatalf("nft list: %v: %s", err, out)
	}
	var doc struct {
		Nftables []map[string]any `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("nft -j output: %v", err)
	}
	var lines []string
	for _, obj := range doc.Nftables {
		if _, ok := obj["metainfo"]; ok {
			continue
		}
		strip(obj)
		for _, k := range []string{"set", "map"} {
			if s, ok := obj[k].(map[string]any); ok {
				if el, ok := s["elem"].([]any); ok {
					slices.SortFunc(el, func(a, b any) int { return strings.Compare(jsonText(a), jsonText(b)) })
				}
			}
		}
		lines = append(lines, jsonText(obj))
	}
	return strings.Join(lines, "\n")
}

func strip(v any) {
	switch x := v.(type) {
	case map[string]any:
		delete(x, "handle")
		delete(x, "expires") // a set element's time left: it runs down while the test runs
		for _, e := range x {
			strip(e)
		}
	case []any:
		for _, e := range x {
			strip(e)
		}
	}
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// listTable is `nft list table <family> <name>` in the namespace, for humans and for
// comparing tables egressd must not touch.
// A set element's " expires 1m59s968ms" is cut out: it runs down while the test runs.
func (n *netNS) listTable(t *testing.T, family, name string) string {
	return expires.ReplaceAllString(n.exec(t, "nft", "list", "table", family, name), "")
}

var expires = regexp.MustCompile(` expires [0-9dhms]+`)
