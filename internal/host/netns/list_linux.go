package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Ownership. Several gateways may share one namespace directory: tests and the end-to-end
// harness run egressd in namespaces of their own, side by side, all with /run/netns. A
// sandbox namespace belongs to the gateway for which it holds a namespace id (an entry of
// its table of peer namespaces, as `ip netns set` makes). Create assigns that id first thing,
// and the kernel assigns it anyway once the veth's peer is in the gateway; a namespace of
// another gateway has none for this one. List only lists what belongs to this gateway, and
// Create refuses to take over another gateway's sandbox.

// owned reports whether the namespace behind sbH belongs to the gateway namespace gw.
func owned(sbH *netlink.Handle, gw int) bool {
	id, err := sbH.GetNetNsIdByFd(gw)
	return err == nil && id >= 0
}

// claim marks the namespace behind sbH as the gateway's. A namespace that Create did not
// just make is taken only if it is already the gateway's or holds no interface but lo.
func claim(sbH *netlink.Handle, gw int, made bool) error {
	if owned(sbH, gw) {
		return nil
	}
	if !made {
		if err := notForeign(sbH, gw); err != nil {
			return fmt.Errorf("%w; if it is stale, remove it with `ip netns del`", err)
		}
	}
	if err := sbH.SetNetNsIdByFd(gw, -1); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("marking the namespace as this gateway's: %w", err)
	}
	return nil
}

// gatewayFd is an open descriptor of the gateway namespace, and how to let it go.
func (m *Manager) gatewayFd() (int, func(), error) {
	if m.hasGW {
		return int(m.gw), func() {}, nil
	}
	fd, err := openNS(threadNS()) // every unlocked thread is in the process's namespace
	if err != nil {
		return -1, nil, err
	}
	return fd, func() { unix.Close(fd) }, nil
}

// Delete removes the sandbox network called name: the namespace mount and file, the veth
// pair (deleting the gateway end removes both, and cuts the sandbox off even if a process
// inside keeps the namespace alive), and <resolv dir>/<name>. What is already gone is no
// error, so Delete can be repeated and can clean up after a failed Create. The order leaves,
// after a crash at any point, something that List still finds.
//
// A namespace of the name that belongs to another gateway is refused, as Create refuses it,
// and nothing is removed: List may have named a resolv.conf directory left without its
// namespace (a reboot, another gateway deleting it), and by the time the caller deletes it
// as an orphan the other gateway may have made the namespace again.
func (m *Manager) Delete(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("netns: %q is not an egressd namespace name", name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.foreign(name); err != nil {
		return fmt.Errorf("netns: deleting %s: %w", name, err)
	}
	return m.deleteLocked(name)
}

// foreign returns an error if the namespace called name is mounted and belongs to another
// gateway: it has interfaces besides lo and is not this gateway's (see owned).
func (m *Manager) foreign(name string) error {
	if ok, err := isNSMount(m.Path(name)); err != nil || !ok {
		return nil // nothing mounted: nobody's namespace to lose
	}
	sb, err := openNS(m.Path(name))
	if err != nil {
		return err
	}
	defer unix.Close(sb)
	gw, closeGW, err := m.gatewayFd()
	if err != nil {
		return err
	}
	defer closeGW()
	h, err := routeHandleIn(sb)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := notForeign(h, gw); err != nil {
		return fmt.Errorf("%w; left alone", err)
	}
	return nil
}

// notForeign returns an error if the namespace behind sbH belongs to another gateway than
// gw: it is not gw's (see owned), and holds an interface besides lo. An empty one is a
// Create cut short, anybody's to take or remove.
func notForeign(sbH *netlink.Handle, gw int) error {
	if owned(sbH, gw) {
		return nil
	}
	links, err := retryDump(sbH.LinkList)
	if err != nil {
		return fmt.Errorf("listing the namespace's links: %w", err)
	}
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			return fmt.Errorf("the namespace exists and belongs to another gateway (it has %s and no link to this one)", l.Attrs().Name)
		}
	}
	return nil
}

func (m *Manager) deleteLocked(name string) error {
	var errs []error
	if err := RemoveNS(m.Path(name)); err != nil {
		errs = append(errs, err)
	}
	gwH, err := m.gatewayHandle()
	if err != nil {
		errs = append(errs, err)
	} else {
		host, err := linkByName(gwH, HostIface(name))
		switch {
		case err != nil:
			errs = append(errs, err)
		case host != nil && host.Type() != "veth":
			errs = append(errs, fmt.Errorf("%s is a %s, not a veth; left alone", host.Attrs().Name, host.Type()))
		case host != nil:
			// The namespace's end may be going already, taking this one along.
			if err := gwH.LinkDel(host); err != nil && !errors.Is(err, unix.ENODEV) {
				if _, gone := err.(netlink.LinkNotFoundError); !gone {
					errs = append(errs, fmt.Errorf("deleting %s: %w", host.Attrs().Name, err))
				}
			}
		}
		gwH.Close()
	}
	if len(errs) == 0 { // keep the trace for List while something else is left
		if err := os.RemoveAll(filepath.Join(m.etcDir(), name)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netns: deleting %s: %w", name, err)
	}
	return nil
}

// List returns, sorted, the names of this gateway's sandbox networks of which anything is
// present: a gateway-side veth, a namespace that belongs to this gateway (see owned), or a
// resolv.conf directory without its namespace. At start egressd deletes those that its
// store does not know, the orphans of a crash. Namespaces of other gateways that share the
// directory are not listed, nor a namespace whose making was cut short before it was
// marked (a moment after its creation): such a leftover holds no interface and is taken
// over by the next Create of its name.
func (m *Manager) List() ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	gwH, err := m.gatewayHandle()
	if err != nil {
		return nil, err
	}
	defer gwH.Close()
	gw, closeGW, err := m.gatewayFd()
	if err != nil {
		return nil, err
	}
	defer closeGW()

	var names []string
	links, err := retryDump(gwH.LinkList)
	if err != nil {
		return nil, fmt.Errorf("netns: listing links: %w", err)
	}
	for _, l := range links {
		if n := nameOfHostIface(l.Attrs().Name); n != "" && l.Type() == "veth" {
			names = append(names, n)
		}
	}
	nsNames, err := validNames(m.nsDir())
	if err != nil {
		return nil, err
	}
	for _, n := range nsNames {
		if m.ours(n, gw) {
			names = append(names, n)
		}
	}
	etcNames, err := validNames(m.etcDir())
	if err != nil {
		return nil, err
	}
	for _, n := range etcNames {
		if _, err := os.Lstat(m.Path(n)); errors.Is(err, os.ErrNotExist) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// ours reports whether the namespace called name is mounted and belongs to the gateway gw.
func (m *Manager) ours(name string, gw int) bool {
	if ok, err := isNSMount(m.Path(name)); !ok || err != nil {
		return false
	}
	sb, err := openNS(m.Path(name))
	if err != nil {
		return false
	}
	defer unix.Close(sb)
	h, err := routeHandleIn(sb)
	if err != nil {
		return false
	}
	defer h.Close()
	return owned(h, gw)
}

func validNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("netns: listing %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		if ValidName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
