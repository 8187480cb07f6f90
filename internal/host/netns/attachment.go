package netns

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
)

const (
	// NamePrefix starts the name of every network namespace egressd owns.
	NamePrefix = "egressd-"
	// HostIfacePrefix starts the name of the gateway end of every veth pair egressd owns.
	HostIfacePrefix = "eg"
	// SandboxIface is the name of the sandbox end of the veth pair, inside the sandbox.
	SandboxIface = "eth0"
	// DefaultNetnsDir is where named namespaces are bind-mounted, as iproute2 does.
	DefaultNetnsDir = "/run/netns"
	// DefaultResolvDir holds per-namespace /etc files; `ip netns exec` bind-mounts
	// <dir>/<name>/resolv.conf over /etc/resolv.conf.
	DefaultResolvDir = "/etc/netns"

	idLen = 10 // hex characters of the (tenant, vm_id) hash in names
)

// Attachment is one sandbox's network: a named namespace joined to the gateway by a veth
// pair that carries a point-to-point /30.
type Attachment struct {
	Name      string       // namespace name: "egressd-" + 10 hex characters, see Name
	Path      string       // the namespace's bind mount, <netns dir>/<Name>
	HostIface string       // gateway end of the veth pair: "eg" + the same 10 hex characters
	Addr      netip.Addr   // the sandbox's address, on eth0 inside the namespace
	Gateway   netip.Addr   // the gateway's address on HostIface; the sandbox's default route and DNS server
	Prefix    netip.Prefix // the point-to-point subnet (a /30) that holds Addr and Gateway
}

// Name is the namespace name of a tenant's VM: "egressd-" and the first 10 hex characters
// of SHA-256(tenant NUL vm_id). It is stable across restarts, so that a restarted egressd
// finds the namespaces it made, and it fits the 15-byte limit of interface names once
// prefixed with "eg" (see HostIface). 40 bits make a collision between two VMs of one
// gateway node unlikely (about one in 2 million for 1,000 VMs), not impossible: a caller
// that stores attachments should refuse a new VM whose name is already in use.
func Name(tenant, vmID string) string {
	sum := sha256.Sum256([]byte(tenant + "\x00" + vmID))
	return NamePrefix + hex.EncodeToString(sum[:])[:idLen]
}

// HostIface is the gateway-side interface name that belongs to the namespace name:
// "egressd-0123456789" → "eg0123456789". It returns "" for a name that egressd did not make.
func HostIface(name string) string {
	if !ValidName(name) {
		return ""
	}
	return HostIfacePrefix + strings.TrimPrefix(name, NamePrefix)
}

// ValidName reports whether name has the form of the names Name returns.
func ValidName(name string) bool {
	id, ok := strings.CutPrefix(name, NamePrefix)
	return ok && isID(id)
}

func isID(s string) bool {
	if len(s) != idLen {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// nameOfHostIface is HostIface reversed: "eg0123456789" → "egressd-0123456789", or "".
func nameOfHostIface(iface string) string {
	id, ok := strings.CutPrefix(iface, HostIfacePrefix)
	if !ok || !isID(id) {
		return ""
	}
	return NamePrefix + id
}

// NewAttachment is the attachment of a tenant's VM on subnet (a /30 from an Allocator):
// the gateway takes the subnet's first host address (.1), the sandbox the second (.2).
// Path is in netnsDir ("" means DefaultNetnsDir).
func NewAttachment(tenant, vmID string, subnet netip.Prefix, netnsDir string) (Attachment, error) {
	if netnsDir == "" {
		netnsDir = DefaultNetnsDir
	}
	if !subnet.Addr().Is4() || subnet.Bits() != subnetBits || subnet.Masked() != subnet {
		return Attachment{}, fmt.Errorf("netns: subnet %s is not an IPv4 /%d", subnet, subnetBits)
	}
	name := Name(tenant, vmID)
	gw := subnet.Addr().Next()
	return Attachment{
		Name:      name,
		Path:      filepath.Join(netnsDir, name),
		HostIface: HostIface(name),
		Addr:      gw.Next(),
		Gateway:   gw,
		Prefix:    subnet,
	}, nil
}

// Validate checks that a is self-consistent: a name egressd makes, the interface name
// that belongs to it, and two distinct host addresses of an IPv4 /30.
func (a Attachment) Validate() error {
	switch {
	case !ValidName(a.Name):
		return fmt.Errorf("netns: %q is not an egressd namespace name (%s + %d hex characters)", a.Name, NamePrefix, idLen)
	case a.HostIface != HostIface(a.Name):
		return fmt.Errorf("netns: interface %q does not belong to namespace %s (want %s)", a.HostIface, a.Name, HostIface(a.Name))
	case a.Path == "" || filepath.Base(a.Path) != a.Name:
		return fmt.Errorf("netns: path %q does not end in the namespace name %s", a.Path, a.Name)
	case !a.Prefix.IsValid() || !a.Prefix.Addr().Is4() || a.Prefix.Bits() != subnetBits || a.Prefix.Masked() != a.Prefix:
		return fmt.Errorf("netns: %s: prefix %s is not an IPv4 /%d", a.Name, a.Prefix, subnetBits)
	}
	first := a.Prefix.Addr()
	last := first.Next().Next().Next()
	for _, ip := range []netip.Addr{a.Addr, a.Gateway} {
		if !a.Prefix.Contains(ip) || ip == first || ip == last {
			return fmt.Errorf("netns: %s: %s is not a host address of %s", a.Name, ip, a.Prefix)
		}
	}
	if a.Addr == a.Gateway {
		return fmt.Errorf("netns: %s: sandbox and gateway share the address %s", a.Name, a.Addr)
	}
	return nil
}
