package events_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/internal/dataplane/events"
)

// ringHub opens a Hub on the ring in dir, as egressd does after a restart.
func ringHub(t *testing.T, dir string, cfg events.HubConfig) *events.Hub {
	t.Helper()
	cfg.RingDir = dir
	if cfg.RingKeep == 0 {
		cfg.RingKeep = 1000
	}
	if cfg.RingKeepBytes == 0 {
		cfg.RingKeepBytes = 64 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	h, err := events.NewHub(cfg)
	if err != nil {
		t.Fatalf("NewHub on the ring: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func closeHub(t *testing.T, h *events.Hub) {
	t.Helper()
	if err := h.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func all(h *events.Hub, tenant string) []events.Record {
	return h.Query(events.Filter{Tenant: tenant, Limit: events.MaxLimit})
}

// sameRecords compares what matters of two lists: Seq, host and time, in order.
func sameRecords(t *testing.T, what string, got, want []events.Record) {
	t.Helper()
	if !slices.Equal(seqs(got), seqs(want)) || !slices.Equal(hosts(got), hosts(want)) {
		t.Fatalf("%s: got %d records %v, want %d %v", what, len(got), hosts(got), len(want), hosts(want))
	}
	for i := range got {
		if !got[i].Time.Equal(want[i].Time) || got[i].Reason != want[i].Reason || got[i].SessionID != want[i].SessionID {
			t.Fatalf("%s: record %d is %+v, want %+v", what, i, got[i], want[i])
		}
	}
}

func TestRingRestartKeepsTheLastRecordsInOrder(t *testing.T) {
	for _, tc := range []struct {
		name         string
		sent, buffer int
		keep         int
		wantAtLeast  int // of the newest, after the restart
	}{
		{"fewer than the bound", 300, 1000, 1000, 300},
		{"the buffer bounds what is loaded", 300, 100, 1000, 100},
		// Whole segments (an eighth of the bound) go: at least 7/8 of it stays.
		{"the ring's bound", 3000, 1000, 800, 700},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			h := ringHub(t, dir, events.HubConfig{Buffer: tc.buffer, RingKeep: tc.keep})
			for i := 0; i < tc.sent; i++ {
				tenant := []string{"a", "b"}[i%2]
				h.Record(deny(tenant, "s"+tenant, fmt.Sprintf("h%d.test", i)))
			}
			before := map[string][]events.Record{"a": all(h, "a"), "b": all(h, "b")}
			closeHub(t, h)

			h2 := ringHub(t, dir, events.HubConfig{Buffer: tc.buffer, RingKeep: tc.keep})
			total := 0
			for _, tenant := range []string{"a", "b"} {
				got := all(h2, tenant)
				total += len(got)
				// The newest of them, as they were before, in order.
				if len(got) > len(before[tenant]) {
					t.Fatalf("tenant %s: %d records after the restart, %d before", tenant, len(got), len(before[tenant]))
				}
				sameRecords(t, "tenant "+tenant, got, before[tenant][len(before[tenant])-len(got):])
				// A follower sees the same backlog.
				sub, err := h2.Subscribe(context.Background(), events.Filter{Tenant: tenant, Limit: events.MaxLimit})
				if err != nil {
					t.Fatal(err)
				}
				sameRecords(t, "backlog of "+tenant, sub.Backlog, got)
			}
			if total < tc.wantAtLeast || total > max(tc.keep, tc.buffer) {
				t.Errorf("%d records after the restart, want %d to %d", total, tc.wantAtLeast, min(tc.keep, tc.buffer))
			}
		})
	}
}

// TestRingLoadedRecordsGiveWayToNewOnes: what was loaded and what is recorded since are at
// most Buffer together, newest kept, as the buffer alone would be.
func TestRingLoadedRecordsGiveWayToNewOnes(t *testing.T) {
	dir := t.TempDir()
	h := ringHub(t, dir, events.HubConfig{Buffer: 10})
	recordN(h, "a", "s", 10) // h0..h9
	closeHub(t, h)
	h = ringHub(t, dir, events.HubConfig{Buffer: 10})
	for i := 10; i < 14; i++ {
		h.Record(deny("a", "s", fmt.Sprintf("h%d.test", i)))
	}
	var want []string
	for i := 4; i < 14; i++ {
		want = append(want, fmt.Sprintf("h%d.test", i))
	}
	if got := hosts(all(h, "a")); !slices.Equal(got, want) {
		t.Errorf("after 4 new records: %v, want %v", got, want)
	}
	if got := hosts(h.Query(events.Filter{Tenant: "a", Limit: 3})); !slices.Equal(got, want[7:]) {
		t.Errorf("tail of 3: %v, want %v", got, want[7:])
	}
	if got := hosts(h.Query(events.Filter{Tenant: "a", AfterSeq: 1, Limit: 3})); !slices.Equal(got, want[:3]) {
		t.Errorf("first 3 after an old seq: %v, want %v", got, want[:3])
	}
	for i := 14; i < 30; i++ {
		h.Record(deny("a", "s", fmt.Sprintf("h%d.test", i)))
	}
	if got := hosts(all(h, "a")); len(got) != 10 || got[0] != "h20.test" {
		t.Errorf("after a whole buffer of new records: %v, want h20..h29", got)
	}
}

// TestRingSeqsGoOnAcrossRestarts: ids keep increasing over restarts, and resuming after any
// id (as Last-Event-ID does) gets exactly what came after it.
func TestRingSeqsGoOnAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	var sent []events.Record
	for run := 0; run < 3; run++ {
		h := ringHub(t, dir, events.HubConfig{})
		got := all(h, "a")
		sameRecords(t, fmt.Sprintf("run %d loaded", run), got, sent)
		for i := 0; i < 5; i++ {
			h.Record(deny("a", "s", fmt.Sprintf("r%d-%d.test", run, i)))
		}
		sent = all(h, "a")
		for i := 1; i < len(sent); i++ {
			if sent[i].Seq <= sent[i-1].Seq {
				t.Fatalf("run %d: seq %d after %d", run, sent[i].Seq, sent[i-1].Seq)
			}
		}
		if len(sent) != 5*(run+1) {
			t.Fatalf("run %d: %d records, want %d", run, len(sent), 5*(run+1))
		}
		// Resume after each id: a list and a follow's backlog both give the rest.
		for i, r := range sent {
			want := sent[i+1:]
			sameRecords(t, "query after "+r.Host, h.Query(events.Filter{Tenant: "a", AfterSeq: r.Seq, Limit: events.MaxLimit}), want)
			sub, err := h.Subscribe(context.Background(), events.Filter{Tenant: "a", AfterSeq: r.Seq, Limit: events.MaxLimit})
			if err != nil {
				t.Fatal(err)
			}
			sameRecords(t, "follow after "+r.Host, sub.Backlog, want)
		}
		closeHub(t, h)
	}
	// A follower that resumes with the last id of a run gets the next run's records live.
	h := ringHub(t, dir, events.HubConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := h.Subscribe(ctx, events.Filter{Tenant: "a", AfterSeq: sent[len(sent)-1].Seq, Limit: events.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(sub.Backlog) != 0 {
		t.Fatalf("backlog after the newest id: %v", hosts(sub.Backlog))
	}
	h.Record(deny("a", "s", "live.test"))
	if r := <-sub.Records; r.Host != "live.test" || r.Seq <= sent[len(sent)-1].Seq {
		t.Fatalf("live record %s seq %d, after %d", r.Host, r.Seq, sent[len(sent)-1].Seq)
	}
}

// ringFiles is the ring's segment files and their total size.
func ringFiles(t *testing.T, dir string) ([]string, int64) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			size += fi.Size()
		}
	}
	slices.Sort(paths)
	return paths, size
}

// TestRingBoundsHoldUnderLoad records from many goroutines into rings bounded by records or
// by bytes: neither bound is ever passed, and what is kept is the newest, in order.
func TestRingBoundsHoldUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keep      int
		keepBytes int64
	}{
		{"records bind", 2000, 64 << 20},
		{"bytes bind", 1 << 20, 256 << 10},
		{"both small", 100, 16 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			reg := prometheus.NewRegistry()
			cfg := events.HubConfig{Buffer: 50000, RingKeep: tc.keep, RingKeepBytes: tc.keepBytes, RingQueue: 100000, Registerer: reg}
			h := ringHub(t, dir, cfg)
			const goroutines, each = 8, 2500
			var wg sync.WaitGroup
			for g := 0; g < goroutines; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < each; i++ {
						h.Record(deny("a", fmt.Sprintf("s%d", g), fmt.Sprintf("g%d-%d.test", g, i)))
						if i%500 == 0 {
							if _, size := ringFiles(t, dir); size > tc.keepBytes {
								t.Errorf("%d bytes on disk while writing, bound %d", size, tc.keepBytes)
							}
						}
					}
				}()
			}
			wg.Wait()
			newest := all(h, "a")
			newest = newest[len(newest)-1:]
			closeHub(t, h)
			if d := gather(t, reg, events.MetricEventsDropped, "sink", events.SinkRing); d != 0 {
				t.Fatalf("%v records dropped with a queue that holds them all", d)
			}
			_, size := ringFiles(t, dir)
			if size > tc.keepBytes {
				t.Errorf("%d bytes on disk, bound %d", size, tc.keepBytes)
			}
			if got := gather(t, reg, events.MetricRingBytes); got != float64(size) {
				t.Errorf("%s says %v, the files hold %d", events.MetricRingBytes, got, size)
			}
			cfg.Registerer = nil
			h2 := ringHub(t, dir, cfg)
			got := all(h2, "a")
			if len(got) > tc.keep {
				t.Errorf("%d records kept, bound %d", len(got), tc.keep)
			}
			if len(got) == 0 || got[len(got)-1].Seq != newest[0].Seq {
				t.Fatalf("the newest record is not kept")
			}
			for i := 1; i < len(got); i++ {
				if got[i].Seq != got[i-1].Seq+1 {
					t.Fatalf("records %d and %d kept with seqs %d, %d: not the newest run of them", i-1, i, got[i-1].Seq, got[i].Seq)
				}
			}
			// At least 7/8 of whichever bound binds (less one record's bytes).
			if n, b := int64(len(got))*8, size*8; n < int64(tc.keep)*7 && b < (tc.keepBytes-1024)*7 {
				t.Errorf("only %d records, %d bytes kept of %d, %d", len(got), size, tc.keep, tc.keepBytes)
			}
		})
	}
}

