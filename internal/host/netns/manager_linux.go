package netns

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const netlinkTimeout = 10 * time.Second

// Create makes the sandbox network of a, or brings an existing one back to what a says.
// It is idempotent: when everything is in place (after an egressd restart, say) it changes
// nothing; when something is missing or wrong (a veth deleted by hand, an address changed
// from inside the sandbox) it repairs that part. An empty a.Path means m.Path(a.Name).
func (m *Manager) Create(a Attachment) error {
	if a.Path == "" {
		a.Path = m.Path(a.Name)
	}
	if err := a.Validate(); err != nil {
		return err
	}
	if a.Path != m.Path(a.Name) {
		return fmt.Errorf("netns: %s: path %s is not in %s", a.Name, a.Path, m.nsDir())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	made, err := m.create(a)
	if err != nil {
		if made { // a network that did not exist before the call does not stay half-made
			if derr := m.deleteLocked(a.Name); derr != nil {
				err = errors.Join(err, derr)
			}
		}
		return fmt.Errorf("netns: creating %s: %w", a.Name, err)
	}
	return nil
}

// create does Create's work and reports whether it made the namespace.
func (m *Manager) create(a Attachment) (made bool, err error) {
	if made, err = m.ensureNS(a.Path); err != nil {
		return made, err
	}
	return made, m.configure(a, made)
}

func (m *Manager) configure(a Attachment, made bool) error {
	sb, err := openNS(a.Path)
	if err != nil {
		return err
	}
	defer unix.Close(sb)
	gw, closeGW, err := m.gatewayFd()
	if err != nil {
		return err
	}
	defer closeGW()
	gwH, err := m.gatewayHandle()
	if err != nil {
		return err
	}
	defer gwH.Close()
	sbH, err := routeHandleIn(sb)
	if err != nil {
		return err
	}
	defer sbH.Close()
	if err := claim(sbH, gw, made); err != nil {
		return err
	}
	// Before eth0 arrives, so that it is born without IPv6 ("default"); "all" covers lo.
	if err := doFd(sb, func() error { return disableIPv6("all", "default") }); err != nil {
		return fmt.Errorf("sandbox sysctls: %w", err)
	}

	host, peer, err := ensureVeth(gwH, sbH, sb, a.HostIface)
	if err != nil {
		return err
	}
	// Gateway side: no IPv6 (before it is up: not even a link-local address), strict
	// reverse-path filtering (a sandbox that forges another's source address is dropped
	// before the firewall sees it), its address, up.
	if err := m.inGateway(func() error {
		if err := disableIPv6(a.HostIface); err != nil {
			return err
		}
		return SetSysctl("net/ipv4/conf/"+a.HostIface+"/rp_filter", "1")
	}); err != nil {
		return fmt.Errorf("gateway sysctls: %w", err)
	}
	if err := ensureAddr(gwH, host, netip.PrefixFrom(a.Gateway, a.Prefix.Bits())); err != nil {
		return fmt.Errorf("%s address: %w", a.HostIface, err)
	}
	if err := ensureUp(gwH, host); err != nil {
		return err
	}
	// Sandbox side.
	if err := doFd(sb, func() error { return disableIPv6(SandboxIface, "lo") }); err != nil {
		return fmt.Errorf("sandbox sysctls: %w", err)
	}
	if err := ensureAddr(sbH, peer, netip.PrefixFrom(a.Addr, a.Prefix.Bits())); err != nil {
		return fmt.Errorf("%s address: %w", SandboxIface, err)
	}
	lo, err := sbH.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("sandbox lo: %w", err)
	}
	for _, l := range []netlink.Link{lo, peer} {
		if err := ensureUp(sbH, l); err != nil {
			return err
		}
	}
	if err := ensureDefaultRoute(sbH, peer.Attrs().Index, a.Gateway); err != nil {
		return fmt.Errorf("sandbox default route: %w", err)
	}
	return m.writeResolvConf(a)
}

