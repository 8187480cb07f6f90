package netns

import (
	"net/netip"
	"path/filepath"
	"sync"

	"github.com/vishvananda/netns"
)

// Manager creates, repairs, lists and deletes sandbox networks. The zero value works: it
// runs from the calling process's network namespace, with namespaces in /run/netns and
// resolv.conf files in /etc/netns. Its methods are safe for concurrent use (they are
// serialised).
type Manager struct {
	gw        netns.NsHandle
	hasGW     bool
	netnsDir  string
	resolvDir string

	mu sync.Mutex
}

// Option configures a Manager.
type Option func(*Manager)

// WithGatewayNS makes the Manager act as if egressd ran in the namespace h: the gateway
// end of every veth pair, its address and its sysctls go there, and nothing is changed in
// the caller's namespace. Tests use it with a namespace of their own; the caller keeps h
// open while the Manager is in use. A negative handle (netns.None()) is ignored.
func WithGatewayNS(h netns.NsHandle) Option {
	return func(m *Manager) {
		if h >= 0 {
			m.gw, m.hasGW = h, true
		}
	}
}

// WithNetnsDir sets where namespaces are bind-mounted (default /run/netns, where
// `ip netns` looks).
func WithNetnsDir(dir string) Option {
	return func(m *Manager) { m.netnsDir = dir }
}

// WithResolvDir sets where the per-namespace resolv.conf files go (default /etc/netns,
// where `ip netns exec` looks).
func WithResolvDir(dir string) Option {
	return func(m *Manager) { m.resolvDir = dir }
}

// NewManager returns a Manager with opts applied.
func NewManager(opts ...Option) *Manager {
	m := &Manager{}
	for _, o := range opts {
		o(m)
	}
	return m
}

func (m *Manager) nsDir() string {
	if m.netnsDir == "" {
		return DefaultNetnsDir
	}
	return m.netnsDir
}

func (m *Manager) etcDir() string {
	if m.resolvDir == "" {
		return DefaultResolvDir
	}
	return m.resolvDir
}

// Path is where the namespace called name is mounted.
func (m *Manager) Path(name string) string { return filepath.Join(m.nsDir(), name) }

// ResolvConf is the path of the namespace's resolv.conf (<resolv dir>/<name>/resolv.conf).
func (m *Manager) ResolvConf(name string) string {
	return filepath.Join(m.etcDir(), name, "resolv.conf")
}

// Attachment is the attachment of a tenant's VM on subnet (see NewAttachment), with its
// path in this Manager's namespace directory.
func (m *Manager) Attachment(tenant, vmID string, subnet netip.Prefix) (Attachment, error) {
	return NewAttachment(tenant, vmID, subnet, m.nsDir())
}

// resolvConfText is the resolver configuration of a sandbox: the gateway's DNS filter only.
func resolvConfText(gw netip.Addr) string {
	return "# Written by egressd: the sandbox's only resolver is its gateway's DNS filter.\n" +
		"nameserver " + gw.String() + "\n"
}
