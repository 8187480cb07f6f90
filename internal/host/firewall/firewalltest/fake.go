// Package firewalltest fakes the firewall for tests that run without root: Fake takes the
// calls a gateway makes on a firewall.Firewall and keeps, instead of a kernel table, the
// text that firewall.Render gives for the state in force. A golden file of that text is
// the real rule set, line for line, that the kernel would hold.
package firewalltest

import (
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/egressd/egressd/internal/host/firewall"
)

// Fake stands for a firewall.Firewall. Like the kernel, it keeps the last state applied:
// a failed Apply leaves the previous one in force. The zero value is a firewall with no
// table. It is safe for concurrent use.
type Fake struct {
	mu       sync.Mutex
	inForce  *firewall.Desired // nil: no table
	applies  int               // successful Applies
	failures int               // Applies that failed
	failWith error             // what every Apply returns while set
	flushes  []Flush
	applied  chan struct{}
}

// Flush is one call of FlushConntrack: the flows of Sandbox to destinations outside Keep.
type Flush struct {
	Sandbox netip.Addr
	Keep    []netip.Prefix
}

// String writes a flush as a test's expectation can: "100.96.0.2 keep 203.0.113.0/25".
func (f Flush) String() string {
	keep := make([]string, len(f.Keep))
	for i, p := range f.Keep {
		keep[i] = p.String()
	}
	return f.Sandbox.String() + " keep " + strings.Join(keep, ",")
}

// Apply checks d as the real Apply does and puts it in force, or fails with the error
// given to Fail.
func (f *Fake) Apply(d firewall.Desired) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failWith != nil {
		f.failures++
		return f.failWith
	}
	if err := d.Validate(); err != nil {
		f.failures++
		return err
	}
	d.Sandboxes = slices.Clone(d.Sandboxes)
	for i := range d.Sandboxes {
		d.Sandboxes[i].Allowed = slices.Clone(d.Sandboxes[i].Allowed)
	}
	d.HardDeny = slices.Clone(d.HardDeny)
	f.inForce = &d
	f.applies++
	if f.applied != nil {
		select {
		case f.applied <- struct{}{}:
		default:
		}
	}
	return nil
}

// FlushConntrack records the call. The fake keeps no flows: it deletes none.
func (f *Fake) FlushConntrack(sandbox netip.Addr, keep []netip.Prefix) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushes = append(f.flushes, Flush{Sandbox: sandbox, Keep: slices.Clone(keep)})
	return 0, nil
}

// Fail makes every Apply from now on fail with err (nil: succeed again).
func (f *Fake) Fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failWith = err
}

// Dump is the table in force as `nft list table inet egressd` would show it (see
// firewall.Render), or "" when nothing was ever applied.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.inForce == nil {
		return ""
	}
	return firewall.Render(*f.inForce)
}

// Sandboxes names the sandboxes of the table in force, sorted.
func (f *Fake) Sandboxes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	if f.inForce != nil {
		for _, s := range f.inForce.Sandboxes {
			out = append(out, s.Name)
		}
	}
	slices.Sort(out)
	return out
}

// Applies counts the successful and the failed Applies so far.
func (f *Fake) Applies() (ok, failed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applies, f.failures
}

// Flushes returns the FlushConntrack calls since the last call of Flushes, in order.
func (f *Fake) Flushes() []Flush {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.flushes
	f.flushes = nil
	return out
}

// Applied is signalled (without blocking, so signals merge) after every successful Apply:
// a test that waits for a gateway working in the background waits on it.
func (f *Fake) Applied() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.applied == nil {
		f.applied = make(chan struct{}, 1)
	}
	return f.applied
}
