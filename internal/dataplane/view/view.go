// Package view is the gateway's live, compiled picture of the store: every open session, its
// proxy credentials, and its effective policy compiled into an immutable policy.Effective. The data
// path reads all of it through atomic pointers, without a lock per connection: the policies
// one by one, and the index that finds a session by its credentials or a VM by its address
// as a whole, which a sync replaces rather than changes.
//
// The view follows the store's change log: it loads everything once, then applies the changes
// after the revision it has seen. It syncs when kicked (the API kicks it after each write in
// the same process, so a new policy applies to the next connection at once) and on a short
// timer as a safety net (and, in a fleet, to learn of other nodes' writes).
//
// It keeps two kinds of effective policy. A Session's is its own policy AND its VM's: the
// explicit proxy knows which session a request comes from. A VM's is its policy AND every
// open session's on it: the transparent gateway sees only the VM's address, and the
// sessions that share a VM's network must all be obeyed.
//
// The view also knows every live connection the data path has open (Track). When an
// effective policy changes, each tracked connection is judged again, and those the new
// policy denies are cancelled; when a session or VM ends, all of its connections are.
package view

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/follow"
	"github.com/egressd/egressd/policy"
)

// ErrUnauthorized is the answer to credentials that match no open session.
var ErrUnauthorized = errors.New("no open session has these credentials")

// Store is what the view reads.
type Store interface {
	AllVMs(ctx context.Context) ([]store.VM, error)
	GetVM(ctx context.Context, tenant, id string) (store.VM, error)
	AllSessions(ctx context.Context) ([]store.Session, error)
	GetSession(ctx context.Context, tenant, id string) (store.Session, error)
	ListSessions(ctx context.Context, tenant, vmID string) ([]store.Session, error)
	GetPolicy(ctx context.Context, tenant string, scope store.Scope, id string) (store.PolicyRecord, error)
	// ListGrants gives each layer its active grants (DESIGN §2.8).
	ListGrants(ctx context.Context, tenant string, scope store.Scope, id string, now time.Time) ([]store.Grant, error)
	ChangesSince(ctx context.Context, rev int64, limit int) ([]store.Change, error)
	Revision(ctx context.Context) (int64, error)
}

// Config is what the view needs besides the store.
type Config struct {
	// Env is the operator's setting every effective policy is built in; nil: the built-in one.
	Env  *policy.Env
	Poll time.Duration // how often to look for changes without a kick; 0: 500ms
	// SyncTimeout bounds one sync; 0: 30s. A store connection that hangs (a database host
	// that vanished without closing it) must turn into a failed sync, which marks the view
	// not ready and is retried, rather than freeze the view until TCP gives up.
	SyncTimeout time.Duration
	Logger      *slog.Logger
	// Node is the ID of the gateway node whose data path reads this view: VMByAddr finds
	// only its VMs (see there). "" finds every node's, for tests and views of no node.
	Node string
}

// View is the live picture. Create it with New, then Start it.
type View struct {
	st  Store
	cfg Config
	log *slog.Logger

	// idx is what the data path looks sessions and VMs up in: one atomic load per lookup,
	// no lock (DESIGN §9).
	idx atomic.Pointer[index]

	// mu serializes the writers (the sync, Start, the end of following) and guards what
	// follows. Revision takes it for reading; the data path never does.
	mu     sync.RWMutex
	next   *index  // the writers' copy of idx, changed in place until commit publishes it
	ending []*live // sessions and VMs taken out of next, ended once it is published
	// rev: every change up to it is applied, and published in idx. Written by the sync
	// (under mu), waited on by WaitRevision.
	rev follow.Revision

	// expiries: when the effective policy of a session (by ID) or a VM must be compiled
	// again because one of its grants expires; guarded by mu. rearm wakes the expiry timer
	// when it changed.
	expiries map[expiryKey]expiring
	rearm    chan struct{}

	kick    chan struct{}
	changed chan struct{} // a VM came, went, or changed its effective policy
	loop    follow.Loop   // the follow loop; its Synced: the last sync reached the store
	started chan struct{}
}

// New makes a view; nothing is loaded until Start.
func New(st Store, cfg Config) (*View, error) {
	if cfg.Poll <= 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	v := &View{
		st: st, cfg: cfg, log: cfg.Logger,
		kick:     make(chan struct{}, 1),
		changed:  make(chan struct{}, 1),
		rearm:    make(chan struct{}, 1),
		expiries: make(map[expiryKey]expiring),
		started:  make(chan struct{}),
	}
	v.loop = follow.Loop{Sync: v.sync, Revision: v.Revision, Poll: cfg.Poll, Timeout: cfg.SyncTimeout,
		Log: cfg.Logger, What: "view", Keeps: "enforcing the last known policies"}
	v.idx.Store(newIndex())
	return v, nil
}

