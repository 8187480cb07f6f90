package netns

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Every test here works in namespaces it makes and deletes: a throwaway "gateway"
// namespace in a temporary directory stands for the host, and the Manager is pointed at
// it with WithGatewayNS. Nothing is added to the machine's own namespace; TestMain checks
// that, and that no sandbox namespace is left in /run/netns.

var (
	createdMu sync.Mutex
	created   []string // sandbox names the tests made
)

func TestMain(m *testing.M) {
	before := hostLinkNames()
	code := m.Run()
	createdMu.Lock()
	for _, name := range created {
		p := filepath.Join(DefaultNetnsDir, name)
		if _, err := os.Lstat(p); err == nil {
			fmt.Fprintf(os.Stderr, "FAIL: namespace %s was left behind; removing it\n", p)
			RemoveNS(p)
			code = 1
		}
	}
	createdMu.Unlock()
	for _, l := range hostLinkNames() {
		if !slices.Contains(before, l) && strings.HasPrefix(l, HostIfacePrefix) {
			fmt.Fprintf(os.Stderr, "FAIL: interface %s appeared in the machine's own namespace\n", l)
			code = 1
		}
	}
	os.Exit(code)
}

// hostLinkNames lists (reads only) the interfaces of the test process's own namespace.
func hostLinkNames() []string {
	links, err := netlink.LinkList()
	if err != nil {
		return nil
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

// requireRoot skips a test that needs root on a developer's machine, and fails it under
// CI=true, where a skip would hide a missing setup (as testnet.RequireRoot, which this
// package cannot import: testnet uses it).
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (network namespaces); CI runs as root")
	}
	t.Skip("needs root: makes network namespaces")
}

// newNS makes a namespace at a temporary path, removed when the test ends.
func newNS(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	p := filepath.Join(t.TempDir(), "ns")
	if err := CreateNS(p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := RemoveNS(p); err != nil {
			t.Error(err)
		}
	})
	return p
}

type gateway struct {
	path string
	h    netns.NsHandle
}

// newGateway makes the stand-in for the host: a namespace with forwarding off (a new
// namespace may inherit the host's IPv4 settings).
func newGateway(t *testing.T) gateway {
	t.Helper()
	p := newNS(t)
	h, err := netns.GetFromPath(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if err := Do(p, func() error { return SetSysctl("net.ipv4.ip_forward", "0") }); err != nil {
		t.Fatal(err)
	}
	return gateway{p, h}
}

func (g gateway) manager(t *testing.T) *Manager {
	return NewManager(WithGatewayNS(g.h), WithResolvDir(t.TempDir()))
}

// attachment is the i-th /30 of 100.96.0.0/16 for a VM of a tenant unique to this run, so
// that names never clash with anything else on the machine. It is deleted when the test ends.
func attachment(t *testing.T, m *Manager, i int) Attachment {
	t.Helper()
	alloc, err := NewAllocator(netip.MustParsePrefix("100.96.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	subnet, err := alloc.Subnet(i)
	if err != nil {
		t.Fatal(err)
	}
	a, err := m.Attachment("test-"+randomHex(), fmt.Sprintf("vm-%d", i), subnet)
	if err != nil {
		t.Fatal(err)
	}
	createdMu.Lock()
	created = append(created, a.Name)
	createdMu.Unlock()
	t.Cleanup(func() {
		if err := m.Delete(a.Name); err != nil {
			t.Error(err)
		}
	})
	return a
}

func randomHex() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// handle is a netlink handle inside the namespace at path, for the tests' own checks.
func handle(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	fd, err := openNS(path)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	h, err := routeHandleIn(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func mustLink(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

func addrs(t *testing.T, h *netlink.Handle, l netlink.Link, family int) []string {
	t.Helper()
	list, err := h.AddrList(l, family)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range list {
		out = append(out, a.IPNet.String())
	}
	return out
}

func linkNames(t *testing.T, h *netlink.Handle) []string {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	slices.Sort(names)
	return names
}

// inode is the inode of a namespace file: two files name one namespace when they agree.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// socketNS is the inode of the namespace a socket belongs to (SIOCGSKNS).
func socketNS(t *testing.T, c syscall.Conn) uint64 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ino uint64
	var ierr error
	err = rc.Control(func(fd uintptr) {
		nsfd, err := unix.IoctlRetInt(int(fd), unix.SIOCGSKNS)
		if err != nil {
			ierr = err
			return
		}
		defer unix.Close(nsfd)
		var st unix.Stat_t
		ierr = unix.Fstat(nsfd, &st)
		ino = st.Ino
	})
	if err != nil || ierr != nil {
		t.Fatal(err, ierr)
	}
	return ino
}
