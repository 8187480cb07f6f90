// Package netnstest fakes the sandbox networks of package netns for tests that run without
// root: Fake takes the calls a gateway makes on a netns.Manager and keeps, instead of
// namespaces, veth pairs and addresses, a record of them that it prints sorted (Dump), and
// the changes made, in order (Ops).
package netnstest

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/egressd/egressd/internal/host/netns"
)

// Fake stands for a netns.Manager. Its zero value has no namespaces, forwarding off, and
// its namespaces in netns.DefaultNetnsDir. It is safe for concurrent use.
type Fake struct {
	// Dir is the namespace directory of the attachments it makes; "" means
	// netns.DefaultNetnsDir.
	Dir string

	mu         sync.Mutex
	nets       map[string]network
	forwarding bool
	ops        []string
}

// network is one namespace in the directory: this gateway's sandbox network, or another
// gateway's namespace of the same name.
type network struct {
	a       netns.Attachment
	foreign bool
}

func (f *Fake) dir() string {
	if f.Dir == "" {
		return netns.DefaultNetnsDir
	}
	return f.Dir
}

// Attachment is the real Manager's: the same name, interface, addresses and path.
func (f *Fake) Attachment(tenant, vmID string, subnet netip.Prefix) (netns.Attachment, error) {
	return netns.NewAttachment(tenant, vmID, subnet, f.dir())
}

// Create checks a as the real Create does and records its network: made ("create"), or
// brought back to what a says ("repair"). Like the real one, it refuses a namespace of the
// name that belongs to another gateway (see Foreign) and leaves it alone.
func (f *Fake) Create(a netns.Attachment) error {
	if a.Path == "" {
		a.Path = filepath.Join(f.dir(), a.Name)
	}
	if err := a.Validate(); err != nil {
		return err
	}
	if a.Path != filepath.Join(f.dir(), a.Name) {
		return fmt.Errorf("netns: %s: path %s is not in %s", a.Name, a.Path, f.dir())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	old, ok := f.nets[a.Name]
	switch {
	case ok && old.foreign:
		return fmt.Errorf("netns: creating %s: the namespace exists and belongs to another gateway", a.Name)
	case ok:
		f.ops = append(f.ops, "repair "+a.Name)
	default:
		f.ops = append(f.ops, "create "+a.Name)
	}
	if f.nets == nil {
		f.nets = make(map[string]network)
	}
	f.nets[a.Name] = network{a: a}
	return nil
}

// Delete removes this gateway's network called name, as the real Delete does, and refuses
// a namespace of another gateway (see Foreign), which it leaves alone. What is not there is
// no error, and no change.
func (f *Fake) Delete(name string) error {
	if !netns.ValidName(name) {
		return fmt.Errorf("netns: %q is not an egressd namespace name", name)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if n, ok := f.nets[name]; ok && n.foreign {
		return fmt.Errorf("netns: deleting %s: the namespace exists and belongs to another gateway; left alone", name)
	} else if ok {
		delete(f.nets, name)
		f.ops = append(f.ops, "delete "+name)
	}
	return nil
}

// List returns, sorted, the names of this gateway's networks (not those of Foreign).
func (f *Fake) List() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for name, n := range f.nets {
		if !n.foreign {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// EnableForwarding records that forwarding is on.
func (f *Fake) EnableForwarding() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.forwarding {
		f.forwarding = true
		f.ops = append(f.ops, "forwarding on")
	}
	return nil
}

// Put adds a network of this gateway as if an earlier run had made it: what a restarted
// gateway finds. It is not an op.
func (f *Fake) Put(a netns.Attachment) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nets == nil {
		f.nets = make(map[string]network)
	}
	f.nets[a.Name] = network{a: a}
}

// Foreign adds a namespace called name that belongs to another gateway sharing the
// directory. It is not an op.
func (f *Fake) Foreign(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nets == nil {
		f.nets = make(map[string]network)
	}
	f.nets[name] = network{a: netns.Attachment{Name: name, Path: filepath.Join(f.dir(), name)}, foreign: true}
}

// Ops returns the changes made since the last call of Ops, in order: "create <name>",
// "repair <name>", "delete <name>", "forwarding on".
func (f *Fake) Ops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.ops
	f.ops = nil
	return out
}

// Dump lists every namespace, sorted by name, with its two interfaces and addresses, one a
// line, after a line that says whether forwarding is on:
//
//	forwarding on
//	egressd-0123456789 /run/netns/egressd-0123456789: eg0123456789 100.96.0.1/30 <-> eth0 100.96.0.2/30
//	egressd-ffffffffff /run/netns/egressd-ffffffffff: another gateway's
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	if f.forwarding {
		b.WriteString("forwarding on\n")
	} else {
		b.WriteString("forwarding off\n")
	}
	names := make([]string, 0, len(f.nets))
	for name := range f.nets {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		n := f.nets[name]
		if n.foreign {
			fmt.Fprintf(&b, "%s %s: another gateway's\n", name, n.a.Path)
			continue
		}
		bits := n.a.Prefix.Bits()
		fmt.Fprintf(&b, "%s %s: %s %s <-> %s %s\n", name, n.a.Path,
			n.a.HostIface, netip.PrefixFrom(n.a.Gateway, bits), netns.SandboxIface, netip.PrefixFrom(n.a.Addr, bits))
	}
	return b.String()
}