// index maps sessions and VMs for lookups. A published index is never changed: the writers
// change a copy and publish it whole (copy on write), once per batch of changes, so that
// the data path reads it without a lock and a batch costs one copy however big it is.
type index struct {
	sessions map[string]*Session // by session ID (unique store-wide)
	vms      map[vmKey]*VM       // every VM
	byAddr   map[netip.Addr]*VM  // VMs whose sandbox network is live, by the sandbox's address
}

func newIndex() *index {
	return &index{sessions: make(map[string]*Session), vms: make(map[vmKey]*VM), byAddr: make(map[netip.Addr]*VM)}
}

// edit returns the writers' copy of the index, making it on the first change since the
// last commit. v.mu must be held.
func (v *View) edit() *index {
	if v.next == nil {
		cur := v.idx.Load()
		v.next = &index{sessions: maps.Clone(cur.sessions), vms: maps.Clone(cur.vms), byAddr: maps.Clone(cur.byAddr)}
	}
	return v.next
}

// commit publishes the writers' copy of the index, then ends what it no longer has: a
// session is not findable by the time its connections are cancelled, as it was not
// findable before the copy on write either.
func (v *View) commit() {
	v.mu.Lock()
	if v.next != nil {
		v.idx.Store(v.next)
		v.next = nil
	}
	ending := v.ending
	v.ending = nil
	v.mu.Unlock()
	for _, l := range ending {
		l.end()
	}
}

// Start loads every session and its policies, then follows the store's changes until ctx
// ends. It returns once the first load is done, so that the data path never serves from an
// empty view: with no view, every credential is refused (fail closed).
func (v *View) Start(ctx context.Context) error {
	if err := v.load(ctx); err != nil {
		return fmt.Errorf("view: initial load: %w", err)
	}
	close(v.started)
	go v.expiryTimer(ctx)
	go func() {
		v.loop.Run(ctx, v.kick)
		v.endAll()
	}()
	return nil
}

