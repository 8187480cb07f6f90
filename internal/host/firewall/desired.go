package firewall

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Sandbox is one VM's network attachment as the firewall sees it.
type Sandbox struct {
	// Name is the stable key of the sandbox, e.g. the VM's netns name "egressd-1a2b3c4d5e".
	// It names the sandbox's chains and set (raw_<Name>, nat_<Name>, fwd_<Name>,
	// allow_<Name>): 1 to 64 characters out of letters, digits, '_', '-' and '.'.
	Name string
	// HostIface is the gateway side of the VM's veth pair (1 to 15 bytes), e.g. "eg1a2b3c4d5e".
	HostIface string
	// Addr is the sandbox's IPv4 address: the only source accepted from HostIface.
	Addr netip.Addr
	// Gateway is the gateway's IPv4 address on HostIface: DNS and web traffic are DNATed to it.
	Gateway netip.Addr
	// Allowed are the destinations forwarded (and masqueraded) directly, on every port and
	// protocol: the intersection of the effective policies' allowed_cidrs. IPv4 only: IPv6
	// prefixes are ignored (every IPv6 packet from a sandbox is dropped anyway); an
	// IPv4-mapped IPv6 prefix counts as the IPv4 prefix it holds.
	Allowed []netip.Prefix
	// TCP are the (address, port) pairs the kernel forwards TCP to for this sandbox
	// (allowed_tcp, DESIGN §2.6): the addresses the DNS filter answered for an allowed_tcp
	// name, each with its remaining lifetime. Apply installs them with these timeouts, so a
	// caller passes what it admitted (Admit) that has not expired yet, and a full table
	// replace keeps them. See Endpoint for what is dropped.
	TCP []Endpoint
	// Monitor: the sandbox's effective policy is in monitor mode in every layer. What the
	// forward chain would drop is let through (hard deny excepted) and its first packet
	// logged with the prefix "monitor" instead of "deny". A monitor sandbox has no fast
	// path (Fast must be empty): its HTTPS goes to the proxy.
	Monitor bool
	// Fast are the (address, 443) pairs of the fast path (Desired.FastPath): the addresses
	// the DNS filter answered this sandbox for names the fast path may verify, each with
	// its remaining lifetime, as for TCP (AdmitFast). TCP 443 to one of them is routed,
	// not DNATed to the proxy, and held in the fast queue until egressd verified its
	// ClientHello. Port must be 443. Only with Desired.FastPath.
	Fast []Endpoint
}

// Desired is the whole state of the firewall. Apply makes the kernel hold exactly this.
// The zero value is valid: a table that decides nothing (no sandboxes).
type Desired struct {
	Sandboxes []Sandbox
	// ProxyPort is the transparent proxy's port on the gateway: TCP 80 and 443 from a
	// sandbox, to anything but a hard-denied or allowed destination, is DNATed to
	// Gateway:ProxyPort. Required when there are sandboxes.
	ProxyPort uint16
	// DNSPort is the DNS filter's port on the gateway: TCP and UDP 53 from a sandbox, to
	// any address, is DNATed to Gateway:DNSPort. Required when there are sandboxes.
	DNSPort uint16
	// HardDeny lists destinations never forwarded, whatever Allowed says. Apply adds a
	// floor that no caller can remove: 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16 (cloud
	// metadata), 224.0.0.0/4, 255.255.255.255, SandboxCIDR and every sandbox's Gateway.
	// IPv6 prefixes are ignored (IPv6 from a sandbox is dropped whole).
	HardDeny []netip.Prefix
	// SandboxCIDR is the operator's sandbox range (IPv4): every sandbox Addr must be
	// inside it, forwarded traffic from it is masqueraded, and it is hard-denied (a
	// sandbox never reaches another). Required when there are sandboxes.
	SandboxCIDR netip.Prefix
	// IfacePrefix, if set, is the name prefix of every sandbox host interface (e.g. "eg").
	// Traffic from or to an interface with this prefix that is not one of Sandboxes is
	// dropped, so a veth that exists before the Apply that names it fails closed.
	// Every HostIface must start with it. Optional.
	IfacePrefix string
	// LogGroup is the NFLOG group of the log rules (the first packet of a denied flow);
	// 0 means DefaultLogGroup. The flow log reader binds the same group.
	LogGroup uint16
	// FastPath turns on the kernel fast path (DESIGN §4, doc.go "The fast path"): the
	// fast_<name> sets, their rules and the frag_pre chain. Off, the table is exactly as
	// without the fields below.
	FastPath bool
	// FastQueue is the NFQUEUE number where the fast path holds a flow's packets until
	// egressd verified it; 0 means DefaultFastQueue. Used only with FastPath.
	FastQueue uint16
}