// TestRingDropsAreCountedNeverBlocking: with a queue of one, what the writer could not take
// is counted, and what is on disk plus what is counted is everything sent.
func TestRingDropsAreCountedNeverBlocking(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	cfg := events.HubConfig{Buffer: 100000, RingKeep: 1 << 20, RingKeepBytes: 1 << 30, RingQueue: 1, Registerer: reg}
	h := ringHub(t, dir, cfg)
	recordConcurrently(h, 8, 5000)
	closeHub(t, h)
	h.Record(deny("a", "s", "after-close.test")) // reaches no file, and is counted
	dropped := gather(t, reg, events.MetricEventsDropped, "sink", events.SinkRing)
	h2 := ringHub(t, dir, events.HubConfig{Buffer: 100000, RingKeep: 1 << 20, RingKeepBytes: 1 << 30})
	kept := 0
	for after := uint64(1); ; {
		page := h2.Query(events.Filter{Tenant: "a", AfterSeq: after, Limit: events.MaxLimit})
		if len(page) == 0 {
			break
		}
		kept += len(page)
		after = page[len(page)-1].Seq
	}
	if float64(kept)+dropped != 8*5000+1 {
		t.Errorf("%d on disk + %v dropped != %d sent", kept, dropped, 8*5000+1)
	}
	t.Logf("%d kept, %v dropped", kept, dropped)
	if dropped < 1 {
		t.Errorf("the record after Close was not counted as dropped")
	}
}