// Kick asks for a sync now. It never blocks: kicks while a sync is pending merge.
func (v *View) Kick() {
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// WaitRevision returns nil once the view has applied every store change up to rev, so that
// the data path decides the next connection on them; or ctx's error, wrapped, if ctx ends
// first. It kicks a sync, so a change made in this process (or learnt of) is applied without
// waiting for the poll, and then sleeps until a sync moves the view's revision: it never
// polls. A view whose syncs fail (see Ready) does not advance, and the caller's deadline
// bounds the wait.
func (v *View) WaitRevision(ctx context.Context, rev int64) error {
	v.Kick()
	if cur, err := v.rev.Wait(ctx, rev); err != nil {
		return fmt.Errorf("view: revision %d not applied yet (at %d): %w", rev, cur, err)
	}
	return nil
}

// setRevision records that every change up to rev is applied, and wakes the waiters.
func (v *View) setRevision(rev int64) { v.rev.Advance(rev) }

// Ready reports whether the last sync reached the store.
func (v *View) Ready() bool { return v.loop.Synced() }

// Revision is the store revision the view has applied.
func (v *View) Revision() int64 { return v.rev.Current() }

// Authenticate finds the open session whose proxy credentials these are.
func (v *View) Authenticate(sessionID, token string) (*Session, error) {
	s := v.idx.Load().sessions[sessionID]
	if s == nil {
		return nil, ErrUnauthorized
	}
	h := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(h[:], s.tokenHash) != 1 {
		return nil, ErrUnauthorized
	}
	return s, nil
}

// VMByAddr returns the VM whose sandbox has address a, or nil. Only a live network (ready,
// or stored before networks had states) is found: a VM whose node has not made its network,
// or one being deleted, is no sandbox the data path serves. With Config.Node, only that
// node's VMs are found: the sandboxes its firewall names.
func (v *View) VMByAddr(a netip.Addr) *VM {
	return v.idx.Load().byAddr[a.Unmap()]
}

// VM returns the tenant's VM with this ID, or nil.
func (v *View) VM(tenant, id string) *VM {
	return v.idx.Load().vms[vmKey{tenant, id}]
}

// VMs returns every VM, in no particular order.
func (v *View) VMs() []*VM {
	vms := v.idx.Load().vms
	out := make([]*VM, 0, len(vms))
	for _, vm := range vms {
		out = append(out, vm)
	}
	return out
}

// Changed is signalled (without blocking, so signals merge) whenever the view applies
// changes: a VM came, went or changed its effective policy, or something else moved its
// revision (an API key, a secret). The gateway then brings the firewall in line, which most
// changes leave as it is, and reports the revision as enforced.
func (v *View) Changed() <-chan struct{} { return v.changed }

func (v *View) signal() {
	select {
	case v.changed <- struct{}{}:
	default:
	}
}

// Session returns the open session with this ID, or nil.
func (v *View) Session(id string) *Session {
	return v.idx.Load().sessions[id]
}

// load reads everything. The revision is read first: a change that lands during the load
// is applied again by the next sync, which is harmless because applying is idempotent.
func (v *View) load(ctx context.Context) error {
	rev, err := v.st.Revision(ctx)
	if err != nil {
		return err
	}
	all, err := v.st.AllSessions(ctx)
	if err != nil {
		return err
	}
	for _, se := range all {
		if _, err := v.refresh(ctx, se.Tenant, se.ID); err != nil {
			return err
		}
	}
	vms, err := v.st.AllVMs(ctx)
	if err != nil {
		return err
	}
	for _, vm := range vms {
		if err := v.refreshVM(ctx, vmKey{vm.Tenant, vm.ID}); err != nil {
			return err
		}
	}
	v.commit()
	v.setRevision(rev)
	v.loop.SetSynced()
	return nil
}

// sync applies the changes after the view's revision.
func (v *View) sync(ctx context.Context) error {
	if err := v.expire(ctx, time.Now()); err != nil {
		return err
	}
	for {
		from := v.rev.Current()
		changes, err := v.st.ChangesSince(ctx, from, store.MaxChanges)
		if err != nil {
			return err
		}
		if len(changes) == 0 {
			return nil
		}
		if _, err := v.apply(ctx, changes); err != nil {
			return err
		}
		v.setRevision(changes[len(changes)-1].Revision)
		// After the revision: a follower that reads Revision on the signal then has one that
		// covers what changed (the gateway's enforced revision). Every batch is signalled,
		// also one that touches no VM (an API key, a secret): the gateway's table, unchanged,
		// then reports the batch's revision as enforced, rather than lag behind the view
		// until its next resync, and so hold up the writes that wait for it.
		v.signal()
		if len(changes) < store.MaxChanges {
			return nil
		}
	}
}

// apply refreshes each session and VM a batch of changes touches, once, and publishes the
// index they leave, also when it fails half way (what was applied stays applied, as the
// policies published on the way do). It reports whether it touched a VM (a session's
// policy is part of its VM's).
func (v *View) apply(ctx context.Context, changes []store.Change) (bool, error) {
	defer v.commit()
	type key struct{ tenant, id string }
	sessions := make(map[key]bool)
	vms := make(map[vmKey]bool)
	for _, c := range changes {
		switch c.Kind {
		case store.KindSession, store.KindSessionPolicy, store.KindSessionGrant:
			sessions[key{c.Tenant, c.ID}] = true
		case store.KindVM:
			vms[vmKey{c.Tenant, c.ID}] = true
		case store.KindVMPolicy, store.KindVMGrant:
			vms[vmKey{c.Tenant, c.ID}] = true
			list, err := v.st.ListSessions(ctx, c.Tenant, c.ID)
			if err != nil {
				return false, err
			}
			for _, se := range list {
				sessions[key{c.Tenant, se.ID}] = true
			}
		}
	}
	for k := range sessions {
		vmID, err := v.refresh(ctx, k.tenant, k.id)
		if err != nil {
			return false, err
		}
		if vmID != "" {
			vms[vmKey{k.tenant, vmID}] = true // a session's policy is part of its VM's
		}
	}
	for k := range vms {
		if err := v.refreshVM(ctx, k); err != nil {
			return false, err
		}
	}
	return len(vms) > 0, nil
}

// refresh reloads one session and its layers, compiles its effective policy and publishes it,
// or ends the session if the store no longer has it. It returns the session's VM ID.
func (v *View) refresh(ctx context.Context, tenant, id string) (string, error) {
	se, err := v.st.GetSession(ctx, tenant, id)
	if errors.Is(err, store.ErrNotFound) {
		return v.end(id), nil
	}
	if err != nil {
		return "", err
	}
	set, layers, err := v.compile(ctx, se.Tenant, store.SessionLayers(se))
	if err != nil {
		return "", err
	}
	// The reads above are not one snapshot: a VM retired (or deleted) between them took the
	// session and its policies with it, and the layers read after that are missing, so the
	// set may be the session's policy without its VM's. The session is read again after
	// them: still there, the retirement came after every read, and the set is whole.
	if _, err := v.st.GetSession(ctx, tenant, id); errors.Is(err, store.ErrNotFound) {
		return v.end(id), nil
	} else if err != nil {
		return "", err
	}
	v.mu.Lock()
	v.setExpiry(expiryKey{session: id}, layers)
	idx := v.edit()
	s := idx.sessions[id]
	if s == nil {
		// Made with its policy: Authenticate never returns a session without one.
		idx.sessions[id] = newSession(se, set)
		v.mu.Unlock()
		return se.VMID, nil
	}
	v.mu.Unlock()
	s.publish(set)
	return se.VMID, nil
}

type vmKey struct{ tenant, id string }

// refreshVM reloads one VM: its network and its effective policy for the transparent
// gateway (its own AND every open session's), or ends it if the store no longer has it.
func (v *View) refreshVM(ctx context.Context, k vmKey) error {
	vm, err := v.st.GetVM(ctx, k.tenant, k.id)
	if errors.Is(err, store.ErrNotFound) {
		v.endVM(k)
		return nil
	}
	if err != nil {
		return err
	}
	sessions, err := v.st.ListSessions(ctx, vm.Tenant, vm.ID)
	if err != nil {
		return err
	}
	ids := make([]string, len(sessions))
	for i, se := range sessions {
		ids[i] = se.ID
	}
	set, layers, err := v.compile(ctx, vm.Tenant, store.VMLayers(vm.ID, ids))
	if err != nil {
		return err
	}
	// As for a session (refresh): a VM retired between the reads above has lost its
	// policies, and the set may be the operator's default. Its network is read again after
	// them, so that such a VM is shown being deleted, never live with the default.
	if vm, err = v.st.GetVM(ctx, k.tenant, k.id); errors.Is(err, store.ErrNotFound) {
		v.endVM(k)
		return nil
	} else if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.setExpiry(expiryKey{vm: k}, layers)
	idx := v.edit()
	cur := idx.vms[k]
	if cur != nil && cur.Network == vm.Network {
		cur.publish(set)
		return nil
	}
	// New, or its network changed: a VM is replaced, never changed, since the data path
	// reads it without a lock.
	var shared *live
	if cur != nil {
		unindexAddr(idx, cur)
		if sameSandbox(cur.Network, vm.Network) {
			shared = cur.live
		} else {
			v.ending = append(v.ending, cur.live)
		}
	}
	next := newVM(vm, set, shared)
	idx.vms[k] = next
	// Only a live network is found by its address: a sandbox that is not made yet has none,
	// and one being deleted has lost its policies, so that serving it would mean serving it
	// the operator's default policy instead of its own. And only one of this node: another
	// node's VM that holds the same address (ranges that overlapped, two processes of one
	// node ID) must neither displace this node's nor be served by its data path.
	if addr, ok := liveAddr(vm.Network); ok && (v.cfg.Node == "" || vm.Network.Node == v.cfg.Node) {
		idx.byAddr[addr] = next
	}
	return nil
}

// liveAddr is the address by which a VM with network n is found: only a live network's.
func liveAddr(n store.Network) (netip.Addr, bool) {
	if !n.Live() {
		return netip.Addr{}, false
	}
	addr, err := netip.ParseAddr(n.Address)
	return addr, err == nil
}

// unindexAddr takes vm out of the address index, if it is there.
func unindexAddr(idx *index, vm *VM) {
	if addr, err := netip.ParseAddr(vm.Network.Address); err == nil && idx.byAddr[addr] == vm {
		delete(idx.byAddr, addr)
	}
}

// endVM takes a VM out of the index; commit ends it.
func (v *View) endVM(k vmKey) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.expiries, expiryKey{vm: k})
	idx := v.edit()
	vm := idx.vms[k]
	if vm == nil {
		return
	}
	delete(idx.vms, k)
	unindexAddr(idx, vm)
	v.ending = append(v.ending, vm.live)
}

