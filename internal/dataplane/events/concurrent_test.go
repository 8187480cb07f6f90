package events_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
)

// recordConcurrently records n denials of tenant "a" from each of g goroutines at once and
// returns when all are recorded.
func recordConcurrently(h *events.Hub, g, n int) {
	var wg sync.WaitGroup
	for w := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recordN(h, "a", fmt.Sprintf("s%d", w), n)
		}()
	}
	wg.Wait()
}

// consecutive fails unless seqs go up by exactly one each: no record missed, none twice.
func consecutive(t *testing.T, what string, seqs []uint64) {
	t.Helper()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("%s: seq %d follows %d (record %d of %d)", what, seqs[i], seqs[i-1], i, len(seqs))
		}
	}
}

// Records stored by many goroutines at once still reach every consumer whole and in Seq
// order: a subscriber that comes in the middle gets a backlog and live records that meet
// exactly, a reader paging forward with AfterSeq misses none (a Seq reserved but not yet
// stored must stop it, not be skipped), and the audit file has every record in order.
func TestConcurrentRecordsReachEveryConsumerInOrder(t *testing.T) {
	const writers, each = 4, 2000
	const total = writers * each
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	h := newHub(t, events.HubConfig{Buffer: 2 * total, SubscriberBuffer: total, AuditQueue: total, AuditPath: audit})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		recordConcurrently(h, writers, each)
	}()
	type result struct {
		seqs []uint64
		err  error
	}
	paged := make(chan result, 1)
	go func() {
		var seqs []uint64
		after := uint64(1)
		for len(seqs) < total && ctx.Err() == nil {
			page := h.Query(events.Filter{Tenant: "a", AfterSeq: after, Limit: 100})
			for _, r := range page {
				seqs = append(seqs, r.Seq)
				after = r.Seq
			}
		}
		paged <- result{seqs, ctx.Err()}
	}()
	time.Sleep(time.Millisecond) // let the writers start, so that the subscriber comes in the middle
	sub, err := h.Subscribe(ctx, events.Filter{Tenant: "a", Limit: events.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	<-recorded

	got := seqs(sub.Backlog)
	for len(got) < total {
		select {
		case r := <-sub.Records:
			got = append(got, r.Seq)
		case <-ctx.Done():
			t.Fatalf("the subscriber has %d of %d records (backlog %d)", len(got), total, len(sub.Backlog))
		}
	}
	consecutive(t, "backlog then live", got)
	if sub.Dropped() != 0 {
		t.Errorf("the subscriber lost %d records with room for all", sub.Dropped())
	}

	p := <-paged
	if p.err != nil {
		t.Fatalf("paging forward got %d of %d records: %v", len(p.seqs), total, p.err)
	}
	consecutive(t, "paging forward", p.seqs)

	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	lines := seqs(readAudit(t, audit))
	if len(lines) != total {
		t.Fatalf("the audit file has %d records, want %d", len(lines), total)
	}
	consecutive(t, "the audit file", lines)
}