// corruptions damage a ring's last segment as a crash or a bad disk would.
var corruptions = []struct {
	name    string
	damage  func(b []byte) []byte
	lostMax int // how many of the last records may be lost
}{
	{"torn payload", func(b []byte) []byte { return b[:len(b)-5] }, 1},
	{"torn header", func(b []byte) []byte { return append(b, 0x40, 0, 0) }, 0},
	{"flipped byte in the last record", func(b []byte) []byte { b[len(b)-10] ^= 0x20; return b }, 1},
	{"garbage appended", func(b []byte) []byte { return append(b, []byte("\x10\x00\x00\x00garbagegarbagegarbage")...) }, 0},
	{"huge length", func(b []byte) []byte { return append(b, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4) }, 0},
	{"zero length", func(b []byte) []byte { return append(b, 0, 0, 0, 0, 0, 0, 0, 0) }, 0},
	{"zeroed tail (a file extended but not written)", func(b []byte) []byte { return append(b, make([]byte, 4096)...) }, 0},
}

func TestRingCorruptTailIsDroppedNotFatal(t *testing.T) {
	for _, tc := range corruptions {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			h := ringHub(t, dir, events.HubConfig{})
			recordN(h, "a", "s", 20)
			before := all(h, "a")
			closeHub(t, h)
			paths, _ := ringFiles(t, dir)
			last := paths[len(paths)-1]
			b, err := os.ReadFile(last)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(last, tc.damage(b), 0o600); err != nil {
				t.Fatal(err)
			}
			var logBuf bytes.Buffer
			h = ringHub(t, dir, events.HubConfig{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
			if !strings.Contains(logBuf.String(), "dropping a torn or corrupt tail") {
				t.Errorf("no log line for the dropped tail: %q", logBuf.String())
			}
			got := all(h, "a")
			if len(got) < len(before)-tc.lostMax || len(got) > len(before) {
				t.Fatalf("%d records after the damage, want %d less at most %d", len(got), len(before), tc.lostMax)
			}
			sameRecords(t, "kept", got, before[:len(got)])
			// Records written after the repair are read back after the next restart: the
			// damaged tail does not hide them.
			h.Record(deny("a", "s", "after.test"))
			closeHub(t, h)
			logBuf.Reset()
			h = ringHub(t, dir, events.HubConfig{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
			again := all(h, "a")
			if len(again) != len(got)+1 || again[len(again)-1].Host != "after.test" {
				t.Fatalf("after the next restart: %v", hosts(again))
			}
			if strings.Contains(logBuf.String(), "corrupt") {
				t.Errorf("the repaired ring is reported damaged again: %s", logBuf.String())
			}
		})
	}
}

// TestRingCorruptMiddleSegment: damage inside an older segment loses the rest of that segment
// only; the newer segments are kept.
func TestRingCorruptMiddleSegment(t *testing.T) {
	dir := t.TempDir()
	h := ringHub(t, dir, events.HubConfig{RingKeep: 80}) // segments of 10 records
	recordN(h, "a", "s", 40)
	before := all(h, "a")
	closeHub(t, h)
	paths, _ := ringFiles(t, dir)
	if len(paths) != 4 {
		t.Fatalf("%d segments, want 4", len(paths))
	}
	b, _ := os.ReadFile(paths[1])
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(paths[1], b, 0o600); err != nil {
		t.Fatal(err)
	}
	h = ringHub(t, dir, events.HubConfig{RingKeep: 80})
	got := all(h, "a")
	if len(got) < 30 || len(got) >= 40 {
		t.Fatalf("%d records kept, want 30 to 39", len(got))
	}
	sameRecords(t, "first segment", got[:10], before[:10])
	sameRecords(t, "newer segments", got[len(got)-20:], before[20:])
}

// TestRingInUseByAnotherHub: two processes never write one ring.
func TestRingInUseByAnotherHub(t *testing.T) {
	dir := t.TempDir()
	ringHub(t, dir, events.HubConfig{})
	if _, err := events.NewHub(events.HubConfig{RingDir: dir, RingKeep: 10, RingKeepBytes: 1 << 20, Logger: quiet}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second hub on one ring: %v", err)
	}
}

func TestRingOffWithAZeroBound(t *testing.T) {
	for _, cfg := range []events.HubConfig{{RingKeep: 0, RingKeepBytes: 1 << 20}, {RingKeep: 10, RingKeepBytes: 0}} {
		dir := filepath.Join(t.TempDir(), "events")
		cfg.RingDir, cfg.Logger = dir, quiet
		h, err := events.NewHub(cfg)
		if err != nil {
			t.Fatal(err)
		}
		recordN(h, "a", "s", 3)
		closeHub(t, h)
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("keep %d, keep bytes %d: the ring was made (%v)", cfg.RingKeep, cfg.RingKeepBytes, err)
		}
	}
}

// TestRingBoundsShrunkSinceItWasWritten: a restart with smaller bounds keeps the newest
// records that fit them (rewriting the oldest segment kept), and loads only those.
func TestRingBoundsShrunkSinceItWasWritten(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keep      int
		keepBytes int64
	}{
		{"records", 100, 64 << 20},
		{"bytes", 100000, 16 << 10},
		{"both", 300, 64 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			h := ringHub(t, dir, events.HubConfig{RingKeep: 1000})
			recordN(h, "a", "s", 1000)
			before := all(h, "a")
			closeHub(t, h)
			old := map[string][]byte{}
			paths, _ := ringFiles(t, dir)
			for _, p := range paths {
				old[p], _ = os.ReadFile(p)
			}
			cfg := events.HubConfig{RingKeep: tc.keep, RingKeepBytes: tc.keepBytes}
			h = ringHub(t, dir, cfg)
			got := all(h, "a")
			_, size := ringFiles(t, dir)
			if len(got) == 0 || len(got) > tc.keep || size > tc.keepBytes {
				t.Fatalf("%d records, %d bytes loaded; bounds %d, %d", len(got), size, tc.keep, tc.keepBytes)
			}
			// All that fits: one more of the old records would not.
			if len(got) < min(tc.keep, len(before)) && size+int64(len(before[0].Host))+300 < tc.keepBytes {
				t.Errorf("only %d records, %d bytes kept of %d, %d", len(got), size, tc.keep, tc.keepBytes)
			}
			sameRecords(t, "the newest", got, before[len(before)-len(got):])
			closeHub(t, h)

			// A crash in the middle of the rewrite (before anything new was written): the old
			// segments are still there beside the new ones, and a temporary file is left.
			// The next start sorts it out.
			for p, b := range old {
				if _, err := os.Stat(p); os.IsNotExist(err) {
					if err := os.WriteFile(p, b, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			tmp := filepath.Join(dir, "00000000000000000001.seg.tmp")
			if err := os.WriteFile(tmp, []byte("half"), 0o600); err != nil {
				t.Fatal(err)
			}
			h = ringHub(t, dir, cfg)
			third := all(h, "a")
			_, size = ringFiles(t, dir)
			if len(third) > tc.keep || size > tc.keepBytes || third[len(third)-1].Host != before[len(before)-1].Host {
				t.Fatalf("after a crashed rewrite: %d records, %d bytes, newest %s", len(third), size, third[len(third)-1].Host)
			}
			for i := 1; i < len(third); i++ {
				if third[i].Seq <= third[i-1].Seq {
					t.Fatalf("after a crashed rewrite: seq %d after %d", third[i].Seq, third[i-1].Seq)
				}
			}
			if _, err := os.Stat(tmp); !os.IsNotExist(err) {
				t.Errorf("the temporary file is still there: %v", err)
			}
			h.Record(deny("a", "s", "new.test"))
			closeHub(t, h)
			var logBuf bytes.Buffer
			cfg.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
			h = ringHub(t, dir, cfg)
			again := all(h, "a")
			if len(again) > tc.keep || again[len(again)-1].Host != "new.test" || strings.Contains(logBuf.String(), "level=WARN") {
				t.Fatalf("after one more record: %d records, newest %s; log %s", len(again), again[len(again)-1].Host, logBuf.String())
			}
		})
	}
}
