package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
)

// MarkTCP is the conntrack mark bit that the forward chain sets on a flow it admitted by
// the tcp_<name> set (allowed_tcp). Established packets of a flow carrying it pass whether
// or not its element is still in the set (DESIGN §2.6: connections outlive the DNS
// answer), FlushTCP cuts flows by it, and the flow log reports flows that carry it.
//
// One bit, always read and written alone (ct mark | bit, ct mark & bit), so the other bits
// of a ct mark stay whatever other software put there. Bit 24 is clear of the marks in common use on Linux
// gateways: kube-proxy (0x4000, 0x8000), Cilium (0x0f00, 0xf000 and low bits), Tailscale
// (0xff0000), wg-quick (0xca6c), Istio (0x539), and Calico's bits, which it allocates from
// the bottom of its mask 0xffff0000 (0x10000 upwards).
const MarkTCP uint32 = 0x0100_0000

// MarkMask is the part of the ct mark that egressd owns: MarkTCP and the fast path's
// MarkFast, MarkFastDeny and MarkFastWait. A flow with any of them set is cut by its own
// call (FlushTCP, CutFast), never by FlushConntrack.
const MarkMask = MarkTCP | MarkFast | MarkFastDeny | MarkFastWait

// DefaultLogGroup is the NFLOG group of the log rules when Desired.LogGroup is 0.
const DefaultLogGroup uint16 = 6567

// The log rule's rate, per sandbox: enough to record every distinct attempt of a sandbox
// working normally, too little for a flood to flood the log reader (the reader drops what
// it cannot take anyway). A token bucket: a burst of logBurst, then logRate a second.
const (
	logRate  = 20
	logBurst = 50
)

// Log prefixes: what the flow log reports as Attempt.Prefix.
const (
	PrefixDeny    = "deny"
	PrefixMonitor = "monitor"
)

const prefixTCP = "tcp_"

// Endpoint is one (address, port) that a sandbox may open TCP connections to, for Timeout
// more: the kernel removes the element when it expires, and new connections to it are
// dropped from then on (established ones stay up). The address is IPv4 (an IPv4-mapped
// IPv6 address counts as the IPv4 address it holds); an IPv6 endpoint is ignored, as
// IPv6 from a sandbox is dropped whole. An endpoint with Timeout under a millisecond (the
// kernel's unit) has expired and is ignored.
type Endpoint struct {
	Addr    netip.Addr
	Port    uint16
	Timeout time.Duration
}

func (e Endpoint) String() string {
	return fmt.Sprintf("%s . %d timeout %s", e.Addr, e.Port, nftDuration(e.Timeout))
}

// endpoint is a validated Endpoint: IPv4, a port, a timeout in whole milliseconds.
type endpoint struct {
	addr    netip.Addr
	port    uint16
	timeout time.Duration
}

// endpoints validates eps and brings them to canonical form: IPv4 only, expired ones
// dropped, sorted by address and port, one element per (address, port) with the longest
// timeout given for it. An invalid address or port 0 is a caller's bug: an error.
func endpoints(eps []Endpoint) ([]endpoint, error) {
	out := make([]endpoint, 0, len(eps))
	for _, e := range eps {
		if !e.Addr.IsValid() || e.Port == 0 {
			return nil, fmt.Errorf("endpoint %v:%d: invalid address or port 0", e.Addr, e.Port)
		}
		a := e.Addr.Unmap()
		t := e.Timeout.Truncate(time.Millisecond)
		if !a.Is4() || t <= 0 {
			continue
		}
		out = append(out, endpoint{a, e.Port, t})
	}
	slices.SortFunc(out, func(x, y endpoint) int {
		if c := x.addr.Compare(y.addr); c != 0 {
			return c
		}
		if c := compare(x.port, y.port); c != 0 {
			return c
		}
		return compare(y.timeout, x.timeout) // longest first: kept by the Compact below
	})
	return slices.CompactFunc(out, func(x, y endpoint) bool { return x.addr == y.addr && x.port == y.port }), nil
}

// key is the set element key of ipv4_addr . inet_service: each field padded to a
// 32-bit register, as the kernel lays out a concatenation.
func (e endpoint) key() []byte {
	k := make([]byte, 8)
	copy(k, ip4(e.addr))
	copy(k[4:], be16(e.port))
	return k
}

func (e endpoint) text() string {
	return fmt.Sprintf("%s . %d timeout %s", e.addr, e.port, nftDuration(e.timeout))
}

// nftDuration writes d as nft does: 1d2h3m4s5ms, units with a zero count left out.
func nftDuration(d time.Duration) string {
	ms := d.Milliseconds()
	if ms <= 0 {
		return "0s"
	}
	var b strings.Builder
	for _, u := range []struct {
		name string
		ms   int64
	}{{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}} {
		if n := ms / u.ms; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			ms -= n * u.ms
		}
	}
	return b.String()
}

func tcpSet(name string, eps []endpoint) *set {
	s := &set{name: name, tcp: true}
	for _, e := range eps {
		s.elemText = append(s.elemText, e.text())
		s.elems = append(s.elems, nftables.SetElement{Key: e.key(), Timeout: e.timeout})
	}
	return s
}

// tcpKeyType is ipv4_addr . inet_service.
var tcpKeyType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)

