package events

import (
	"cmp"
	"slices"
	"time"
)

// Limits of one query.
const (
	DefaultLimit = 100
	MaxLimit     = 10000
)

// Filter selects records. Tenant is required: a Filter without one matches nothing, so that
// a caller that forgets it fails closed rather than showing every tenant's records. Every
// other field left empty matches everything.
type Filter struct {
	Tenant    string
	VMID      string
	SessionID string
	Decision  string // Allow or Deny
	Kind      string // one of Kinds
	// Since keeps records whose Time is at or after it; AfterSeq keeps records whose Seq is
	// above it. Either makes a start point (see Query).
	Since    time.Time
	AfterSeq uint64
	// Limit is how many records at most: 0 means DefaultLimit, more than MaxLimit means
	// MaxLimit, and a negative Limit means none (Subscribe then delivers only live records).
	Limit int
}

func (f *Filter) match(r *Record) bool {
	return f.Tenant != "" && r.Tenant == f.Tenant &&
		r.Seq > f.AfterSeq &&
		(f.VMID == "" || r.VMID == f.VMID) &&
		(f.SessionID == "" || r.SessionID == f.SessionID) &&
		(f.Decision == "" || r.Decision == f.Decision) &&
		(f.Kind == "" || r.Kind == f.Kind) &&
		(f.Since.IsZero() || !r.Time.Before(f.Since))
}

func (f *Filter) limit() int {
	switch {
	case f.Limit < 0:
		return 0
	case f.Limit == 0:
		return DefaultLimit
	case f.Limit > MaxLimit:
		return MaxLimit
	}
	return f.Limit
}

func (f *Filter) hasStart() bool { return f.AfterSeq > 0 || !f.Since.IsZero() }

// Query returns the buffered records that f matches, oldest first. With a start point (Since
// or AfterSeq) they are the first Limit records after it, so that a client pages forward by
// asking again after the last Seq it got; without one they are the newest Limit records, as
// tail shows the end of a log.
func (h *Hub) Query(f Filter) []Record {
	if f.Tenant == "" {
		return nil
	}
	n := f.limit()
	if n == 0 {
		return nil
	}
	newest := h.newest()
	oldest := h.oldest(newest)
	var out []Record
	if f.hasStart() {
		past := h.past(newest)
		i, _ := slices.BinarySearchFunc(past, f.AfterSeq+1, func(r Record, seq uint64) int { return cmp.Compare(r.Seq, seq) })
		for ; i < len(past) && len(out) < n; i++ {
			if f.match(&past[i]) {
				out = append(out, past[i])
			}
		}
		if len(out) == n {
			return out
		}
		h.scan(max(oldest, f.AfterSeq+1), newest, true, func(r *Record) bool {
			if f.match(r) {
				out = append(out, *r)
			}
			return len(out) < n
		})
		return out
	}
	return h.tail(&f, n, newest, oldest)
}

// past returns the records loaded from the event ring that are still to be seen when newest
// is the newest Seq: the newest of them that fit in the buffer beside this run's records, so
// that the two together are at most Buffer records, as the buffer alone would hold.
func (h *Hub) past(newest uint64) []Record {
	ran := newest - (h.first - 1) // records of this run up to newest
	room := uint64(len(h.ring)) - min(ran, uint64(len(h.ring)))
	if room >= uint64(len(h.history)) {
		return h.history
	}
	return h.history[uint64(len(h.history))-room:]
}

// tail returns the newest n records that f matches, oldest first: from the buffer's
// [oldest, newest], then from the loaded records before them.
func (h *Hub) tail(f *Filter, n int, newest, oldest uint64) []Record {
	if n <= 0 {
		return nil
	}
	var out []Record
	h.scan(oldest, newest, false, func(r *Record) bool {
		if f.match(r) {
			out = append(out, *r)
		}
		return len(out) < n
	})
	past := h.past(newest)
	for i := len(past) - 1; i >= 0 && len(out) < n; i-- {
		if f.match(&past[i]) {
			out = append(out, past[i])
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}
