// Package view is the gateway's live, compiled picture of the store: every open session, its
// proxy credentials, and its effective policy compiled into an immutable policy.Set that the
// data path reads through an atomic pointer, without a lock per connection.
//
// The view follows the store's change log: it loads everything once, then applies the changes
// after the revision it has seen. It syncs when kicked (the API kicks it after each write in
// the same process, so a new policy applies to the next connection at once) and on a short
// timer as a safety net (and, in a fleet, to learn of other nodes' writes).
//
// The view also knows every live connection the data path has open for a session (Track).
// When a session's effective policy changes, each tracked connection is judged again, and
// those the new policy denies are cancelled; when a session ends, all of its connections are.
package view

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/internal/store"
	"github.com/egressd/egressd/policy"
)

// ErrUnauthorized is the answer to credentials that match no open session.
var ErrUnauthorized = errors.New("no open session has these credentials")

// Store is what the view reads.
type Store interface {
	AllSessions(ctx context.Context) ([]store.Session, error)
	GetSession(ctx context.Context, tenant, id string) (store.Session, error)
	ListSessions(ctx context.Context, tenant, vmID string) ([]store.Session, error)
	GetPolicy(ctx context.Context, tenant string, scope store.Scope, id string) (store.PolicyRecord, error)
	ChangesSince(ctx context.Context, rev int64, limit int) ([]store.Change, error)
	Revision(ctx context.Context) (int64, error)
}

// Config is what the view needs besides the store.
type Config struct {
	Classifier *policy.Classifier
	Preset     *policy.Preset // nil: the built-in one
	Default    *policy.Policy // nil: deny all
	Poll       time.Duration  // how often to look for changes without a kick; 0: 500ms
	Logger     *slog.Logger
}

// View is the live picture. Create it with New, then Start it.
type View struct {
	st     Store
	cfg    Config
	log    *slog.Logger
	defSet *policy.Matcher

	mu       sync.RWMutex
	sessions map[string]*Session // by session ID (unique store-wide)
	rev      int64               // every change up to rev is applied

	kick    chan struct{}
	synced  atomic.Bool // the last sync reached the store
	started chan struct{}
}

// New makes a view; nothing is loaded until Start.
func New(st Store, cfg Config) (*View, error) {
	if cfg.Classifier == nil {
		cfg.Classifier = &policy.Classifier{}
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	def := policy.DenyAll()
	if cfg.Default != nil {
		def = *cfg.Default
	}
	m, err := policy.Compile(def, cfg.Preset)
	if err != nil {
		return nil, fmt.Errorf("view: default policy: %w", err)
	}
	return &View{
		st: st, cfg: cfg, log: cfg.Logger, defSet: m,
		sessions: make(map[string]*Session),
		kick:     make(chan struct{}, 1),
		started:  make(chan struct{}),
	}, nil
}

// Start loads every session and its policies, then follows the store's changes until ctx
// ends. It returns once the first load is done, so that the data path never serves from an
// empty view: with no view, every credential is refused (fail closed).
func (v *View) Start(ctx context.Context) error {
	if err := v.load(ctx); err != nil {
		return fmt.Errorf("view: initial load: %w", err)
	}
	close(v.started)
	go v.follow(ctx)
	return nil
}

// Kick asks for a sync now. It never blocks: kicks while a sync is pending merge.
func (v *View) Kick() {
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// Ready reports whether the last sync reached the store.
func (v *View) Ready() bool { return v.synced.Load() }

// Revision is the store revision the view has applied.
func (v *View) Revision() int64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.rev
}

// Authenticate finds the open session whose proxy credentials these are.
func (v *View) Authenticate(sessionID, token string) (*Session, error) {
	v.mu.RLock()
	s := v.sessions[sessionID]
	v.mu.RUnlock()
	if s == nil {
		return nil, ErrUnauthorized
	}
	h := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(h[:], s.tokenHash) != 1 {
		return nil, ErrUnauthorized
	}
	return s, nil
}

// Session returns the open session with this ID, or nil.
func (v *View) Session(id string) *Session {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.sessions[id]
}

func (v *View) follow(ctx context.Context) {
	t := time.NewTicker(v.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			v.endAll()
			return
		case <-v.kick:
		case <-t.C:
		}
		if err := v.sync(ctx); err != nil && ctx.Err() == nil {
			v.synced.Store(false)
			// The last compiled policies stay in force: a store outage must not open or
			// close anything by itself.
			v.log.Warn("view: sync failed; enforcing the last known policies", "err", err)
			continue
		}
		v.synced.Store(true)
	}
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
		if err := v.refresh(ctx, se.Tenant, se.ID); err != nil {
			return err
		}
	}
	v.mu.Lock()
	v.rev = rev
	v.mu.Unlock()
	v.synced.Store(true)
	return nil
}

