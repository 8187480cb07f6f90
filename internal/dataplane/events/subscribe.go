package events

import (
	"context"
	"errors"
	"sync/atomic"
)

// Subscription is a live feed of the records a Filter matches.
type Subscription struct {
	// Backlog is the newest buffered records that the filter matches (at most Limit, after
	// the start point when there is one), oldest first. Records holds every later one: the
	// two meet without a gap or an overlap.
	Backlog []Record
	// Records delivers new records as they come. It is closed when the subscription's context
	// is done or the Hub closes.
	Records <-chan Record

	dropped *atomic.Uint64
}

// Dropped is how many records this subscriber has lost because it read Records too slowly.
// The loss also shows as a gap in Seq.
func (s *Subscription) Dropped() uint64 {
	if s == nil || s.dropped == nil {
		return 0
	}
	return s.dropped.Load()
}

type subscriber struct {
	filter  Filter
	ch      chan Record
	dropped atomic.Uint64
}

// Subscribe follows the records f matches until ctx is done. See Subscription for what it
// delivers. Each subscriber has a bounded channel: one that falls behind loses records rather
// than slow the data path down. It fails with ErrClosed once the Hub is closed, and when f has
// no Tenant.
func (h *Hub) Subscribe(ctx context.Context, f Filter) (*Subscription, error) {
	if f.Tenant == "" {
		return nil, errors.New("events: subscribe: the filter has no tenant")
	}
	s := &subscriber{filter: f, ch: make(chan Record, h.subBuf)}
	// The fan-out adds s between two records: every record after newest goes to s.ch, the
	// backlog is the ones up to it.
	r := h.request(&request{kind: reqSubscribe, sub: s})
	if r.err != nil {
		return nil, r.err
	}
	// A start point is applied by match (Since, AfterSeq) inside the tail scan.
	backlog := h.tail(&s.filter, f.limit(), r.newest, h.oldest(r.newest))
	context.AfterFunc(ctx, func() { h.post(&request{kind: reqUnsubscribe, sub: s}) })
	return &Subscription{Backlog: backlog, Records: s.ch, dropped: &s.dropped}, nil
}