// Start starts cmd inside the sandbox called name as `ip netns exec` would: in its network
// namespace, with its resolv.conf over /etc/resolv.conf and a /sys of its own (see
// StartIn and WithResolvConf). This is `egressctl exec <vm> -- cmd`.
func (m *Manager) Start(name string, cmd *exec.Cmd) error {
	if !ValidName(name) {
		return fmt.Errorf("netns: %q is not an egressd namespace name", name)
	}
	return StartIn(m.Path(name), cmd, WithResolvConf(m.ResolvConf(name)))
}

// EnableForwarding turns on IPv4 forwarding in the gateway namespace (see the package's
// EnableForwarding): the Manager's sandboxes are routed through it.
func (m *Manager) EnableForwarding() error {
	return m.inGateway(EnableForwarding)
}

// ensureNS makes sure a namespace is mounted at path, replacing a stale file. It reports
// whether it made a new one.
func (m *Manager) ensureNS(path string) (made bool, err error) {
	if err := ensureSharedDir(m.nsDir()); err != nil {
		return false, err
	}
	ok, err := isNSMount(path)
	switch {
	case err == nil && ok:
		return false, nil
	case err == nil: // a plain file: left over from a crash half-way through CreateNS
		if err := os.Remove(path); err != nil {
			return false, fmt.Errorf("removing the stale %s: %w", path, err)
		}
	case !errors.Is(err, unix.ENOENT):
		return false, fmt.Errorf("inspecting %s: %w", path, err)
	}
	return true, CreateNS(path)
}

// ensureSharedDir makes dir a shared mount point, as `ip netns add` does for /run/netns:
// namespace mounts made later then appear in, and unmounts reach, the mount namespaces
// that copied dir (those of `ip netns exec` and StartIn with WithResolvConf). Without it a
// deleted sandbox could live on, pinned by such a copy.
func ensureSharedDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == unix.EINVAL { // not a mount point yet
		if err = unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
			err = unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		}
	}
	if err != nil {
		return fmt.Errorf("making %s a shared mount: %w", dir, err)
	}
	return nil
}

// gatewayHandle is a netlink handle whose socket lives in the gateway namespace.
func (m *Manager) gatewayHandle() (*netlink.Handle, error) {
	if !m.hasGW {
		return newRouteHandle()
	}
	return routeHandleIn(int(m.gw))
}

// inGateway runs fn in the gateway namespace.
func (m *Manager) inGateway(fn func() error) error {
	if !m.hasGW {
		return fn()
	}
	return doFd(int(m.gw), fn)
}

func routeHandleIn(fd int) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := doFd(fd, func() error {
		var err error
		h, err = newRouteHandle()
		return err
	})
	return h, err
}

// newRouteHandle opens a NETLINK_ROUTE socket in the calling thread's namespace. Only
// route requests may be made through it: the library would open a socket for any other
// family on the spot, in whatever namespace the thread is in.
func newRouteHandle() (*netlink.Handle, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		h.Close()
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return h, nil
}

// linkByName returns the link, or nil if there is none.
func linkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if _, ok := err.(netlink.LinkNotFoundError); ok {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up %s: %w", name, err)
	}
	return l, nil
}

