package api_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/api"
	"github.com/egressd/egressd/internal/controlplane/store"
)

// slowNodes is a nodes table whose reads take a while and are counted; each read reports a
// revision one higher than the last, so an answer says which read gave it.
type slowNodes struct {
	reads atomic.Int64
	fail  atomic.Bool
}

func (s *slowNodes) ListNodes(context.Context) ([]store.Node, error) {
	n := s.reads.Add(1)
	time.Sleep(30 * time.Millisecond)
	if s.fail.Load() {
		return nil, errors.New("database gone")
	}
	return []store.Node{{ID: "gw", Roles: []string{"gateway"}, Revision: n, Heartbeat: time.Now()}}, nil
}

func (s *slowNodes) Now(context.Context) (time.Time, error) { return time.Now(), nil }

// TestStoreFleetSharesReads: callers at the same moment share reads, and none gets an answer
// from a read that began before it asked.
func TestStoreFleetSharesReads(t *testing.T) {
	src := &slowNodes{}
	f := api.StoreFleet(src)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			before := src.reads.Load()
			nodes, err := f.Nodes(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			if nodes[0].Revision <= before {
				t.Errorf("answered from read %d, which began before the call (reads then: %d)", nodes[0].Revision, before)
			}
		})
	}
	wg.Wait()
	if n := src.reads.Load(); n > 3 {
		t.Errorf("%d reads for 20 concurrent callers; they should share", n)
	}
	// A failed read is not kept: the next caller reads again.
	src.fail.Store(true)
	if _, err := f.Nodes(context.Background()); err == nil {
		t.Fatal("a failed read answered without an error")
	}
	src.fail.Store(false)
	if nodes, err := f.Nodes(context.Background()); err != nil || nodes[0].Revision != src.reads.Load() {
		t.Fatalf("after a failure: %v %v", nodes, err)
	}
}

// ctxNodes is slowNodes whose reads end when their context does, as a database's do.
type ctxNodes struct{ slowNodes }

func (s *ctxNodes) ListNodes(ctx context.Context) ([]store.Node, error) {
	n := s.reads.Add(1)
	select {
	case <-time.After(2 * time.Millisecond):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return []store.Node{{ID: "gw", Roles: []string{"gateway"}, Revision: n, Heartbeat: time.Now()}}, nil
}

// TestStoreFleetUnderLoad: many callers, a third of them giving up within a read's time (so
// that the read they lead is cut short and the callers sharing it must read again): every
// call ends, every answer is fresh, and a caller that does not give up gets one.
func TestStoreFleetUnderLoad(t *testing.T) {
	src := &ctxNodes{}
	f := api.StoreFleet(src)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 60 {
		wg.Go(func() {
			for i := range 30 {
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				quitter := (g+i)%3 == 0
				if quitter {
					ctx, cancel = context.WithTimeout(ctx, time.Duration(i%3)*time.Millisecond)
				}
				before := src.reads.Load()
				nodes, err := f.Nodes(ctx)
				cancel()
				switch {
				case err != nil && !quitter:
					t.Errorf("a caller that did not give up got %v", err)
				case err == nil && nodes[0].Revision <= before:
					t.Errorf("answered from read %d, which began before the call (reads then: %d)", nodes[0].Revision, before)
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("callers of the shared fleet read still waiting after 20 s")
	}
}