// nftSet is the library's description of a set of the plan (id 0: an existing set,
// named; Admit and Revoke refer to tcp_<name> this way).
func (s *set) nftSet(t *nftables.Table, id uint32) *nftables.Set {
	ns := &nftables.Set{Table: t, ID: id, Name: s.name}
	switch {
	case s.vmap:
		ns.KeyType, ns.DataType, ns.IsMap = nftables.TypeIFName, nftables.TypeVerdict, true
		ns.KeyByteOrder = binaryutil.NativeEndian
	case s.ifname:
		ns.KeyType, ns.KeyByteOrder = nftables.TypeIFName, binaryutil.NativeEndian
	case s.tcp:
		ns.KeyType, ns.Concatenation, ns.HasTimeout = tcpKeyType, true, true
	default:
		ns.KeyType, ns.Interval, ns.KeyByteOrder = nftables.TypeIPAddr, true, binaryutil.BigEndian
	}
	return ns
}

// Admit puts eps into the tcp_<name> set of sandbox name, each with its timeout, in one
// netlink batch; an element already there gets the new timeout (shorter or longer). It is
// on the DNS answer path: the sandbox connects as soon as it has the answer, so the
// caller admits before it answers. The batch adds every element (so that the delete
// cannot fail on a missing one), deletes them, and adds them again with their timeouts:
// the kernel keeps an existing element's timeout on a plain add, and commits the batch
// whole, so no packet sees an element missing. Expired and IPv6 endpoints are ignored.
//
// Admit changes the table in force without Apply: the caller keeps the book of what it
// admitted and passes what is left of it (Sandbox.TCP, remaining lifetimes) to every
// Apply, which replaces the table whole. Admit and Apply are serialised, so an Admit is
// either before an Apply (and lost unless that Apply's state has it) or after it.
// Admitting to a sandbox the table does not have is an error.
func (f *Firewall) Admit(name string, eps []Endpoint) error {
	es, err := endpoints(eps)
	return f.elements("admit", prefixTCP, name, es, err, true)
}

// Revoke removes eps from the tcp_<name> set, in one batch; an element not there is no
// error (the batch adds each before deleting it). Timeouts are ignored. Connections
// already open stay up: FlushTCP cuts them.
func (f *Firewall) Revoke(name string, eps []Endpoint) error {
	es, err := endpoints(keysOnly(eps))
	return f.elements("revoke", prefixTCP, name, es, err, false)
}

// keysOnly gives eps a timeout that validation keeps: a removal needs the key only.
func keysOnly(eps []Endpoint) []Endpoint {
	keys := make([]Endpoint, len(eps))
	for i, e := range eps {
		keys[i] = Endpoint{Addr: e.Addr, Port: e.Port, Timeout: time.Hour}
	}
	return keys
}

// elements is Admit (admit) or Revoke of the validated es (err: their validation) in the
// set setPrefix+name.
func (f *Firewall) elements(op, setPrefix, name string, es []endpoint, err error, admit bool) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("firewall: %s: %w", op, err)
	}
	if err != nil {
		return fmt.Errorf("firewall: %s %s: %w", op, name, err)
	}
	if len(es) == 0 {
		return nil
	}
	s := tcpSet(setPrefix+name, es)
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.lasting()
	if err != nil {
		return err
	}
	ns := s.nftSet(table(), 0)
	bare := make([]nftables.SetElement, len(s.elems))
	for i, e := range s.elems {
		bare[i] = nftables.SetElement{Key: e.Key}
	}
	for rest := 0; rest < len(s.elems); rest += elementsPerMessage {
		end := min(rest+elementsPerMessage, len(s.elems))
		err = errors.Join(
			c.SetAddElements(ns, s.elems[rest:end]),
			c.SetDeleteElements(ns, bare[rest:end]))
		if admit {
			err = errors.Join(err, c.SetAddElements(ns, s.elems[rest:end]))
		}
		if err != nil {
			f.dropLasting() // messages of this batch may be queued on it
			return fmt.Errorf("firewall: %s %s: %w", op, name, err)
		}
	}
	if err := c.Flush(); err != nil {
		f.dropLasting() // the socket may hold answers the library did not read
		return fmt.Errorf("firewall: %s %d endpoints of %s: %w", op, len(es), name, err)
	}
	return nil
}

// dropLasting closes the lasting connection after a failure, so that the next call
// starts afresh. Called with f.mu held.
func (f *Firewall) dropLasting() {
	if f.admitConn != nil {
		_ = f.admitConn.CloseLasting()
		f.admitConn = nil
	}
}

// lasting is the netlink connection that Admit and Revoke reuse (a socket per call would
// cost more than the batch). Called with f.mu held.
func (f *Firewall) lasting() (*nftables.Conn, error) {
	if f.admitConn != nil {
		return f.admitConn, nil
	}
	co := append(slices.Clone(f.extra), nftables.AsLasting())
	if f.netnsFd != 0 {
		co = append(co, nftables.WithNetNSFd(f.netnsFd))
	}
	c, err := nftables.New(co...)
	if err != nil {
		return nil, fmt.Errorf("firewall: netlink: %w", err)
	}
	f.admitConn = c
	return c, nil
}

// Close releases the connection that Admit and Revoke keep open. The Firewall stays
// usable (the next Admit opens a new one); the table stays in the kernel.
func (f *Firewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.admitConn == nil {
		return nil
	}
	err := f.admitConn.CloseLasting()
	f.admitConn = nil
	return err
}

func compare[T ~uint16 | ~int64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
