package events_test

import (
	"sync"
	"testing"

	"github.com/egressd/egressd/internal/dataplane/events"
)

// collect is a Sink that keeps what it gets.
type collect struct {
	mu   sync.Mutex
	recs []events.Record
}

func (c *collect) Record(r events.Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recs = append(c.recs, r)
}

func TestOpenConns(t *testing.T) {
	rec := func(tenant, kind, decision string) events.Record {
		return events.Record{Tenant: tenant, Kind: kind, Decision: decision}
	}
	tests := []struct {
		name    string
		records []events.Record
		want    map[string]int64 // tenant ("" for all) -> open
	}{
		{
			name:    "an allowed connect opens one, its close ends it",
			records: []events.Record{rec("a", events.KindConnect, events.Allow)},
			want:    map[string]int64{"": 1, "a": 1, "b": 0},
		},
		{
			name: "closed again",
			records: []events.Record{
				rec("a", events.KindConnect, events.Allow), rec("a", events.KindClose, events.Allow),
			},
			want: map[string]int64{"": 0, "a": 0},
		},
		{
			name: "denials, requests and DNS open nothing",
			records: []events.Record{
				rec("a", events.KindConnect, events.Deny), rec("a", events.KindRequest, events.Allow),
				rec("a", events.KindDNS, events.Allow), rec("a", events.KindRequest, events.Deny),
			},
			want: map[string]int64{"": 0, "a": 0},
		},
		{
			name: "tenants apart",
			records: []events.Record{
				rec("a", events.KindConnect, events.Allow), rec("b", events.KindConnect, events.Allow),
				rec("b", events.KindConnect, events.Allow), rec("a", events.KindClose, events.Allow),
			},
			want: map[string]int64{"": 2, "a": 0, "b": 2, "c": 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := &collect{}
			o := events.NewOpenConns(next)
			for _, r := range tt.records {
				o.Record(r)
			}
			for tenant, want := range tt.want {
				if got := o.Open(tenant); got != want {
					t.Errorf("Open(%q) = %d, want %d", tenant, got, want)
				}
			}
			if len(next.recs) != len(tt.records) {
				t.Errorf("passed on %d records of %d", len(next.recs), len(tt.records))
			}
		})
	}
}

func TestOpenConnsConcurrent(t *testing.T) {
	o := events.NewOpenConns(nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				o.Record(events.Record{Tenant: "a", Kind: events.KindConnect, Decision: events.Allow})
				o.Record(events.Record{Tenant: "a", Kind: events.KindClose, Decision: events.Allow})
				o.Record(events.Record{Tenant: "b", Kind: events.KindConnect, Decision: events.Allow})
			}
		})
	}
	wg.Wait()
	if a, b, all := o.Open("a"), o.Open("b"), o.Open(""); a != 0 || b != 8000 || all != 8000 {
		t.Errorf("open a=%d b=%d all=%d, want 0, 8000, 8000", a, b, all)
	}
}
