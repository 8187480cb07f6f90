package events

import (
	"slices"
	"sync/atomic"

	"golang.org/x/sys/cpu"
)

// The fan-out hands every record to the subscribers, the event ring's queue and the audit
// queue in Seq order,
// without a lock that a Record would wait for. Many Records store into the ring at once;
// the one that finds nobody delivering becomes the deliverer and hands out every stored
// record after the last one delivered, in order, up to the first that is not stored yet
// (whose own Record carries on from there once it has stored it). A Record that finds a
// deliverer at work marks the fan-out dirty and returns: the deliverer looks again before
// it stops. Subscribing, unsubscribing, Close and Reopen are requests that the deliverer
// carries out between two records, so that a subscriber's backlog and live records meet
// exactly, and only the deliverer ever sends on (or closes) a channel.
//
// No Record waits for another: one in the deliverer's role hands out the others' records as
// well as its own, which is short (non-blocking channel sends), and under a burst may do so
// for a few more before it returns.

// States of fanOut.state.
const (
	fanBusy  = 1 << iota // a goroutine is delivering
	fanDirty             // something was stored or requested while it was
)

type fanOut struct {
	// needed is set while the hand-out has work: an audit file or event ring, a subscriber, or a request
	// waiting for records to be stored. Without it Record skips the fan-out, and delivered
	// falls behind until a subscriber comes. Every Record reads it, the deliverer seldom
	// changes it: it is kept off the cache line that the role's compare-and-swaps write.
	needed atomic.Bool
	_      cpu.CacheLinePad

	state    atomic.Uint32
	requests atomic.Pointer[request] // posted, newest first
	_        cpu.CacheLinePad

	// Owned by the deliverer.
	delivered uint64     // every record up to this Seq was handed out (or lost)
	pending   []*request // in the order posted
	subs      []*subscriber
	closed    bool
}

type requestKind int

const (
	reqSubscribe requestKind = iota
	reqUnsubscribe
	reqBarrier // done once every record up to upto is handed out
	reqClose   // a barrier that then ends every subscription and the audit queue
)

type request struct {
	kind requestKind
	sub  *subscriber
	upto uint64
	next *request

	done chan struct{} // closed when carried out, if a caller waits
	// Answers of reqSubscribe.
	err    error
	newest uint64 // the last Seq delivered before the subscriber was added
}

// request posts r and waits until the deliverer has carried it out.
func (h *Hub) request(r *request) *request {
	r.done = make(chan struct{})
	h.post(r)
	<-r.done
	return r
}

// post hands r to the deliverer without waiting.
func (h *Hub) post(r *request) {
	for {
		head := h.fan.requests.Load()
		r.next = head
		if h.fan.requests.CompareAndSwap(head, r) {
			break
		}
	}
	h.fanOut(nil)
}

// fanOut delivers what was stored, or makes sure that the goroutine delivering now will.
// own is the caller's record, if it has one: the deliverer hands it out from there rather
// than copy it out of the ring again.
func (h *Hub) fanOut(own *Record) {
	f := &h.fan
	for {
		s := f.state.Load()
		if s&fanBusy == 0 {
			if f.state.CompareAndSwap(s, fanBusy) {
				break
			}
		} else if f.state.CompareAndSwap(s, s|fanDirty) {
			return // the deliverer will see the mark before it stops
		}
	}
	for {
		h.deliver(own)
		if f.state.CompareAndSwap(fanBusy, 0) {
			return
		}
		f.state.Store(fanBusy) // it was marked dirty: look again
	}
}

// deliver runs in the deliverer's role: it takes the posted requests, hands out the stored
// records, and carries out the requests whose records are handed out.
func (h *Hub) deliver(own *Record) {
	f := &h.fan
	if f.requests.Load() != nil {
		var posted []*request
		for r := f.requests.Swap(nil); r != nil; r = r.next {
			posted = append(posted, r)
		}
		slices.Reverse(posted)
		f.pending = append(f.pending, posted...)
		// Set before catching up: a Record that stores after this sees it and fans out,
		// one that stored before is found by the catch-up.
		f.needed.Store(true)
	}
	h.handOut(own)
	for len(f.pending) > 0 && f.pending[0].upto <= f.delivered {
		h.carryOut(f.pending[0])
		f.pending = f.pending[1:]
	}
	if needed := h.audit != nil || h.disk != nil || len(f.subs) > 0 || len(f.pending) > 0; needed != f.needed.Load() {
		f.needed.Store(needed)
	}
}

// handOut delivers the stored records after f.delivered in Seq order, up to the first one
// not stored yet.
func (h *Hub) handOut(own *Record) {
	f := &h.fan
	if reserved, size := h.seq.Load(), uint64(len(h.ring)); reserved-f.delivered > size {
		// Overwritten before anyone handed them out (no consumer needed them, or the
		// deliverer was held up for a whole Buffer of records).
		h.lost(reserved - size - f.delivered)
		f.delivered = reserved - size
	}
	var r Record
	for {
		next := f.delivered + 1
		s := h.slot(next)
		if !s.done(next) {
			return
		}
		switch {
		case own != nil && own.Seq == next:
			h.hand(own)
		case s.read(next, func(rec *Record) { r = *rec }):
			h.hand(&r)
		default:
			h.lost(1)
		}
		f.delivered = next
	}
}

// hand gives one record to every subscriber whose filter matches and to the audit queue,
// dropping it (and counting that) where there is no room.
func (h *Hub) hand(r *Record) {
	f := &h.fan
	for _, s := range f.subs {
		if s.filter.match(r) {
			select {
			case s.ch <- *r:
			default:
				s.dropped.Add(1)
				h.metrics.droppedSubscriber.Inc()
			}
		}
	}
	if h.disk != nil {
		queued := false
		if !f.closed {
			select {
			case h.disk.queue <- *r:
				queued = true
			default:
			}
		}
		if !queued {
			h.disk.dropped(1, "the event ring's queue is full (or egressd is shutting down); records are being dropped")
		}
	}
	if h.audit == nil {
		return
	}
	if !f.closed {
		select {
		case h.audit.queue <- *r:
			return
		default:
		}
	}
	h.audit.dropped(1, "the audit log's queue is full (or egressd is shutting down); records are being dropped")
}

// lost counts n records that were overwritten in the buffer before they were handed out,
// as lost to every consumer: which subscribers they were for cannot be known any more.
func (h *Hub) lost(n uint64) {
	f := &h.fan
	for _, s := range f.subs {
		s.dropped.Add(n)
		h.metrics.droppedSubscriber.Add(float64(n))
	}
	if h.audit != nil {
		h.audit.dropped(int(n), "records were overwritten in the buffer before they reached the audit log's queue; records are being dropped")
	}
	if h.disk != nil {
		h.disk.dropped(int(n), "records were overwritten in the buffer before they reached the event ring's queue; records are being dropped")
	}
}

func (h *Hub) carryOut(r *request) {
	f := &h.fan
	switch r.kind {
	case reqSubscribe:
		if f.closed {
			r.err = ErrClosed
			break
		}
		f.subs = append(f.subs, r.sub)
		r.newest = f.delivered
	case reqUnsubscribe:
		if i := slices.Index(f.subs, r.sub); i >= 0 {
			f.subs = slices.Delete(f.subs, i, i+1)
			close(r.sub.ch)
		}
	case reqClose:
		f.closed = true
		for _, s := range f.subs {
			close(s.ch)
		}
		f.subs = nil
	}
	if r.done != nil {
		close(r.done)
	}
}