// compile builds an effective policy from the layers that are set, with their active
// grants, or the default when none is. It also returns the layers, from which the view
// compiles the policy again, without the store, when one of their grants expires.
func (v *View) compile(ctx context.Context, tenant string, refs []store.LayerRef) (*policy.Effective, []policy.NamedPolicy, error) {
	layers, err := store.LoadLayers(ctx, v.st, tenant, refs...)
	if err != nil {
		return nil, nil, err
	}
	set, err := v.cfg.Env.Effective(layers...)
	return set, layers, err
}

// end takes a session out of the index, for commit to end it, and returns its VM ID (""
// if the view did not know it).
func (v *View) end(id string) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.expiries, expiryKey{session: id})
	idx := v.edit()
	s := idx.sessions[id]
	if s == nil {
		return ""
	}
	delete(idx.sessions, id)
	v.ending = append(v.ending, &s.live)
	return s.VMID
}

// endAll cancels every tracked connection when the view stops following the store: with no
// view there is nothing to enforce against, so nothing stays open (fail closed).
func (v *View) endAll() {
	v.mu.Lock()
	v.next = newIndex()
	old := v.idx.Load()
	v.mu.Unlock()
	v.commit()
	for _, s := range old.sessions {
		s.end()
	}
	for _, vm := range old.vms {
		vm.end()
	}
}
