package events_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// quiet is a logger for hubs whose warnings a test provokes on purpose.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newHub(t testing.TB, cfg events.HubConfig) *events.Hub {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	h, err := events.NewHub(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// deny is a typical denial record of one tenant's session.
func deny(tenant, session, host string) events.Record {
	return events.Record{
		Kind: events.KindConnect, Tenant: tenant, VMID: "vm-" + session, SessionID: session,
		Decision: events.Deny, Reason: policy.ReasonHostNotListed, Rule: "not in allowed_domains",
		Layer: "session", Mode: "enforce", Transport: "tcp", Host: host, Port: 443,
	}
}

func seqs(recs []events.Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func hosts(recs []events.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Host
	}
	return out
}

// recordN records n denials of tenant t, session s, with hosts h0.test, h1.test...
func recordN(h *events.Hub, t, s string, n int) {
	for i := 0; i < n; i++ {
		h.Record(deny(t, s, fmt.Sprintf("h%d.test", i)))
	}
}

func TestRingBufferKeepsTheNewest(t *testing.T) {
	h := newHub(t, events.HubConfig{Buffer: 10})
	recordN(h, "a", "s1", 25)
	got := h.Query(events.Filter{Tenant: "a"})
	want := make([]string, 0, 10)
	for i := 15; i < 25; i++ {
		want = append(want, fmt.Sprintf("h%d.test", i))
	}
	if !slices.Equal(hosts(got), want) {
		t.Fatalf("buffer holds %v, want the newest ten %v", hosts(got), want)
	}
	// A start point before what is kept starts at the oldest kept record.
	if got := h.Query(events.Filter{Tenant: "a", AfterSeq: 1, Limit: 3}); !slices.Equal(hosts(got), want[:3]) {
		t.Errorf("after an old seq: %v, want %v", hosts(got), want[:3])
	}
}

func TestSeqIsMonotonicAndTimeIsSet(t *testing.T) {
	h := newHub(t, events.HubConfig{SubscriberBuffer: 10000})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := h.Subscribe(ctx, events.Filter{Tenant: "a"})
	if err != nil {
		t.Fatal(err)
	}
	given := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				r := deny("a", "s", "x.test")
				r.Seq = 7 // the Hub's to set, whatever the caller says
				if i == 0 {
					r.Time = given
				}
				h.Record(r)
			}
		}()
	}
	wg.Wait()
	var last uint64
	keptTime := 0
	for i := 0; i < 4000; i++ {
		r := <-sub.Records
		if r.Seq <= last {
			t.Fatalf("seq %d after %d: subscribers see records in seq order", r.Seq, last)
		}
		if r.Seq != last+1 && last != 0 {
			t.Fatalf("seq %d after %d: a gap without a drop", r.Seq, last)
		}
		last = r.Seq
		switch {
		case r.Time.Equal(given):
			keptTime++
		case r.Time.IsZero() || time.Since(r.Time) > time.Minute:
			t.Fatalf("record time %v, want now", r.Time)
		}
	}
	if keptTime != 8 {
		t.Errorf("%d records kept the time they came with, want 8", keptTime)
	}
	// Seq does not restart at 1, so that a resume point from before a restart is below every
	// Seq of the new run.
	if first := h.Query(events.Filter{Tenant: "a", Limit: 1, AfterSeq: 1}); len(first) != 1 || first[0].Seq < 1e15 {
		t.Errorf("first seq %v, want one seeded from the clock", seqs(first))
	}
}

