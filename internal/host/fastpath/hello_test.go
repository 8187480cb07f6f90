package fastpath

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	fp "github.com/egressd/egressd/internal/host/fastpath/fastpathtest"
)

// TestSweep: the time limits.
func TestSweep(t *testing.T) {
	hellos(t)
	g := goodHello
	t.Run("hold timeout", func(t *testing.T) {
		c := newConn(t, Limits{})
		ids := []uint32{c.syn(), c.data(0, g[:10]), c.data(10, g[10:20])}
		c.v.Sweep(t0.Add(5 * time.Second))
		if got := c.verdicts(ids...); !slices.Equal(got, []Verdict{A, H, H}) {
			t.Fatalf("at the limit: %v", got)
		}
		c.v.Sweep(t0.Add(5*time.Second + time.Millisecond))
		if got := c.verdicts(ids...); !slices.Equal(got, []Verdict{A, R, D}) {
			t.Fatalf("past the limit: %v", got)
		}
		wantErr(t, c.refusal(), ErrTimeout)
		if s := c.v.Stats(); s.Flows != 0 || s.HeldBytes != 0 || s.Refused["timeout"] != 1 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("idle flow forgotten", func(t *testing.T) {
		c := newConn(t, Limits{})
		c.syn()
		c.v.Sweep(t0.Add(30 * time.Second))
		if c.v.Stats().Flows != 1 {
			t.Fatal("forgotten too early")
		}
		c.v.Sweep(t0.Add(31 * time.Second))
		if c.v.Stats().Flows != 0 {
			t.Fatal("not forgotten")
		}
		c.now = t0.Add(31 * time.Second)
		if got := c.verdicts(c.data(0, g)); got[0] != R {
			t.Fatalf("data after forgetting: %v", got)
		}
		wantErr(t, c.refusal(), ErrUnknownFlow)
	})
	t.Run("released flow the server never confirms is forgotten after Hold", func(t *testing.T) {
		c := newConn(t, Limits{})
		c.syn()
		c.data(0, g)
		c.v.Sweep(t0.Add(5*time.Second - time.Millisecond))
		c.now = t0.Add(5*time.Second - time.Millisecond)
		if got := c.verdicts(c.data(len(g), []byte("GET"))); got[0] != A {
			t.Fatalf("released flow before Hold: %v", got)
		}
		c.v.Sweep(t0.Add(5 * time.Second))
		if len(c.v.flows) != 0 || c.v.memBytes != 0 {
			t.Fatalf("%d entries, %d bytes left", len(c.v.flows), c.v.memBytes)
		}
		c.now = t0.Add(6 * time.Second)
		if got := c.verdicts(c.reply(len(g), 0), c.data(len(g), []byte("GET"))); !slices.Equal(got, []Verdict{D, R}) {
			t.Fatalf("after forgetting: %v, want server dropped, client reset", got)
		}
		wantErr(t, c.refusal(), ErrUnknownFlow)
		if s := c.v.Stats(); s.Confirmed != 0 || s.Passed != 1 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("confirmed flow expires after the linger", func(t *testing.T) {
		c := newConn(t, Limits{})
		c.syn()
		c.data(0, g)
		c.now = t0.Add(4 * time.Second)
		if got := c.verdicts(c.reply(len(g), 0)); got[0] != C {
			t.Fatalf("server ACK: %v", got)
		}
		c.v.Sweep(t0.Add(5*time.Second + time.Millisecond)) // the released entry expires, not the verified one
		c.now = t0.Add(5*time.Second + time.Millisecond)
		if got := c.verdicts(c.data(0, g), c.reply(len(g), 0)); !slices.Equal(got, []Verdict{A, A}) {
			t.Fatalf("verified flow after the release's Hold: %v", got)
		}
		c.v.Sweep(t0.Add(6*time.Second + time.Millisecond))
		if len(c.v.flows) != 0 || c.v.memBytes != 0 {
			t.Fatalf("%d entries, %d bytes left", len(c.v.flows), c.v.memBytes)
		}
		if s := c.v.Stats(); s.Confirmed != 1 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("verified and refused entries expire", func(t *testing.T) {
		c := newConn(t, Limits{})
		d := c.sibling(vmAddr.Addr().Next().String() + ":1")
		c.syn()
		c.data(0, g)
		d.data(0, g) // refused: unknown flow
		c.now = t0.Add(time.Second)
		if got := c.verdicts(c.data(0, g), d.data(0, g)); !slices.Equal(got, []Verdict{A, D}) {
			t.Fatalf("while remembered: %v", got)
		}
		c.v.Sweep(t0.Add(31 * time.Second))
		if len(c.v.flows) != 0 || c.v.memBytes != 0 {
			t.Fatalf("%d entries, %d bytes left", len(c.v.flows), c.v.memBytes)
		}
	})
}

// TestSplitEverywhere: a real ClientHello, small and over 4 KiB, cut into two segments at
// every position and sent in both orders: the benign name passes, the denied one is reset.
func TestSplitEverywhere(t *testing.T) {
	hellos(t)
	if len(bigGood) <= 4096 || len(bigEvil) <= 4096 {
		t.Fatalf("big hellos of %d and %d bytes, want over 4 KiB", len(bigGood), len(bigEvil))
	}
	for _, tc := range []struct {
		name  string
		hello []byte
		good  bool
	}{{"small benign", goodHello, true}, {"small denied", evilHello, false}, {"big benign", bigGood, true}, {"big denied", bigEvil, false}} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.hello
			for cut := 1; cut < len(h); cut++ {
				for _, reverse := range []bool{false, true} {
					c := newConn(t, Limits{})
					c.syn()
					var first, second uint32
					if reverse {
						second = c.data(cut, h[cut:])
						first = c.data(0, h[:cut])
					} else {
						first = c.data(0, h[:cut])
						second = c.data(cut, h[cut:])
					}
					want := []Verdict{P, P}
					if !tc.good && reverse {
						want = []Verdict{R, D}
					} else if !tc.good {
						want = []Verdict{D, R}
					}
					if got := c.verdicts(first, second); !slices.Equal(got, want) {
						t.Fatalf("cut at %d (reversed %v): %v, want %v", cut, reverse, got, want)
					}
					if n := len(c.j.calls); n != 1 {
						t.Fatalf("cut at %d: judge called %d times", cut, n)
					}
				}
			}
		})
	}
}

// piece is a data segment a test sends: its offset and bytes.
type piece struct {
	off int
	b   []byte
}

// scramble cuts hello into 1-8 pieces at random, duplicates some, may give a duplicate
// other bytes (then it reports evil), and shuffles them.
func scramble(rng *rand.Rand, hello, other []byte, tamper bool) (ps []piece, evil bool) {
	cuts := []int{0, len(hello)}
	for range rng.IntN(8) {
		cuts = append(cuts, 1+rng.IntN(len(hello)-1))
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	for i := 0; i+1 < len(cuts); i++ {
		ps = append(ps, piece{cuts[i], hello[cuts[i]:cuts[i+1]]})
	}
	for range rng.IntN(4) { // duplicates, possibly spanning other pieces
		lo := rng.IntN(len(hello))
		hi := lo + 1 + rng.IntN(len(hello)-lo)
		src := hello
		if tamper && rng.IntN(2) == 0 && !bytes.Equal(hello[lo:hi], other[lo:min(hi, len(other))]) && hi <= len(other) {
			src, evil = other, true
		}
		ps = append(ps, piece{lo, src[lo:hi]})
	}
	rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
	return ps, evil
}

// checkScrambled sends a scrambled hello and checks the verifier's promise: it either
// passes every packet, having judged exactly the bytes a TCP receiver reassembles from the
// packets it let go, or resets the flow; never a Pass of bytes it did not judge.
func checkScrambled(t *testing.T, seed uint64, tamper bool) {
	hellos(t)
	rng := rand.New(rand.NewPCG(seed, seed>>32))
	hello, other := goodHello, evilHello
	if rng.IntN(2) == 0 {
		hello, other = bigGood, bigEvil
	}
	ps, evil := scramble(rng, hello, other, tamper)
	c := newConn(t, Limits{})
	c.syn()
	ids := make([]uint32, len(ps))
	for i, p := range ps {
		ids[i] = c.data(p.off, p.b)
	}
	c.v.Sweep(t0.Add(time.Minute)) // every held packet gets its verdict
	var judged *Hello
	for i := range c.j.calls {
		if c.j.calls[i].Err == nil {
			if judged != nil {
				t.Fatalf("seed %d: judged twice", seed)
			}
			judged = &c.j.calls[i]
		}
	}
	// What the server's TCP would reassemble from what was let go.
	var stream []byte
	var passed int
	for i, p := range ps {
		switch c.r.got[ids[i]] {
		case Pass, Accept:
			passed++
			if judged == nil {
				t.Fatalf("seed %d: packet %d let go without a judgement", seed, i)
			}
			if end := p.off + len(p.b); end > len(judged.Bytes) || !bytes.Equal(judged.Bytes[p.off:end], p.b) {
				t.Fatalf("seed %d: packet %d (bytes %d-%d) let go with bytes that were not judged", seed, i, p.off, end)
			}
			if end := p.off + len(p.b); end > len(stream) {
				stream = append(stream, make([]byte, end-len(stream))...)
			}
			copy(stream[p.off:], p.b)
		case 0:
			t.Fatalf("seed %d: packet %d without a verdict", seed, i)
		}
	}
	switch {
	case passed == 0 && !evil:
		t.Fatalf("seed %d: a benign hello in %d pieces was refused: %v", seed, len(ps), c.refusal())
	case passed > 0 && passed != len(ps) && !evil:
		t.Fatalf("seed %d: %d of %d packets of a benign hello let go", seed, passed, len(ps))
	case passed > 0 && passed != len(ps) && !errors.Is(c.refusal(), ErrOverlap):
		// A tampered duplicate after the Pass: it is reset, the rest was judged.
		t.Fatalf("seed %d: tampered straggler refused with %v, want an overlap", seed, c.refusal())
	case passed > 0 && (!bytes.Equal(stream, judged.Bytes) || judged.Name != goodName):
		t.Fatalf("seed %d: judged %q, but the server gets other bytes", seed, judged.Name)
	case passed == 0 && !errors.Is(c.refusal(), ErrOverlap):
		t.Fatalf("seed %d: tampered hello refused with %v, want an overlap", seed, c.refusal())
	}
}

func TestScrambled(t *testing.T) {
	for seed := range uint64(400) {
		checkScrambled(t, seed, seed%2 == 1)
	}
}

func FuzzScrambled(f *testing.F) {
	for seed := range uint64(8) {
		f.Add(seed, seed%2 == 0)
	}
	f.Fuzz(checkScrambled)
}

// TestRememberedBound: released, verified and refused entries are bounded by Limits.Flows, the
// refused ones forgotten first.
func TestRememberedBound(t *testing.T) {
	hellos(t)
	c := newConn(t, Limits{Flows: 3})
	for i := range 3 {
		d := c.sibling(fmt.Sprintf("100.96.0.2:%d", 30000+i))
		d.data(0, goodHello) // refused: unknown flow
	}
	c.syn()
	c.data(0, goodHello) // verified
	if n := len(c.v.releasedQ.q) + len(c.v.refusedQ.q); n != 3 || len(c.v.releasedQ.q) != 1 || len(c.v.flows) != 3 {
		t.Fatalf("%d remembered (%d released), %d entries", n, len(c.v.releasedQ.q), len(c.v.flows))
	}
	s := c.v.Stats()
	if s.Verified != 1 || s.Passed != 1 || s.Reset != 3 || s.Refused["unknown_flow"] != 3 {
		t.Fatalf("stats %+v", s)
	}
}

// TestLinuxLike: a big ClientHello as a Linux client sends it: SYN with its options,
// the handshake's ACK, then MSS-sized segments with timestamps.
func TestLinuxLike(t *testing.T) {
	hellos(t)
	for _, tc := range []struct {
		hello []byte
		want  Verdict
	}{{bigGood, P}, {bigEvil, R}} {
		c := newConn(t, Limits{})
		fc := fp.Conn{Src: c.src, Dst: srvAddr, ISN: 0xfffff000, Ack: 77, TSval: 0x7ffffff0} // sequence numbers wrap
		ids := []uint32{c.send(fc.SYN()), c.send(fc.ACK())}
		offs, pieces := fp.Split(tc.hello, 1448)
		for i := range pieces {
			fc.TSval++
			ids = append(ids, c.send(fc.Data(offs[i], pieces[i])))
		}
		got := c.verdicts(ids...)
		if got[0] != A || got[1] != A || got[len(got)-1] != tc.want {
			t.Fatalf("verdicts %v, want the last %v", got, tc.want)
		}
	}
}

// TestSecondHelloAfterRelease: once the hello is let go, a handshake record right after it
// (a second ClientHello) is refused until the server has acknowledged the first; early
// data is let go; after the server's acknowledgement the bytes are the connection's.
func TestSecondHelloAfterRelease(t *testing.T) {
	hellos(t)
	g := goodHello
	for _, tc := range []struct {
		name    string
		confirm bool
		next    []byte
		want    Verdict
	}{
		{"second ClientHello before the server answered", false, evilHello, R},
		{"early data before the server answered", false, []byte{0x17, 3, 3, 0, 2, 'h', 'i'}, A},
		{"handshake record after the server answered", true, []byte{0x16, 3, 3, 0, 1, 0}, A},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newConn(t, Limits{})
			c.syn()
			if got := c.verdicts(c.data(0, g)); got[0] != P {
				t.Fatalf("hello: %v", got)
			}
			if tc.confirm {
				if got := c.verdicts(c.reply(len(g), 0)); got[0] != C {
					t.Fatalf("server ACK: %v", got)
				}
			}
			if got := c.verdicts(c.data(len(g), tc.next)); got[0] != tc.want {
				t.Fatalf("next record: %v, want %v", got, tc.want)
			}
			if tc.want == R {
				wantErr(t, c.refusal(), ErrBeyondHello)
			}
		})
	}
}