// floor is the part of the hard-deny set that is always there (DESIGN §2.2 step 1).
var floor = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("255.255.255.255/32"),
}

// ipRange is an inclusive range of IPv4 addresses.
type ipRange struct{ lo, hi uint32 }

// sandbox is a validated Sandbox, in IPv4 form, with its allowed ranges merged.
type sandbox struct {
	name, iface   string
	addr, gateway netip.Addr
	allowed       []ipRange
	tcp           []endpoint // sorted, one per (address, port)
	fast          []endpoint // likewise, port 443 only
	monitor       bool
}

// state is a validated Desired: the input of build.
type state struct {
	sandboxes   []sandbox // sorted by name
	proxyPort   uint16
	dnsPort     uint16
	hardDeny    []ipRange
	sandboxCIDR netip.Prefix // invalid when unset (only allowed without sandboxes)
	ifacePrefix string
	logGroup    uint16
	fastPath    bool
	fastQueue   uint16 // with fastPath only
}

// Validate reports whether Apply would accept d, with the error Apply would return. Fakes
// of Apply call it, so that a caller's invalid state fails in tests as it would in the kernel.
func (d Desired) Validate() error {
	_, err := validate(d)
	return err
}

// validate checks d and brings it to the canonical form build works on. Its errors name
// the field at fault; they are bugs of the caller (the store and the netns package produce
// Desired), not user input.
func validate(d Desired) (*state, error) {
	st := &state{proxyPort: d.ProxyPort, dnsPort: d.DNSPort, ifacePrefix: d.IfacePrefix, logGroup: d.LogGroup}
	if st.logGroup == 0 {
		st.logGroup = DefaultLogGroup
	}
	if d.FastPath {
		st.fastPath, st.fastQueue = true, d.FastQueue
		if st.fastQueue == 0 {
			st.fastQueue = DefaultFastQueue
		}
	}
	if d.SandboxCIDR.IsValid() {
		p, ok := prefix4(d.SandboxCIDR)
		if !ok {
			return nil, fmt.Errorf("firewall: SandboxCIDR %s is not IPv4", d.SandboxCIDR)
		}
		st.sandboxCIDR = p
	}
	if d.IfacePrefix != "" {
		if err := checkIface(d.IfacePrefix); err != nil || len(d.IfacePrefix) > 14 {
			return nil, fmt.Errorf("firewall: IfacePrefix %q is not a valid interface name prefix", d.IfacePrefix)
		}
	}
	if len(d.Sandboxes) > 0 {
		switch {
		case !st.sandboxCIDR.IsValid():
			return nil, fmt.Errorf("firewall: SandboxCIDR is required with sandboxes")
		case d.ProxyPort == 0 || d.DNSPort == 0:
			return nil, fmt.Errorf("firewall: ProxyPort and DNSPort are required with sandboxes")
		case d.ProxyPort == d.DNSPort:
			return nil, fmt.Errorf("firewall: ProxyPort and DNSPort are both %d", d.ProxyPort)
		}
	}
	names, ifaces, addrs := map[string]bool{}, map[string]bool{}, map[netip.Addr]bool{}
	deny := slices.Clone(floor)
	if st.sandboxCIDR.IsValid() {
		deny = append(deny, st.sandboxCIDR)
	}
	for i, s := range d.Sandboxes {
		v, err := validSandbox(s, st)
		if err != nil {
			return nil, fmt.Errorf("firewall: Sandboxes[%d] (%q): %w", i, s.Name, err)
		}
		if names[v.name] || ifaces[v.iface] || addrs[v.addr] {
			return nil, fmt.Errorf("firewall: Sandboxes[%d] (%q): name, HostIface or Addr used twice", i, s.Name)
		}
		names[v.name], ifaces[v.iface], addrs[v.addr] = true, true, true
		deny = append(deny, netip.PrefixFrom(v.gateway, 32))
		st.sandboxes = append(st.sandboxes, v)
	}
	slices.SortFunc(st.sandboxes, func(a, b sandbox) int { return strings.Compare(a.name, b.name) })
	hd, err := ranges(append(deny, d.HardDeny...))
	if err != nil {
		return nil, fmt.Errorf("firewall: HardDeny: %w", err)
	}
	st.hardDeny = hd
	return st, nil
}

