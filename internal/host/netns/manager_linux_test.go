package netns

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// runOut runs a command in the namespace at path and returns an error with its output.
func runOut(path string, opts []ExecOption, name string, args ...string) error {
	_, err := output(path, opts, name, args...)
	return err
}

func output(path string, opts []ExecOption, name string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := RunIn(path, cmd, opts...); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

func mustOutput(t *testing.T, path string, opts []ExecOption, name string, args ...string) string {
	t.Helper()
	out, err := output(path, opts, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkAttached asserts every part of a's network, from both sides.
func checkAttached(t *testing.T, g gateway, m *Manager, a Attachment) {
	t.Helper()
	if ok, err := isNSMount(a.Path); !ok || err != nil {
		t.Fatalf("%s is not a mounted namespace: %v", a.Path, err)
	}
	gwH, sbH := handle(t, g.path), handle(t, a.Path)
	host, eth0 := mustLink(t, gwH, a.HostIface), mustLink(t, sbH, SandboxIface)
	for _, l := range []netlink.Link{host, eth0} {
		const upAndCarrier = unix.IFF_UP | unix.IFF_LOWER_UP
		if l.Type() != "veth" || l.Attrs().RawFlags&upAndCarrier != upAndCarrier {
			t.Errorf("%s: type %s flags %v, want an up veth with carrier", l.Attrs().Name, l.Type(), l.Attrs().Flags)
		}
	}
	if host.Attrs().ParentIndex != eth0.Attrs().Index || eth0.Attrs().ParentIndex != host.Attrs().Index {
		t.Errorf("%s and eth0 are not peers", a.HostIface)
	}
	if got, want := addrs(t, gwH, host, netlink.FAMILY_V4), []string{a.Gateway.String() + "/30"}; !slices.Equal(got, want) {
		t.Errorf("gateway addresses %v, want %v", got, want)
	}
	if got, want := addrs(t, sbH, eth0, netlink.FAMILY_V4), []string{a.Addr.String() + "/30"}; !slices.Equal(got, want) {
		t.Errorf("sandbox addresses %v, want %v", got, want)
	}
	if got := linkNames(t, sbH); !slices.Equal(got, []string{"eth0", "lo"}) {
		t.Errorf("sandbox links %v", got)
	}
	if lo := mustLink(t, sbH, "lo"); lo.Attrs().Flags&net.FlagUp == 0 {
		t.Error("sandbox lo is down")
	}
	// No IPv6 at all: no address on any link (not even ::1 or fe80::), switched off.
	for _, l := range []netlink.Link{eth0, mustLink(t, sbH, "lo")} {
		if got := addrs(t, sbH, l, netlink.FAMILY_V6); len(got) > 0 {
			t.Errorf("sandbox %s has IPv6 addresses %v", l.Attrs().Name, got)
		}
	}
	if got := addrs(t, gwH, host, netlink.FAMILY_V6); len(got) > 0 {
		t.Errorf("%s has IPv6 addresses %v", a.HostIface, got)
	}
	for name, want := range map[string]string{"disable_ipv6": "net/ipv6/conf/", "rp_filter": "net/ipv4/conf/"} {
		if v, _ := sysctlIn(t, g.path, want+a.HostIface+"/"+name); v != "1" {
			t.Errorf("gateway %s %s = %q, want 1", a.HostIface, name, v)
		}
	}
	out := mustOutput(t, a.Path, nil, "cat",
		"/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6",
		"/proc/sys/net/ipv6/conf/eth0/disable_ipv6")
	if out != "1\n1\n1\n" {
		t.Errorf("sandbox disable_ipv6 (all, default, eth0) = %q", out)
	}
	routes, err := sbH.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var defaults []string
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			defaults = append(defaults, fmt.Sprintf("via %s dev %d", r.Gw, r.LinkIndex))
		}
	}
	if want := fmt.Sprintf("via %s dev %d", a.Gateway, eth0.Attrs().Index); !slices.Equal(defaults, []string{want}) {
		t.Errorf("sandbox default routes %v, want [%s]", defaults, want)
	}
	b, err := os.ReadFile(m.ResolvConf(a.Name))
	if err != nil || !strings.Contains(string(b), "\nnameserver "+a.Gateway.String()+"\n") || strings.Count(string(b), "nameserver") != 1 {
		t.Errorf("resolv.conf %q, %v", b, err)
	}
}

// listenGW listens on the gateway address of a, in the gateway namespace, and answers
// each connection with the peer's address.
func listenGW(t *testing.T, path string, ip netip.Addr) net.Listener {
	t.Helper()
	ln, err := ListenIn(path, "tcp", netip.AddrPortFrom(ip, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for i := 0; i < 100; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, c.RemoteAddr().(*net.TCPAddr).IP.String()+"\n")
			c.Close()
		}
	}()
	return ln
}