// sync applies the changes after the view's revision.
func (v *View) sync(ctx context.Context) error {
	for {
		v.mu.RLock()
		from := v.rev
		v.mu.RUnlock()
		changes, err := v.st.ChangesSince(ctx, from, store.MaxChanges)
		if err != nil {
			return err
		}
		if len(changes) == 0 {
			return nil
		}
		if err := v.apply(ctx, changes); err != nil {
			return err
		}
		v.mu.Lock()
		v.rev = changes[len(changes)-1].Revision
		v.mu.Unlock()
		if len(changes) < store.MaxChanges {
			return nil
		}
	}
}

// apply refreshes each session a batch of changes touches, once.
func (v *View) apply(ctx context.Context, changes []store.Change) error {
	type key struct{ tenant, id string }
	sessions := make(map[key]bool)
	for _, c := range changes {
		switch c.Kind {
		case store.KindSession, store.KindSessionPolicy:
			sessions[key{c.Tenant, c.ID}] = true
		case store.KindVMPolicy:
			list, err := v.st.ListSessions(ctx, c.Tenant, c.ID)
			if err != nil {
				return err
			}
			for _, se := range list {
				sessions[key{c.Tenant, se.ID}] = true
			}
		}
	}
	for k := range sessions {
		if err := v.refresh(ctx, k.tenant, k.id); err != nil {
			return err
		}
	}
	return nil
}

// refresh reloads one session and its layers, compiles its effective policy and publishes it,
// or ends the session if the store no longer has it.
func (v *View) refresh(ctx context.Context, tenant, id string) error {
	se, err := v.st.GetSession(ctx, tenant, id)
	if errors.Is(err, store.ErrNotFound) {
		v.end(id)
		return nil
	}
	if err != nil {
		return err
	}
	set, err := v.compile(ctx, se)
	if err != nil {
		return err
	}
	v.mu.Lock()
	s := v.sessions[id]
	if s == nil {
		// Published before it is findable: Authenticate never returns a session without a policy.
		s = newSession(se)
		s.set.Store(set)
		v.sessions[id] = s
		v.mu.Unlock()
		return nil
	}
	v.mu.Unlock()
	s.publish(set)
	return nil
}

// compile builds a session's effective policy: its own policy AND its VM's, or the default.
func (v *View) compile(ctx context.Context, se store.Session) (*policy.Set, error) {
	var layers []policy.Layered
	for _, l := range []struct {
		scope store.Scope
		id    string
		layer policy.Layer
	}{{store.ScopeSession, se.ID, policy.LayerSession}, {store.ScopeVM, se.VMID, policy.LayerVM}} {
		rec, err := v.st.GetPolicy(ctx, se.Tenant, l.scope, l.id)
		if errors.Is(err, store.ErrNoPolicy) || errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		m, err := policy.Compile(rec.Policy, v.cfg.Preset)
		if err != nil {
			return nil, fmt.Errorf("compile %s policy of %s: %w", l.layer, l.id, err)
		}
		layers = append(layers, policy.Layered{Layer: l.layer, Matcher: m})
	}
	if len(layers) == 0 {
		layers = append(layers, policy.Layered{Layer: policy.LayerDefault, Matcher: v.defSet})
	}
	return policy.NewSet(v.cfg.Classifier, layers...), nil
}

func (v *View) end(id string) {
	v.mu.Lock()
	s := v.sessions[id]
	delete(v.sessions, id)
	v.mu.Unlock()
	if s != nil {
		s.end()
	}
}

// endAll cancels every tracked connection when the view stops following the store: with no
// view there is nothing to enforce against, so nothing stays open (fail closed).
func (v *View) endAll() {
	v.mu.Lock()
	all := v.sessions
	v.sessions = make(map[string]*Session)
	v.mu.Unlock()
	for _, s := range all {
		s.end()
	}
}
