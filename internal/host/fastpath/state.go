package fastpath

import (
	"fmt"
	"time"
)

// refuse ends a flow: Reset for packet id (the packet in hand, or one held), Drop for its
// other held packets, and a refused entry so that its later queued packets are dropped.
// tell: the judge hears of it (not when the refusal is the judge's own answer). f may be
// nil (a flow not tracked); key may be the zero Flow (a fragment without ports), and then
// nothing is remembered or told.
func (v *Verifier) refuse(f *flow, key Flow, id uint32, tell bool, err error, now time.Time) {
	v.refused[kindOf(err)]++
	var prefix []byte
	if f != nil && len(f.known) > 0 && f.known[0].lo == 0 {
		prefix = f.buf[:f.known[0].hi:f.known[0].hi]
	}
	v.verdictOn(id, Reset, key)
	if f != nil {
		for _, h := range f.held {
			if h.id != id {
				v.verdict(h.id, Drop)
			}
		}
		if f.state == unverified {
			v.release(f)
		}
		f.held = nil
	}
	if !key.Src.IsValid() {
		return
	}
	if tell {
		v.judge.Judge(key, Hello{Bytes: prefix, Err: err})
	}
	// A new entry, not f: f may still be queued in v.verified.
	r := &flow{key: key, state: refused}
	v.flows[key] = r
	v.remember(&v.refusedQ, r, now.Add(v.lim.Idle))
}

// close ends an unverified flow the client ended: its held packets are dropped, and it is
// remembered for Limits.Idle so that the last ACKs of the close are accepted rather than
// refused as packets of an unknown flow.
func (v *Verifier) close(f *flow, now time.Time) {
	v.forget(f)
	c := &flow{key: f.key, state: closed}
	v.flows[f.key] = c
	v.remember(&v.refusedQ, c, now.Add(v.lim.Idle))
}

// forget drops a flow's held packets and its entry.
func (v *Verifier) forget(f *flow) {
	for _, h := range f.held {
		v.verdict(h.id, Drop)
	}
	v.release(f)
	f.held = nil
	delete(v.flows, f.key)
}

// release gives back what an unverified flow had charged to its sandbox and to the total
// (its held packets: call it before f.held is emptied).
func (v *Verifier) release(f *flow) {
	addr := f.key.Src.Addr()
	vm := v.vms[addr]
	vm.flows--
	vm.bytes -= f.cost
	vm.packets -= len(f.held)
	v.heldBytes -= f.cost
	f.cost = 0
	delete(v.live, f)
	if vm.flows == 0 {
		delete(v.vms, addr)
	}
}

// fifo holds remembered (released, verified or refused) entries in the order they expire:
// each queue's entries all live equally long.
type fifo struct{ q []*flow }

func (v *Verifier) remember(q *fifo, f *flow, until time.Time) {
	f.last = until
	q.q = append(q.q, f)
	v.memBytes += len(f.buf)
	// Over a bound, refused entries go first: forgetting one only turns a late packet's
	// Drop into a Reset, while forgetting a verified one refuses a good flow's straggler,
	// and forgetting a released one refuses the flow (fail closed).
	for v.memBytes > maxRememberedBytes {
		v.pop(v.oldest(&v.verified, &v.releasedQ))
	}
	for len(v.releasedQ.q)+len(v.verified.q)+len(v.refusedQ.q) > v.lim.Flows {
		v.pop(v.oldest(&v.refusedQ, &v.verified, &v.releasedQ))
	}
}

// oldest is the first of qs that is not empty.
func (v *Verifier) oldest(qs ...*fifo) *fifo {
	for _, q := range qs {
		if len(q.q) > 0 {
			return q
		}
	}
	return qs[len(qs)-1] // not reached: the callers' bounds count only these queues
}

// pop forgets the oldest entry of q, unless the map has moved on to a newer one.
func (v *Verifier) pop(q *fifo) {
	f := q.q[0]
	q.q[0] = nil
	q.q = q.q[1:]
	v.memBytes -= len(f.buf)
	if v.flows[f.key] == f {
		delete(v.flows, f.key)
	}
}

// Sweep applies the time limits; call it every 100 ms or so. A flow that has held data for
// longer than Limits.Hold is refused (ErrTimeout); an unverified flow that holds nothing and
// has been quiet for Limits.Idle is forgotten; a released flow the server has not confirmed
// Limits.Hold after its release is forgotten (not refused: the server got the bytes
// judged; its packets are then an unknown flow's); remembered verified and refused flows
// expire.
func (v *Verifier) Sweep(now time.Time) {
	for f := range v.live {
		switch {
		case len(f.held) > 0 && now.Sub(f.holdSince) > v.lim.Hold:
			err := fmt.Errorf("%w: %d segments held for %v without a whole ClientHello", ErrTimeout, len(f.held), now.Sub(f.holdSince).Round(time.Millisecond))
			v.refuse(f, f.key, f.held[0].id, true, err, now)
		case len(f.held) == 0 && now.Sub(f.last) > v.lim.Idle:
			v.forget(f)
		}
	}
	for _, q := range []*fifo{&v.releasedQ, &v.verified, &v.refusedQ} {
		for len(q.q) > 0 && !now.Before(q.q[0].last) {
			v.pop(q)
		}
	}
}
