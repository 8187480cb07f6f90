package events

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"
)

// A Record caught between reserving its Seq and storing its record holds back the records
// after it, from Query and from subscribers alike, until it has stored its own: a reader
// paging forward from the last Seq it got would otherwise skip it for good, and a
// subscriber would get it out of order.
func TestAnUnstoredRecordHoldsBackTheOnesAfterIt(t *testing.T) {
	h, err := NewHub(HubConfig{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	rec := func(host string) Record { return Record{Tenant: "a", Kind: KindConnect, Decision: Deny, Host: host} }
	hosts := func(recs []Record) []string {
		var out []string
		for _, r := range recs {
			out = append(out, r.Host)
		}
		return out
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := h.Subscribe(ctx, Filter{Tenant: "a"})
	if err != nil {
		t.Fatal(err)
	}
	h.Record(rec("first.test"))
	start := h.Query(Filter{Tenant: "a"})[0].Seq

	// What Record does, in two steps with another Record in between.
	slow := rec("slow.test")
	slow.Time = time.Now().UTC()
	slow.Seq = h.seq.Add(1)
	h.Record(rec("fast.test"))

	for _, tc := range []struct {
		f    Filter
		want []string
	}{
		{Filter{Tenant: "a"}, []string{"first.test"}},
		{Filter{Tenant: "a", AfterSeq: start}, nil},
	} {
		if got := hosts(h.Query(tc.f)); !slices.Equal(got, tc.want) {
			t.Errorf("Query(%+v) = %v while slow.test is not stored, want %v: fast.test waits for it", tc.f, got, tc.want)
		}
	}
	if r := <-sub.Records; r.Host != "first.test" {
		t.Fatalf("first live record %s", r.Host)
	}
	select {
	case r := <-sub.Records:
		t.Fatalf("the subscriber got %s before slow.test was stored", r.Host)
	default:
	}
	// A subscriber that comes now has what is before the gap as its backlog, the rest live.
	late, err := h.Subscribe(ctx, Filter{Tenant: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if got := hosts(late.Backlog); !slices.Equal(got, []string{"first.test"}) {
		t.Errorf("backlog while slow.test is not stored: %v, want first.test", got)
	}

	h.publish(&slow)
	if got := hosts(h.Query(Filter{Tenant: "a", AfterSeq: start})); !slices.Equal(got, []string{"slow.test", "fast.test"}) {
		t.Errorf("after the store: Query = %v, want slow.test, fast.test", got)
	}
	for _, s := range []*Subscription{sub, late} {
		for _, want := range []string{"slow.test", "fast.test"} {
			select {
			case r := <-s.Records:
				if r.Host != want {
					t.Fatalf("a subscriber got %s, want %s", r.Host, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("a subscriber did not get %s", want)
			}
		}
	}
}
