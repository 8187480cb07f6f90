package secrets

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/internal/controlplane/keyring"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/follow"
)

// Store is what a Book reads (store.Store has it).
type Store interface {
	AllSecrets(ctx context.Context) ([]store.Secret, error)
	GetSecret(ctx context.Context, tenant, name string) (store.Secret, error)
	ChangesSince(ctx context.Context, rev int64, limit int) ([]store.Change, error)
	Revision(ctx context.Context) (int64, error)
}

// Opener opens sealed values: the keyring.
type Opener interface {
	Open(sealed, ad []byte) ([]byte, error)
}

// Config is what a Book needs besides the store and the key.
type Config struct {
	Poll        time.Duration // how often to look for changes without a kick; 0: 500ms
	SyncTimeout time.Duration // bounds one sync; 0: 30s
	Logger      *slog.Logger
}

// Book is the live picture of every tenant's secrets. Make it with New, then Start it.
type Book struct {
	st   Store
	keys Opener
	cfg  Config
	log  *slog.Logger

	tenants atomic.Pointer[map[string]*Set] // published, never changed

	syncMu  sync.Mutex // serialises loads and syncs, and guards secrets
	secrets map[key]*Secret

	rev follow.Revision // every change up to it is applied

	kick chan struct{}
	loop follow.Loop // its Synced: the last sync reached the store
}

type key struct{ tenant, name string }

// New makes a book; nothing is loaded until Start.
func New(st Store, keys Opener, cfg Config) *Book {
	if cfg.Poll <= 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	b := &Book{st: st, keys: keys, cfg: cfg, log: cfg.Logger, secrets: map[key]*Secret{},
		kick: make(chan struct{}, 1)}
	b.loop = follow.Loop{Sync: b.sync, Revision: b.Revision, Poll: cfg.Poll, Timeout: cfg.SyncTimeout,
		Log: cfg.Logger, What: "secrets", Keeps: "using the secrets last known"}
	b.tenants.Store(&map[string]*Set{})
	return b
}

// Start loads every secret, then follows the store's changes until ctx ends. It returns once
// the first load is done.
func (b *Book) Start(ctx context.Context) error {
	if err := b.load(ctx); err != nil {
		return fmt.Errorf("secrets: initial load: %w", err)
	}
	go b.loop.Run(ctx, b.kick)
	return nil
}

// Tenant is the tenant's secrets now; never nil (a tenant without secrets has the empty
// Set). One atomic load, no lock.
func (b *Book) Tenant(tenant string) *Set {
	if s := (*b.tenants.Load())[tenant]; s != nil {
		return s
	}
	return emptySet
}

// emptySet is every secretless tenant's Set: shared, since a Set is never changed once made,
// so that a request of such a tenant allocates nothing here.
var emptySet = &Set{}

// Kick asks for a sync now. It never blocks.
func (b *Book) Kick() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Revision is the store revision the book has applied.
func (b *Book) Revision() int64 { return b.rev.Current() }

// Ready reports whether the last sync reached the store.
func (b *Book) Ready() bool { return b.loop.Synced() }

// WaitRevision returns nil once the book has applied every store change up to rev (so that
// a secret written at rev is what the next request gets), or ctx's error, wrapped.
func (b *Book) WaitRevision(ctx context.Context, rev int64) error {
	b.Kick()
	if cur, err := b.rev.Wait(ctx, rev); err != nil {
		return fmt.Errorf("secrets: revision %d not applied yet (at %d): %w", rev, cur, err)
	}
	return nil
}

// load reads every secret. The revision is read first: a change that lands during the load
// is applied again by the next sync, which is harmless because applying is idempotent.
func (b *Book) load(ctx context.Context) error {
	rev, err := b.st.Revision(ctx)
	if err != nil {
		return err
	}
	all, err := b.st.AllSecrets(ctx)
	if err != nil {
		return err
	}
	b.syncMu.Lock()
	defer b.syncMu.Unlock()
	touched := map[string]bool{}
	for _, se := range all {
		b.secrets[key{se.Tenant, se.Name}] = b.open(se)
		touched[se.Tenant] = true
	}
	b.publish(touched)
	b.setRevision(rev)
	b.loop.SetSynced()
	return nil
}

// sync applies the changes after the book's revision: each secret they name is read again
// (or dropped, if it is gone).
func (b *Book) sync(ctx context.Context) error {
	b.syncMu.Lock()
	defer b.syncMu.Unlock()
	for {
		changes, err := b.st.ChangesSince(ctx, b.Revision(), store.MaxChanges)
		if err != nil || len(changes) == 0 {
			return err
		}
		names := map[key]bool{}
		for _, c := range changes {
			if c.Kind == store.KindSecret {
				names[key{c.Tenant, c.ID}] = true
			}
		}
		touched := map[string]bool{}
		for k := range names {
			se, err := b.st.GetSecret(ctx, k.tenant, k.name)
			switch {
			case errors.Is(err, store.ErrNotFound):
				delete(b.secrets, k)
			case err != nil:
				b.publish(touched) // what was applied stays applied
				return err
			default:
				b.secrets[k] = b.open(se)
			}
			touched[k.tenant] = true
		}
		b.publish(touched)
		b.setRevision(changes[len(changes)-1].Revision)
		if len(changes) < store.MaxChanges {
			return nil
		}
	}
}

// open opens a stored secret's value. One that does not open is kept with its error, so that
// its placeholder is still recognised (and refused) rather than sent on as it is.
func (b *Book) open(se store.Secret) *Secret {
	out := &Secret{Tenant: se.Tenant, Name: se.Name, Placeholder: se.Placeholder, Domains: slices.Clone(se.Domains)}
	out.Value, out.Err = b.keys.Open(se.Sealed, keyring.SecretAD(se.Tenant, se.Name, se.Placeholder))
	if out.Err != nil {
		out.Value = nil
		b.log.Error("secrets: a secret's value does not open with this node's secrets key; requests that carry its placeholder are refused",
			"secret", out, "err", out.Err)
	}
	return out
}

// publish makes a new Set for each touched tenant and publishes the whole map (copy on
// write). The caller holds syncMu.
func (b *Book) publish(touched map[string]bool) {
	if len(touched) == 0 {
		return
	}
	byTenant := map[string][]*Secret{}
	for k, se := range b.secrets {
		if touched[k.tenant] {
			byTenant[k.tenant] = append(byTenant[k.tenant], se)
		}
	}
	next := maps.Clone(*b.tenants.Load())
	for tenant := range touched {
		list := byTenant[tenant]
		if len(list) == 0 {
			delete(next, tenant)
			continue
		}
		slices.SortFunc(list, func(a, b *Secret) int { return cmp.Compare(a.Name, b.Name) })
		next[tenant] = newSet(list)
	}
	b.tenants.Store(&next)
}

// setRevision records that every change up to rev is applied, and wakes the waiters.
func (b *Book) setRevision(rev int64) { b.rev.Advance(rev) }