func validSandbox(s Sandbox, st *state) (sandbox, error) {
	v := sandbox{name: s.Name, iface: s.HostIface}
	if err := checkName(s.Name); err != nil {
		return v, err
	}
	if err := checkIface(s.HostIface); err != nil {
		return v, err
	}
	if st.ifacePrefix != "" && !strings.HasPrefix(s.HostIface, st.ifacePrefix) {
		return v, fmt.Errorf("HostIface %q does not start with IfacePrefix %q", s.HostIface, st.ifacePrefix)
	}
	v.addr, v.gateway = s.Addr.Unmap(), s.Gateway.Unmap()
	switch {
	case !v.addr.Is4():
		return v, fmt.Errorf("Addr %v is not an IPv4 address", s.Addr)
	case !v.gateway.Is4():
		return v, fmt.Errorf("Gateway %v is not an IPv4 address", s.Gateway)
	case v.addr == v.gateway:
		return v, fmt.Errorf("Addr and Gateway are both %v", v.addr)
	case !st.sandboxCIDR.Contains(v.addr):
		return v, fmt.Errorf("Addr %v is outside SandboxCIDR %v", v.addr, st.sandboxCIDR)
	}
	allowed, err := ranges(s.Allowed)
	if err != nil {
		return v, fmt.Errorf("Allowed: %w", err)
	}
	v.allowed = allowed
	v.tcp, err = endpoints(s.TCP)
	if err != nil {
		return v, fmt.Errorf("TCP: %w", err)
	}
	v.monitor = s.Monitor
	switch {
	case len(s.Fast) > 0 && !st.fastPath:
		return v, fmt.Errorf("Fast has %d endpoints, but Desired.FastPath is off", len(s.Fast))
	case len(s.Fast) > 0 && s.Monitor:
		return v, fmt.Errorf("Fast has %d endpoints, but a Monitor sandbox has no fast path", len(s.Fast))
	}
	v.fast, err = fastEndpoints(s.Fast)
	if err != nil {
		return v, fmt.Errorf("Fast: %w", err)
	}
	return v, nil
}

// checkName accepts what is safe inside an nft identifier after a prefix.
func checkName(n string) error {
	if n == "" || len(n) > 64 {
		return fmt.Errorf("name %q must have 1 to 64 characters", n)
	}
	for _, c := range n {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
		if !ok {
			return fmt.Errorf("name %q: only letters, digits, '_', '-' and '.' are allowed", n)
		}
	}
	return nil
}

// checkIface applies the kernel's rules for interface names (dev_valid_name).
func checkIface(n string) error {
	if n == "" || len(n) > 15 || n == "." || n == ".." {
		return fmt.Errorf("HostIface %q is not a valid interface name (1 to 15 bytes)", n)
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c == '/' || c == ':' || c <= ' ' || c == 0x7f {
			return fmt.Errorf("HostIface %q has a character not allowed in interface names", n)
		}
	}
	return nil
}

// prefix4 returns p as a masked IPv4 prefix; ok is false for a (non-mapped) IPv6 prefix.
func prefix4(p netip.Prefix) (netip.Prefix, bool) {
	a := p.Addr()
	if a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, false
		}
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked(), true
	}
	if !a.Is4() {
		return netip.Prefix{}, false
	}
	return p.Masked(), true
}

// ranges turns prefixes into sorted, disjoint, non-adjacent IPv4 ranges (the kernel's
// interval sets refuse overlapping elements). IPv6 prefixes are dropped.
func ranges(ps []netip.Prefix) ([]ipRange, error) {
	var rs []ipRange
	for _, p := range ps {
		if !p.IsValid() {
			return nil, fmt.Errorf("invalid prefix %v", p)
		}
		p4, ok := prefix4(p)
		if !ok {
			continue
		}
		lo := u32(p4.Addr())
		hi := lo | uint32(uint64(1)<<(32-p4.Bits())-1)
		rs = append(rs, ipRange{lo, hi})
	}
	slices.SortFunc(rs, func(a, b ipRange) int {
		switch {
		case a.lo < b.lo:
			return -1
		case a.lo > b.lo:
			return 1
		}
		return 0
	})
	var out []ipRange
	for _, r := range rs {
		if n := len(out); n > 0 && uint64(r.lo) <= uint64(out[n-1].hi)+1 {
			out[n-1].hi = max(out[n-1].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addr4(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// String writes a range as nft lists it: an address, a prefix, or first-last.
func (r ipRange) String() string {
	size := uint64(r.hi) - uint64(r.lo) + 1
	if size&(size-1) == 0 && uint64(r.lo)%size == 0 {
		bits := 32
		for s := size; s > 1; s >>= 1 {
			bits--
		}
		if bits == 32 {
			return addr4(r.lo).String()
		}
		return netip.PrefixFrom(addr4(r.lo), bits).String()
	}
	return addr4(r.lo).String() + "-" + addr4(r.hi).String()
}
