package events

import (
	"sync"
	"sync/atomic"
)

// OpenConns is a Sink that counts the allowed connections that are open, per tenant, from the
// records it passes on to another Sink: an allowed KindConnect record opens one and its
// KindClose record ends it (the contract of the Kind constants). It answers GET /v1/status
// and the count that egressd says it drains at shutdown, without asking the proxies.
//
// Counting takes no lock on the data path: one atomic add per record, on a counter per
// tenant that stays once made (there are as many as tenants that ever connected).
type OpenConns struct {
	next     Sink
	total    atomic.Int64
	byTenant sync.Map // tenant -> *atomic.Int64
}

// NewOpenConns counts the records on their way to next (Discard when nil).
func NewOpenConns(next Sink) *OpenConns {
	if next == nil {
		next = Discard
	}
	return &OpenConns{next: next}
}

// Record counts r and passes it on.
func (o *OpenConns) Record(r Record) {
	var delta int64
	switch {
	case r.Kind == KindConnect && r.Decision == Allow:
		delta = 1
	case r.Kind == KindClose:
		delta = -1
	}
	if delta != 0 {
		o.total.Add(delta)
		o.tenant(r.Tenant).Add(delta)
	}
	o.next.Record(r)
}

func (o *OpenConns) tenant(t string) *atomic.Int64 {
	if c, ok := o.byTenant.Load(t); ok {
		return c.(*atomic.Int64)
	}
	c, _ := o.byTenant.LoadOrStore(t, new(atomic.Int64))
	return c.(*atomic.Int64)
}

// Open is how many allowed connections of tenant are open now; every tenant's together
// when tenant is "".
func (o *OpenConns) Open(tenant string) int64 {
	if tenant == "" {
		return o.total.Load()
	}
	if c, ok := o.byTenant.Load(tenant); ok {
		return c.(*atomic.Int64).Load()
	}
	return 0
}
