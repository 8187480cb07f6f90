package flowlog

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/host/firewall"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/vishvananda/netns"
)

// netNS is a network namespace the test made (ip netns add egfl-<role>-<random>) and
// deletes when it ends: nothing is changed in the machine's own namespace.
type netNS struct {
	name string
	h    netns.NsHandle
}

func newNetNS(t *testing.T, role string) *netNS {
	t.Helper()
	testnet.RequireRoot(t)
	for _, tool := range []string{"ip", "sysctl"} {
		_, err := exec.LookPath(tool)
		testnet.Require(t, err == nil, tool)
	}
	n := &netNS{}
	n.name, n.h = testnet.NewNetNS(t, "egfl-"+role)
	return n
}

func run(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s: timed out", strings.Join(args, " "))
	}
}

func (n *netNS) ip(t *testing.T, args ...string) {
	run(t, append([]string{"ip", "-n", n.name}, args...)...)
}

func (n *netNS) sysctl(t *testing.T, kv string) {
	run(t, "ip", "netns", "exec", n.name, "sysctl", "-qw", kv)
}

// do runs fn on an OS thread switched into the namespace (sockets it makes belong there).
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
			errc <- fmt.Errorf("switching back: %w", err) // the thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	return <-errc
}

// lab: a sandbox, the gateway (firewall, readers), a fake internet.
//
//	sbx eth0 100.96.0.2/29 ── egsbx0 100.96.0.1/29 gw up0 198.18.0.2/30 ── eth0 198.18.0.1/30 inet
//	inet lo: 203.0.113.10 (public servers), 198.51.100.10 (an allowed_cidrs server)
type lab struct {
	sbx, gw, inet *netNS
	fw            *firewall.Firewall
}

func newLab(t *testing.T) *lab {
	l := &lab{sbx: newNetNS(t, "sbx"), gw: newNetNS(t, "gw"), inet: newNetNS(t, "inet")}
	l.sbx.ip(t, "link", "add", "eth0", "type", "veth", "peer", "name", "egsbx0", "netns", l.gw.name)
	l.gw.ip(t, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", l.inet.name)
	l.sbx.ip(t, "addr", "add", "100.96.0.2/29", "dev", "eth0")
	l.sbx.ip(t, "link", "set", "eth0", "up")
	l.sbx.ip(t, "route", "add", "default", "via", "100.96.0.1")
	l.gw.ip(t, "addr", "add", "100.96.0.1/29", "dev", "egsbx0")
	l.gw.ip(t, "addr", "add", "198.18.0.2/30", "dev", "up0")
	l.gw.ip(t, "link", "set", "egsbx0", "up")
	l.gw.ip(t, "link", "set", "up0", "up")
	l.gw.ip(t, "route", "add", "default", "via", "198.18.0.1")
	l.inet.ip(t, "addr", "add", "198.18.0.1/30", "dev", "eth0")
	l.inet.ip(t, "link", "set", "eth0", "up")
	for _, a := range []string{"203.0.113.10/32", "198.51.100.10/32"} {
		l.inet.ip(t, "addr", "add", a, "dev", "lo")
	}
	l.fw = firewall.New(firewall.WithNetNSFd(int(l.gw.h)))
	t.Cleanup(func() { l.fw.Close() })
	l.apply(t, false)
	// The gateway host's requirements (firewall and flowlog docs), in the gw namespace
	// only; nf_conntrack's sysctls exist once the table above loaded it.
	l.gw.sysctl(t, "net.ipv4.ip_forward=1")
	l.gw.sysctl(t, "net.netfilter.nf_conntrack_acct=1")
	return l
}

func (l *lab) apply(t *testing.T, monitor bool, eps ...firewall.Endpoint) {
	t.Helper()
	err := l.fw.Apply(firewall.Desired{
		Sandboxes: []firewall.Sandbox{{
			Name: "lab", HostIface: "egsbx0", Addr: ip("100.96.0.2"), Gateway: ip("100.96.0.1"),
			Allowed: []netip.Prefix{netip.MustParsePrefix("198.51.100.10/32")}, TCP: eps, Monitor: monitor,
		}},
		ProxyPort: 15001, DNSPort: 15053, SandboxCIDR: netip.MustParsePrefix("100.96.0.0/16"),
		IfacePrefix: "eg",
	})
	if err != nil {
		t.Fatal(err)
	}
}

// echoServer listens in ns and echoes; it stops when the test ends.
func echoServer(t *testing.T, ns *netNS, addr string) {
	t.Helper()
	var ln net.Listener
	var err error
	if e := ns.do(func() { ln, err = net.Listen("tcp4", addr) }); e != nil || err != nil {
		t.Fatalf("listen %s: %v %v", addr, e, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadBytes('\n')
					if len(line) > 0 {
						if _, err := c.Write(line); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
}

// dial connects from the sandbox, with a timeout.
func (l *lab) dial(addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	var err error
	if e := l.sbx.do(func() { c, err = net.DialTimeout("tcp4", addr, timeout) }); e != nil {
		return nil, e
	}
	return c, err
}
