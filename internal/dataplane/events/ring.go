package events

import (
	"sync"
	"sync/atomic"

	"golang.org/x/sys/cpu"
)

// slot is one place in the ring. Records come to it in Seq order, Buffer apart; a writer
// and a reader meet on one only when the ring laps while one of them holds it, so its lock
// is almost never waited for.
type slot struct {
	seq atomic.Uint64 // the Seq of rec; 0 before the first record
	mu  sync.Mutex    // guards rec
	rec Record
	// Consecutive Seqs are stored by different cores at once: no two slots share a line.
	_ cpu.CacheLinePad
}

func (h *Hub) slot(seq uint64) *slot { return &h.ring[seq%uint64(len(h.ring))] }

// store puts r in the slot unless a newer record is there already: one whose Record call
// overtook this one's by a whole Buffer, which makes r lost to the buffer as if it had
// been overwritten.
func (s *slot) store(r *Record) {
	s.mu.Lock()
	if s.seq.Load() < r.Seq {
		s.rec = *r
		s.seq.Store(r.Seq)
	}
	s.mu.Unlock()
}

// read calls fn with the record of Seq seq while the slot holds it, and reports whether
// it did.
func (s *slot) read(seq uint64, fn func(*Record)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seq.Load() != seq {
		return false
	}
	fn(&s.rec)
	return true
}

// done reports whether the record of Seq seq is past storing: stored, or lost to a newer one.
func (s *slot) done(seq uint64) bool { return s.seq.Load() >= seq }

// newest returns the highest Seq up to which every record is stored (or already lost to
// the buffer): the end of what a reader may see. A Seq reserved but not stored yet stops
// it, so that a reader paging forward from the last Seq it got never skips a record that is
// still being stored.
func (h *Hub) newest() uint64 {
	cur := h.stored.Load()
	next := cur
	// Everything more than a Buffer behind the newest reserved Seq is done: skip it.
	if reserved, size := h.seq.Load(), uint64(len(h.ring)); reserved-next > size {
		next = reserved - size
	}
	for h.slot(next + 1).done(next + 1) {
		next++
	}
	for next > cur && !h.stored.CompareAndSwap(cur, next) {
		cur = h.stored.Load()
	}
	return max(cur, next)
}

// oldest returns the lowest Seq that may still be in the buffer when newest is the newest.
func (h *Hub) oldest(newest uint64) uint64 {
	if size := uint64(len(h.ring)); newest >= h.first+size {
		return newest - size + 1
	}
	return h.first
}

// scan calls fn for every record with from <= Seq <= to that is still buffered, in Seq order
// (forward) or in reverse, until fn returns false. It holds one slot at a time; a slot
// overwritten meanwhile holds a newer Seq and is skipped (going forward) or ends the scan
// (going back, since everything older is gone too).
func (h *Hub) scan(from, to uint64, forward bool, fn func(*Record) bool) {
	if from > to {
		return
	}
	next, step, last := from, uint64(1), to
	if !forward {
		next, step, last = to, ^uint64(0), from // step -1
	}
	for {
		more := true
		if !h.slot(next).read(next, func(r *Record) { more = fn(r) }) && !forward {
			return
		}
		if !more || next == last {
			return
		}
		next += step
	}
}
