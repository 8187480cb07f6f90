package firewall

import (
	"fmt"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Firewall installs egressd's table. It holds no kernel state of its own: every Apply
// rebuilds the whole table, so a restarted egressd needs no memory of what it installed.
// It is safe for concurrent use; Applies are serialised.
type Firewall struct {
	netnsFd int                   // 0: the netns of the calling thread
	extra   []nftables.ConnOption // tests: nftables.WithTestDial
	mu      sync.Mutex            // serialises Apply, Admit and Revoke
	// admitConn is the lasting connection of Admit and Revoke, opened on first use.
	admitConn *nftables.Conn
}

// Option configures a Firewall (and FlushConntrack).
type Option func(*options)

type options struct{ netnsFd int }

// WithNetNSFd makes the firewall work in the network namespace that fd refers to, instead
// of the caller's. The fd must stay open while the Firewall is used. Tests use it to work
// in namespaces they created.
func WithNetNSFd(fd int) Option { return func(o *options) { o.netnsFd = fd } }

func collect(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// New returns a Firewall for the current network namespace, or the one named by WithNetNSFd.
func New(opts ...Option) *Firewall {
	return &Firewall{netnsFd: collect(opts).netnsFd}
}

// conn opens a netlink connection; objects is the number of chains, sets, elements and
// rules of the batch, which sizes the socket buffers.
func (f *Firewall) conn(objects int) (*nftables.Conn, error) {
	co := slices.Clone(f.extra)
	if f.netnsFd != 0 {
		co = append(co, nftables.WithNetNSFd(f.netnsFd))
	}
	co = append(co, nftables.WithSockOptions(socketBuffers(objects)))
	c, err := nftables.New(co...)
	if err != nil {
		return nil, fmt.Errorf("firewall: netlink: %w", err)
	}
	return c, nil
}

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// Apply makes the kernel hold exactly the table that d describes (see Render), in one
// netlink batch: add the table (so that the delete cannot fail), delete it, add it again
// with every chain, set, element and rule. The kernel commits the batch whole or not at
// all, so no packet sees a half state, and a failed Apply leaves the previous table in
// force. Apply is idempotent and goes from any state to any other. It touches no table but
// inet egressd.
func (f *Firewall) Apply(d Desired) error {
	st, err := validate(d)
	if err != nil {
		return err
	}
	return f.install(build(st))
}

func (f *Firewall) install(p *plan) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.conn(p.objects())
	if err != nil {
		return err
	}
	t := table()
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	// Chains first: the dispatch maps' elements name them.
	chains := make(map[string]*nftables.Chain, len(p.chains))
	for _, pc := range p.chains {
		nc := &nftables.Chain{Name: pc.name, Table: t}
		if pc.base != nil {
			policy := nftables.ChainPolicyAccept
			nc.Type, nc.Hooknum, nc.Priority, nc.Policy = pc.base.typ, pc.base.hook, pc.base.prio, &policy
		}
		chains[pc.name] = c.AddChain(nc)
	}
	// Set IDs are our own, so that the library's global ID counter is not involved.
	ids := make(map[string]uint32, len(p.sets))
	for i, s := range p.sets {
		ns := s.nftSet(t, uint32(i+1))
		if err := c.AddSet(ns, nil); err != nil {
			return fmt.Errorf("firewall: set %s: %w", s.name, err)
		}
		// The element list is one netlink attribute, whose length is 16 bits: a long list
		// would be cut short without an error. So elements go in chunks (an even number,
		// so an interval's start and end stay together), all in the same batch.
		for elems := s.elems; len(elems) > 0; {
			n := min(len(elems), elementsPerMessage)
			if err := c.SetAddElements(ns, elems[:n]); err != nil {
				return fmt.Errorf("firewall: set %s: %w", s.name, err)
			}
			elems = elems[n:]
		}
		ids[s.name] = ns.ID
	}
	for _, pc := range p.chains {
		for _, r := range pc.rules {
			ex := r.exprs()
			for _, e := range ex {
				if l, ok := e.(*expr.Lookup); ok {
					l.SetID = ids[l.SetName]
				}
			}
			nr := &nftables.Rule{Table: t, Chain: chains[pc.name], Exprs: ex}
			if r.comment != "" {
				nr.UserData = userdata.AppendString(nil, userdata.TypeComment, r.comment)
			}
			c.AddRule(nr)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: apply table inet %s: %w", TableName, err)
	}
	return nil
}

// Remove deletes egressd's table, and nothing else; it is a no-op when there is none.
// It is the operator's uninstall: egressd never calls it on a crash or a normal stop,
// because the rules must stay so that sandbox traffic fails closed while egressd is down.
func (f *Firewall) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.conn(0)
	if err != nil {
		return err
	}
	t := table()
	c.AddTable(t) // so that the delete succeeds when there is no table
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: remove table inet %s: %w", TableName, err)
	}
	return nil
}

// A batch is one sendmsg, and the kernel answers every message of it (an ack, and an echo
// for each rule) before the library reads anything: the default socket buffers (about
// 200 KiB) hold the batch of some 45 sandboxes only. So the buffers are sized from the
// batch, as nft does: about 185 bytes are sent and under 2 KiB are queued in answer per
// object (measured). SO_*BUFFORCE needs CAP_NET_ADMIN, which Apply needs anyway; without
// it the plain options apply, capped by net.core.wmem_max and rmem_max.
const (
	elementsPerMessage = 256 // × at most ~150 bytes (a vmap element): well under 64 KiB
	sendPerObject      = 512
	recvPerObject      = 2048
	bufferBase         = 256 << 10
)

func socketBuffers(objects int) nftables.SockOption {
	snd, rcv := bufferBase+sendPerObject*objects, bufferBase+recvPerObject*objects
	return func(c *netlink.Conn) error {
		rc, err := c.SyscallConn()
		if err != nil {
			return nil // not a socket (tests' fake netlink)
		}
		var serr error
		err = rc.Control(func(fd uintptr) {
			serr = setBuffer(int(fd), unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, snd)
			if serr == nil {
				serr = setBuffer(int(fd), unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, rcv)
			}
		})
		if err != nil {
			return fmt.Errorf("firewall: netlink socket buffers: %w", err)
		}
		return serr
	}
}

func setBuffer(fd, force, plain, size int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size); err == nil {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size); err != nil {
		return fmt.Errorf("firewall: netlink socket buffer: %w", err)
	}
	return nil
}