// ensureVeth returns the pair HostIface (gateway) ↔ eth0 (sandbox), making it if it is
// missing and replacing it if its two ends are not each other's peers.
func ensureVeth(gwH, sbH *netlink.Handle, sb int, hostName string) (host, peer netlink.Link, err error) {
	if host, err = linkByName(gwH, hostName); err != nil {
		return nil, nil, err
	}
	if peer, err = linkByName(sbH, SandboxIface); err != nil {
		return nil, nil, err
	}
	if paired(gwH, sb, host, peer) {
		return host, peer, nil
	}
	if host != nil {
		if host.Type() != "veth" {
			return nil, nil, fmt.Errorf("%s exists in the gateway namespace and is a %s, not a veth; egressd leaves it alone", hostName, host.Type())
		}
		if err := gwH.LinkDel(host); err != nil {
			return nil, nil, fmt.Errorf("deleting the broken %s: %w", hostName, err)
		}
	}
	if p, err := linkByName(sbH, SandboxIface); err != nil {
		return nil, nil, err
	} else if p != nil { // still there: not the peer of the gateway end just deleted
		if err := sbH.LinkDel(p); err != nil {
			return nil, nil, fmt.Errorf("deleting the sandbox's stray %s: %w", SandboxIface, err)
		}
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = hostName
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: SandboxIface, PeerNamespace: netlink.NsFd(sb)}
	if err := gwH.LinkAdd(veth); err != nil {
		return nil, nil, fmt.Errorf("adding the veth pair %s/%s: %w", hostName, SandboxIface, err)
	}
	if host, err = gwH.LinkByName(hostName); err != nil {
		return nil, nil, fmt.Errorf("looking up the new %s: %w", hostName, err)
	}
	if peer, err = sbH.LinkByName(SandboxIface); err != nil {
		return nil, nil, fmt.Errorf("looking up the new %s: %w", SandboxIface, err)
	}
	return host, peer, nil
}

// paired reports whether host and peer are the two ends of one veth pair, the peer in the
// sandbox namespace sb.
func paired(gwH *netlink.Handle, sb int, host, peer netlink.Link) bool {
	if host == nil || peer == nil || host.Type() != "veth" || peer.Type() != "veth" {
		return false
	}
	ha, pa := host.Attrs(), peer.Attrs()
	if ha.ParentIndex != pa.Index || pa.ParentIndex != ha.Index {
		return false
	}
	if id, err := gwH.GetNetNsIdByFd(sb); err == nil && id >= 0 && ha.NetNsID >= 0 && id != ha.NetNsID {
		return false
	}
	return true
}

func ensureUp(h *netlink.Handle, l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting %s up: %w", l.Attrs().Name, err)
	}
	return nil
}

// ensureAddr leaves want as the only IPv4 address of l.
func ensureAddr(h *netlink.Handle, l netlink.Link, want netip.Prefix) error {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return err
	}
	found := false
	for _, a := range addrs {
		if p, ok := toPrefix(a.IPNet); ok && p == want && !found {
			found = true
			continue
		}
		if err := h.AddrDel(l, &a); err != nil {
			return fmt.Errorf("removing %s: %w", a.IPNet, err)
		}
	}
	if found {
		return nil
	}
	return h.AddrAdd(l, &netlink.Addr{IPNet: toIPNet(want)})
}

// ensureDefaultRoute leaves one IPv4 default route in the main table: via gw on link.
func ensureDefaultRoute(h *netlink.Handle, link int, gw netip.Addr) error {
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return err
	}
	var defaults []netlink.Route
	for _, r := range routes {
		if r.Dst == nil || (r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) {
			defaults = append(defaults, r)
		}
	}
	if len(defaults) == 1 {
		r := defaults[0]
		if g, ok := netip.AddrFromSlice(r.Gw); ok && g.Unmap() == gw && r.LinkIndex == link && len(r.MultiPath) == 0 {
			return nil
		}
	}
	for _, r := range defaults {
		if err := h.RouteDel(&r); err != nil {
			return fmt.Errorf("removing %v: %w", r, err)
		}
	}
	return h.RouteAdd(&netlink.Route{
		LinkIndex: link,
		Gw:        gw.AsSlice(),
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Table:     unix.RT_TABLE_MAIN,
	})
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}

// retryDump repeats a netlink dump that the kernel interrupted (its result may be
// incomplete), a bounded number of times.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range 5 {
		var res []T
		if res, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return res, err
		}
	}
	return nil, err
}

func toPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

func toIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// writeResolvConf writes <resolv dir>/<name>/resolv.conf unless it already says the same.
func (m *Manager) writeResolvConf(a Attachment) error {
	p := m.ResolvConf(a.Name)
	want := []byte(resolvConfText(a.Gateway))
	if cur, err := os.ReadFile(p); err == nil && bytes.Equal(cur, want) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, want, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