func TestTenantsNeverSeeEachOther(t *testing.T) {
	h := newHub(t, events.HubConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	subA, err := h.Subscribe(ctx, events.Filter{Tenant: "a", Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	recordN(h, "a", "sa", 3)
	recordN(h, "b", "sb", 3)
	h.Record(deny("a", "sa", "last.test"))

	if got := h.Query(events.Filter{Tenant: "a"}); len(got) != 4 {
		t.Errorf("tenant a sees %d records, want its 4", len(got))
	}
	for _, f := range []events.Filter{
		{Tenant: "a", SessionID: "sb"},
		{Tenant: "a", VMID: "vm-sb"},
		{}, // no tenant: nothing, rather than everything
		{SessionID: "sb"},
	} {
		if got := h.Query(f); len(got) != 0 {
			t.Errorf("Query(%+v) = %v, want nothing", f, hosts(got))
		}
	}
	if _, err := h.Subscribe(ctx, events.Filter{SessionID: "sb"}); err == nil {
		t.Error("Subscribe without a tenant succeeded")
	}
	for i := 0; i < 4; i++ {
		if r := <-subA.Records; r.Tenant != "a" {
			t.Fatalf("tenant a's subscriber got %+v", r)
		}
	}
	select {
	case r := <-subA.Records:
		t.Fatalf("unexpected record %+v", r)
	default:
	}
}

func TestEachFilter(t *testing.T) {
	h := newHub(t, events.HubConfig{})
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	recs := []events.Record{
		{Kind: events.KindConnect, Decision: events.Deny, VMID: "v1", SessionID: "s1", Host: "0"},
		{Kind: events.KindConnect, Decision: events.Allow, VMID: "v1", SessionID: "s1", Host: "1"},
		{Kind: events.KindDNS, Decision: events.Deny, VMID: "v1", SessionID: "s2", Host: "2"},
		{Kind: events.KindRequest, Decision: events.Allow, VMID: "v2", SessionID: "s3", Host: "3"},
		{Kind: events.KindClose, Decision: events.Allow, VMID: "v2", SessionID: "s3", Host: "4"},
	}
	for i, r := range recs {
		r.Tenant = "a"
		r.Time = base.Add(time.Duration(i) * time.Minute)
		h.Record(r)
	}
	all := h.Query(events.Filter{Tenant: "a"})
	cases := []struct {
		f    events.Filter
		want []string
	}{
		{events.Filter{VMID: "v1"}, []string{"0", "1", "2"}},
		{events.Filter{SessionID: "s3"}, []string{"3", "4"}},
		{events.Filter{Decision: events.Deny}, []string{"0", "2"}},
		{events.Filter{Kind: events.KindDNS}, []string{"2"}},
		{events.Filter{Kind: events.KindClose}, []string{"4"}},
		{events.Filter{VMID: "v1", Decision: events.Allow}, []string{"1"}},
		{events.Filter{Since: base.Add(3 * time.Minute)}, []string{"3", "4"}},
		{events.Filter{AfterSeq: all[1].Seq}, []string{"2", "3", "4"}},
		{events.Filter{AfterSeq: all[1].Seq, Limit: 2}, []string{"2", "3"}}, // first after the start
		{events.Filter{Limit: 2}, []string{"3", "4"}},                       // newest without one
		{events.Filter{Limit: -1}, []string{}},
		{events.Filter{SessionID: "nope"}, []string{}},
	}
	for _, tc := range cases {
		tc.f.Tenant = "a"
		if got := hosts(h.Query(tc.f)); !slices.Equal(got, tc.want) {
			t.Errorf("Query(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
}

func TestLimits(t *testing.T) {
	h := newHub(t, events.HubConfig{Buffer: 20000})
	recordN(h, "a", "s", 12000)
	for _, tc := range []struct{ limit, want int }{{0, events.DefaultLimit}, {5, 5}, {50000, events.MaxLimit}, {-1, 0}} {
		if got := len(h.Query(events.Filter{Tenant: "a", Limit: tc.limit})); got != tc.want {
			t.Errorf("Limit %d: %d records, want %d", tc.limit, got, tc.want)
		}
	}
}

func TestSubscribeBacklogThenLive(t *testing.T) {
	h := newHub(t, events.HubConfig{})
	recordN(h, "a", "s", 5)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := h.Subscribe(ctx, events.Filter{Tenant: "a", Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := hosts(sub.Backlog); !slices.Equal(got, []string{"h2.test", "h3.test", "h4.test"}) {
		t.Errorf("backlog %v, want the newest three", got)
	}
	h.Record(deny("a", "s", "live.test"))
	if r := <-sub.Records; r.Host != "live.test" || r.Seq != sub.Backlog[2].Seq+1 {
		t.Errorf("first live record %+v, want live.test right after the backlog", r)
	}

	// From a start point, the backlog is what came after it.
	all := h.Query(events.Filter{Tenant: "a"})
	sub2, err := h.Subscribe(ctx, events.Filter{Tenant: "a", AfterSeq: all[3].Seq, Limit: events.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	if got := hosts(sub2.Backlog); !slices.Equal(got, []string{"h4.test", "live.test"}) {
		t.Errorf("backlog after seq %d: %v", all[3].Seq, got)
	}
}

func TestSlowSubscriberLosesRecordsAndNeverBlocks(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHub(t, events.HubConfig{SubscriberBuffer: 4, Registerer: reg})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow, err := h.Subscribe(ctx, events.Filter{Tenant: "a"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		recordN(h, "a", "s", 100) // nobody reads slow.Records meanwhile
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Record blocked on a subscriber that does not read")
	}
	if d := slow.Dropped(); d != 96 {
		t.Errorf("Dropped() = %d, want 96", d)
	}
	if v := gather(t, reg, events.MetricEventsDropped, "sink", events.SinkSubscriber); v != 96 {
		t.Errorf("%s{sink=subscriber} = %v, want 96", events.MetricEventsDropped, v)
	}
	var got []uint64
	for i := 0; i < 4; i++ {
		got = append(got, (<-slow.Records).Seq)
	}
	h.Record(deny("a", "s", "after.test"))
	r := <-slow.Records
	if r.Seq-got[3] != 97 {
		t.Errorf("seq %d after %d: the loss should show as a gap of 96", r.Seq, got[3])
	}
}

func TestSubscriptionEnds(t *testing.T) {
	h := newHub(t, events.HubConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := h.Subscribe(ctx, events.Filter{Tenant: "a"})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	waitClosed(t, sub.Records)
	h.Record(deny("a", "s", "x.test")) // no send on the closed channel

	sub2, err := h.Subscribe(context.Background(), events.Filter{Tenant: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, sub2.Records)
	if _, err := h.Subscribe(context.Background(), events.Filter{Tenant: "a"}); err != events.ErrClosed {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
	// After Close records are still kept and counted; Record does not panic.
	h.Record(deny("a", "s", "late.test"))
	if got := h.Query(events.Filter{Tenant: "a", Limit: 1}); len(got) != 1 || got[0].Host != "late.test" {
		t.Errorf("after Close: %v", hosts(got))
	}
}

func waitClosed(t *testing.T, ch <-chan events.Record) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("the subscription's channel was not closed")
		}
	}
}

// TestConcurrentUse runs every method at once, for the race detector.
func TestConcurrentUse(t *testing.T) {
	dir := t.TempDir()
	h := newHub(t, events.HubConfig{Buffer: 64, SubscriberBuffer: 8, AuditPath: dir + "/audit.jsonl", Registerer: prometheus.NewRegistry()})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	run := func(n int, f func(i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n && ctx.Err() == nil; i++ {
				f(i)
			}
		}()
	}
	for w := 0; w < 4; w++ {
		tenant := fmt.Sprintf("t%d", w%2)
		run(2000, func(i int) { h.Record(deny(tenant, "s", "x.test")) })
	}
	run(200, func(i int) { h.Query(events.Filter{Tenant: "t0", Limit: 50}) })
	run(200, func(i int) { h.Query(events.Filter{Tenant: "t1", AfterSeq: 1}) })
	run(100, func(i int) {
		sctx, scancel := context.WithCancel(ctx)
		sub, err := h.Subscribe(sctx, events.Filter{Tenant: "t0"})
		if err != nil {
			t.Error(err)
			scancel()
			return
		}
		for j := 0; j < 3; j++ {
			select {
			case <-sub.Records:
			case <-time.After(time.Millisecond):
			}
		}
		scancel()
	})
	run(20, func(i int) {
		if err := h.Reopen(); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
}