// dialFrom connects from inside the namespace at path and returns what the server says.
func dialFrom(path, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := DialIn(path)(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(c)
	return strings.TrimSpace(string(b)), err
}

func TestCreateTwoSandboxes(t *testing.T) {
	g := newGateway(t)
	m := g.manager(t)
	a1, a2 := attachment(t, m, 0), attachment(t, m, 1)
	for _, a := range []Attachment{a1, a2} {
		if err := m.Create(a); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []Attachment{a1, a2} {
		checkAttached(t, g, m, a)
	}
	if got, want := linkNames(t, handle(t, g.path)), []string{a1.HostIface, a2.HostIface, "lo"}; !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("gateway links %v, want %v", got, want)
	}
	list, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	for _, a := range []Attachment{a1, a2} {
		if !strings.Contains(string(list), a.Name) {
			t.Errorf("`ip netns list` does not show %s:\n%s", a.Name, list)
		}
	}
	// `ip netns exec` works on them as on its own.
	if out, err := exec.Command("ip", "netns", "exec", a1.Name, "ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput(); err != nil || !strings.Contains(string(out), a1.Addr.String()+"/30") {
		t.Errorf("ip netns exec: %s %v", out, err)
	}

	// Each sandbox reaches its gateway address, and is seen with its own address.
	for _, a := range []Attachment{a1, a2} {
		ln := listenGW(t, g.path, a.Gateway)
		got, err := dialFrom(a.Path, ln.Addr().String(), 10*time.Second)
		if err != nil || got != a.Addr.String() {
			t.Fatalf("%s → gateway: %q, %v", a.Addr, got, err)
		}
	}
	// Without forwarding in the gateway, one sandbox cannot reach the other.
	if v, _ := sysctlIn(t, g.path, "net.ipv4.ip_forward"); v != "0" {
		t.Fatalf("gateway ip_forward = %s", v)
	}
	ln2 := listenGW(t, a2.Path, a2.Addr)
	if got, err := dialFrom(a1.Path, ln2.Addr().String(), time.Second); err == nil {
		t.Fatalf("sandbox 1 reached sandbox 2 without forwarding: %q", got)
	}
	// With it (EnableForwarding, in the gateway), it can: the check above was not vacuous.
	if err := Do(g.path, EnableForwarding); err != nil {
		t.Fatal(err)
	}
	if v, _ := sysctlIn(t, g.path, "net.ipv4.ip_forward"); v != "1" {
		t.Fatalf("gateway ip_forward = %s after EnableForwarding", v)
	}
	if got, err := dialFrom(a1.Path, ln2.Addr().String(), 10*time.Second); err != nil || got != a1.Addr.String() {
		t.Fatalf("with forwarding, sandbox 1 → sandbox 2: %q, %v", got, err)
	}
}

func sysctlIn(t *testing.T, path, name string) (string, error) {
	var v string
	err := Do(path, func() error {
		var err error
		v, err = Sysctl(name)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return v, nil
}

type snapshot struct {
	nsInode, hostIndex, eth0Index int
	hostAddrs, eth0Addrs          string
	routes                        string
	resolv                        string
	resolvMtime                   time.Time
}

func snap(t *testing.T, g gateway, m *Manager, a Attachment) snapshot {
	t.Helper()
	gwH, sbH := handle(t, g.path), handle(t, a.Path)
	host, eth0 := mustLink(t, gwH, a.HostIface), mustLink(t, sbH, SandboxIface)
	routes, err := sbH.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(m.ResolvConf(a.Name))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(m.ResolvConf(a.Name))
	return snapshot{
		nsInode: int(inode(t, a.Path)), hostIndex: host.Attrs().Index, eth0Index: eth0.Attrs().Index,
		hostAddrs: fmt.Sprint(addrs(t, gwH, host, netlink.FAMILY_V4)), eth0Addrs: fmt.Sprint(addrs(t, sbH, eth0, netlink.FAMILY_V4)),
		routes: fmt.Sprint(routes), resolv: string(b), resolvMtime: st.ModTime(),
	}
}

// A second Create, from the same Manager or from a new one (egressd restarted), adopts
// what is there and changes nothing.
func TestCreateIsIdempotent(t *testing.T) {
	g := newGateway(t)
	m := g.manager(t)
	a := attachment(t, m, 5)
	if err := m.Create(a); err != nil {
		t.Fatal(err)
	}
	before := snap(t, g, m, a)
	if err := m.Create(a); err != nil {
		t.Fatal(err)
	}
	restarted := NewManager(WithGatewayNS(g.h), WithResolvDir(m.etcDir()))
	if err := restarted.Create(a); err != nil {
		t.Fatal(err)
	}
	if after := snap(t, g, m, a); after != before {
		t.Fatalf("Create changed an attached network:\nbefore %+v\nafter  %+v", before, after)
	}
	checkAttached(t, g, m, a)
}

// Create repairs whatever is missing or wrong.
func TestCreateRepairs(t *testing.T) {
	g := newGateway(t)
	m := g.manager(t)
	a := attachment(t, m, 7)
	if err := m.Create(a); err != nil {
		t.Fatal(err)
	}
	gwH := handle(t, g.path)
	ln := listenGW(t, g.path, a.Gateway)
	reach := func(what string) {
		t.Helper()
		checkAttached(t, g, m, a)
		if got, err := dialFrom(a.Path, ln.Addr().String(), 10*time.Second); err != nil || got != a.Addr.String() {
			t.Fatalf("after repairing %s: %q, %v", what, got, err)
		}
	}
	repair := func(what string) {
		t.Helper()
		if err := m.Create(a); err != nil {
			t.Fatalf("repairing %s: %v", what, err)
		}
		reach(what)
	}

	// The veth, deleted by hand (which takes both ends).
	if err := gwH.LinkDel(mustLink(t, gwH, a.HostIface)); err != nil {
		t.Fatal(err)
	}
	repair("a deleted veth")

	// What a root user inside the sandbox could change: eth0's address, an extra address,
	// the default route, eth0 down, IPv6 back on; and the resolv.conf removed.
	sbH := handle(t, a.Path)
	eth0 := mustLink(t, sbH, SandboxIface)
	for _, cmd := range [][]string{
		{"ip", "addr", "flush", "dev", "eth0"},
		{"ip", "addr", "add", "100.96.200.2/30", "dev", "eth0"},
		{"ip", "link", "set", "eth0", "down"},
		{"sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.eth0.disable_ipv6=0"},
	} {
		if err := runOut(a.Path, nil, cmd[0], cmd[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(m.ResolvConf(a.Name))
	if err := sbH.LinkSetUp(eth0); err != nil {
		t.Fatal(err)
	}
	if err := runOut(a.Path, nil, "ip", "route", "replace", "default", "via", "100.96.200.1", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	repair("a reconfigured sandbox")

	// A gateway-side veth of the right name whose peer is not the sandbox's eth0.
	if err := gwH.LinkDel(mustLink(t, gwH, a.HostIface)); err != nil {
		t.Fatal(err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = a.HostIface
	if err := gwH.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "stray0"}); err != nil {
		t.Fatal(err)
	}
	repair("a veth with a foreign peer")
	if l, _ := gwH.LinkByName("stray0"); l != nil {
		t.Error("the foreign peer survived")
	}

	// The sandbox's eth0 replaced by an unrelated interface (the gateway end gone too).
	if err := gwH.LinkDel(mustLink(t, gwH, a.HostIface)); err != nil {
		t.Fatal(err)
	}
	if err := runOut(a.Path, nil, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "stray1"); err != nil {
		t.Fatal(err)
	}
	repair("a stray eth0")

	// A namespace file that is no longer a mount (a crash between creating the file and
	// mounting it; or the namespace unmounted by hand).
	if err := m.Delete(a.Name); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.Path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	repair("a stale namespace file")
}

func TestDelete(t *testing.T) {
	g := newGateway(t)
	m := g.manager(t)
	a, b := attachment(t, m, 0), attachment(t, m, 1)
	for _, x := range []Attachment{a, b} {
		if err := m.Create(x); err != nil {
			t.Fatal(err)
		}
	}
	// A process (here: an open handle) that holds the namespace does not keep the
	// sandbox connected: the veth goes with Delete.
	held, err := openNS(a.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(held)
	if err := m.Delete(a.Name); err != nil {
		t.Fatal(err)
	}
	gwH := handle(t, g.path)
	if l, _ := gwH.LinkByName(a.HostIface); l != nil {
		t.Error("the gateway end survived")
	}
	for _, p := range []string{a.Path, filepath.Dir(m.ResolvConf(a.Name))} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived: %v", p, err)
		}
	}
	if list, _ := exec.Command("ip", "netns", "list").CombinedOutput(); strings.Contains(string(list), a.Name) {
		t.Errorf("`ip netns list` still shows %s", a.Name)
	}
	heldH, err := routeHandleIn(held)
	if err != nil {
		t.Fatal(err)
	}
	defer heldH.Close()
	if l, _ := heldH.LinkByName(SandboxIface); l != nil {
		t.Error("the held namespace still has its eth0")
	}
	// Idempotent, and harmless for names never made; the other sandbox is untouched.
	if err := m.Delete(a.Name); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if err := m.Delete(Name("nobody", "nothing")); err != nil {
		t.Fatalf("Delete of an unknown name: %v", err)
	}
	if err := m.Delete("eth0"); err == nil {
		t.Fatal("Delete accepted a name egressd does not make")
	}
	checkAttached(t, g, m, b)
}

// List finds every sandbox network of which anything is left, so that orphans can be
// deleted at start.
func TestList(t *testing.T) {
	g := newGateway(t)
	m := g.manager(t)
	a, b := attachment(t, m, 0), attachment(t, m, 1)
	for _, x := range []Attachment{a, b} {
		if err := m.Create(x); err != nil {
			t.Fatal(err)
		}
	}
	has := func(names []string, want ...string) bool {
		for _, w := range want {
			if !slices.Contains(names, w) {
				return false
			}
		}
		return true
	}
	list, err := m.List()
	if err != nil || !has(list, a.Name, b.Name) {
		t.Fatalf("List = %v, %v; want %s and %s among them", list, err, a.Name, b.Name)
	}
	if err := m.Delete(a.Name); err != nil {
		t.Fatal(err)
	}
	if list, _ := m.List(); slices.Contains(list, a.Name) || !has(list, b.Name) {
		t.Fatalf("after Delete, List = %v", list)
	}
	// An orphaned gateway-side veth (its namespace gone) is listed, and Delete removes it.
	orphan := attachment(t, m, 2)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = orphan.HostIface
	gwH := handle(t, g.path)
	if err := gwH.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "orphanpeer"}); err != nil {
		t.Fatal(err)
	}
	if list, _ := m.List(); !slices.Contains(list, orphan.Name) {
		t.Fatalf("List = %v misses the orphan %s", list, orphan.Name)
	}
	if err := m.Delete(orphan.Name); err != nil {
		t.Fatal(err)
	}
	if l, _ := gwH.LinkByName(orphan.HostIface); l != nil {
		t.Fatal("Delete left the orphan veth")
	}
}

// Gateways that share /run/netns (tests, the end-to-end harness) leave each other's
// sandboxes alone: List does not show them, and Create does not take them over.
func TestOtherGatewaysSandboxes(t *testing.T) {
	g1, g2 := newGateway(t), newGateway(t)
	m1, m2 := g1.manager(t), g2.manager(t)
	a := attachment(t, m1, 0)
	if err := m1.Create(a); err != nil {
		t.Fatal(err)
	}
	if list, err := m2.List(); err != nil || slices.Contains(list, a.Name) {
		t.Fatalf("the other gateway lists %v, %v", list, err)
	}
	if err := m2.Create(a); err == nil || !strings.Contains(err.Error(), "another gateway") {
		t.Fatalf("the other gateway's Create: %v", err)
	}
	checkAttached(t, g1, m1, a)
	if list, err := m1.List(); err != nil || !slices.Contains(list, a.Name) {
		t.Fatalf("the owner lists %v, %v", list, err)
	}
	// An empty namespace of the right name (a Create cut short) is taken over.
	b := attachment(t, m2, 1)
	if err := CreateNS(b.Path); err != nil {
		t.Fatal(err)
	}
	if list, _ := m2.List(); slices.Contains(list, b.Name) {
		t.Fatalf("an unmarked empty namespace was listed: %v", list)
	}
	if err := m2.Create(b); err != nil {
		t.Fatal(err)
	}
	checkAttached(t, g2, m2, b)
	if list, _ := m1.List(); slices.Contains(list, b.Name) {
		t.Fatalf("gateway 1 lists gateway 2's sandbox: %v", list)
	}
}

// StartIn runs a process in the sandbox; with WithResolvConf it also sees the sandbox's
// resolv.conf and /sys, as under `ip netns exec`, and the host's are untouched.
func TestStartIn(t *testing.T) {
	g := newGateway(t)
	m := g.manager(t)
	a := attachment(t, m, 3)
	if err := m.Create(a); err != nil {
		t.Fatal(err)
	}
	out := mustOutput(t, a.Path, nil, "ip", "-o", "addr", "show")
	if !strings.Contains(out, "eth0") || !strings.Contains(out, "inet "+a.Addr.String()+"/30") {
		t.Fatalf("ip addr in the sandbox:\n%s", out)
	}
	hostResolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Skip("the machine has no /etc/resolv.conf to cover")
	}
	opts := []ExecOption{WithResolvConf(m.ResolvConf(a.Name))}
	var buf bytes.Buffer
	cmd := exec.Command("sh", "-c", "cat /etc/resolv.conf; ls /sys/class/net")
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := m.Start(a.Name, cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	out = buf.String()
	if !strings.Contains(out, "nameserver "+a.Gateway.String()) || !strings.Contains(out, "eth0\nlo\n") || strings.Contains(out, a.HostIface) {
		t.Fatalf("resolv.conf and /sys/class/net in the sandbox:\n%s", out)
	}
	if after, _ := os.ReadFile("/etc/resolv.conf"); !bytes.Equal(after, hostResolv) {
		t.Fatal("the host's /etc/resolv.conf changed")
	}
	if _, err := os.Stat("/sys/class/net/" + a.HostIface); err == nil {
		t.Fatal("the host's /sys was replaced")
	}
	// Start failures come back as errors; the process's own failure from Wait.
	if err := RunIn(a.Path, exec.Command("/nonexistent/program")); err == nil {
		t.Fatal("RunIn of a missing program succeeded")
	}
	if err := RunIn(a.Path, exec.Command("false"), opts...); err == nil {
		t.Fatal("RunIn of false succeeded")
	}
}
