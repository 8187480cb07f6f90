package api_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/api"
	"github.com/egressd/egressd/internal/controlplane/store"
)

// TestRacingCreatesAndDeletes: two API nodes on one store get, at once, a POST and a DELETE
// each of the same vm_id (with a policy: creating, then pending). Each answer is one
// the API documents, never a 500 (a DELETE between the two POSTs lets both create it); and
// when the dust settles
// every VM is ready or gone, none stuck creating, pending or deleting, nor failed.
func TestRacingCreatesAndDeletes(t *testing.T) {
	base, key := bootstrappedStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	(&fakeNode{id: "gw-a"}).run(ctx, t, base, 0)
	var clients [2]*apiClient
	for i := range clients {
		srv := httptest.NewServer(api.New(api.Config{
			Store:       base,
			Fleet:       api.StoreFleet(base),
			NetworkWait: 2 * time.Second,
			Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
			Status:      api.StatusConfig{NodeID: fmt.Sprintf("api-%d", i)},
		}))
		t.Cleanup(srv.Close)
		clients[i] = &apiClient{t: t, base: srv.URL, key: key}
	}
	const rounds = 30
	var wg sync.WaitGroup
	for i := range rounds {
		id := fmt.Sprintf("v%d", i)
		body := map[string]any{"vm_id": id, "network": netns(nil), "egress_policy": map[string]any{"allow_https": true}}
		for _, c := range clients {
			wg.Go(func() {
				r := c.do("POST", "/v1/vms", body)
				switch r.status {
				case http.StatusCreated, http.StatusAccepted, http.StatusConflict:
				default:
					t.Errorf("POST %s: %d %s", id, r.status, r.raw)
				}
			})
		}
		for j, c := range clients { // two DELETEs, one on each API node
			wg.Go(func() {
				time.Sleep(time.Duration((i+3*j)%7) * time.Millisecond) // at a different step each time
				r := c.do("DELETE", "/v1/vms/"+id, nil)
				switch r.status {
				case http.StatusNoContent, http.StatusAccepted, http.StatusNotFound:
				default:
					t.Errorf("DELETE %s: %d %s", id, r.status, r.raw)
				}
			})
		}
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		vms, err := base.AllVMs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var unsettled []string
		for _, vm := range vms {
			if s := vm.Network.State; s != store.NetworkReady {
				unsettled = append(unsettled, vm.ID+" "+s)
			}
		}
		if len(unsettled) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("VMs neither ready nor gone 5 s after the requests: %v", unsettled)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// successorStore is the store as a POST of VM "v" sees it while another client deletes v
// and creates it again: the first time that POST finds v gone, a successor of the same ID
// is stored, ready, before the POST reads again.
type successorStore struct {
	store.Store
	fired atomic.Bool
}

func (s *successorStore) GetVM(ctx context.Context, tenant, id string) (store.VM, error) {
	vm, err := s.Store.GetVM(ctx, tenant, id)
	if errors.Is(err, store.ErrNotFound) && id == "v" && s.fired.CompareAndSwap(false, true) {
		if _, cerr := s.Store.CreateVM(ctx, store.VM{Tenant: tenant, ID: id, Network: store.Network{
			Mode: "netns", Node: "gw-a", State: store.NetworkReady, Netns: "egressd-v2", Address: "100.96.0.6"}}); cerr != nil {
			panic(cerr)
		}
	}
	return vm, err
}

// TestAnAnswerNeverRemovesASuccessor: a POST whose VM was deleted while it waited answers
// 409, and takes back nothing: least of all the VM of the same ID that another client
// created meanwhile.
func TestAnAnswerNeverRemovesASuccessor(t *testing.T) {
	base, key := bootstrappedStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	a := &fakeNode{id: "gw-a"}
	a.run(ctx, t, base, 0)
	a.pause(true)
	srv := httptest.NewServer(api.New(api.Config{
		Store:       &successorStore{Store: base},
		Fleet:       api.StoreFleet(base),
		NetworkWait: 5 * time.Second,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Status:      api.StatusConfig{NodeID: "api-1"},
	}))
	t.Cleanup(srv.Close)
	c := &apiClient{t: t, base: srv.URL, key: key}
	answer := make(chan response, 1)
	go func() { answer <- c.do("POST", "/v1/vms", map[string]any{"vm_id": "v", "network": netns(nil)}) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if vm, err := base.GetVM(ctx, "default", "v"); err == nil && vm.Network.State == store.NetworkPending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the VM was never pending")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Deleted, and its node done with it, as a DELETE from another client does.
	if err := base.DeleteVM(ctx, "default", "v"); err != nil {
		t.Fatal(err)
	}
	(<-answer).mustError(t, http.StatusConflict, "conflict", "vm_id")
	vm, err := base.GetVM(ctx, "default", "v")
	if err != nil || vm.Network.State != store.NetworkReady || vm.Network.Netns != "egressd-v2" {
		t.Fatalf("the successor VM after the first POST answered: %+v, %v; want it untouched, ready", vm.Network, err)
	}
}

// TestADeleteEndsWhenItsVMIsGone: a DELETE waits for its VM to go, not for the ID to be
// free: a VM of the same ID created meanwhile by another client is not the one it waits on.
func TestADeleteEndsWhenItsVMIsGone(t *testing.T) {
	a := &fakeNode{id: "gw-a"}
	l := newPlacementLab(t, a)
	l.create("v", netns(nil)).must(t, http.StatusCreated)
	a.pause(true)
	answer := make(chan response, 1)
	go func() { answer <- l.c.do("DELETE", "/v1/vms/v", nil) }()
	ctx := context.Background()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if vm, err := l.st.GetVM(ctx, "default", "v"); err == nil && vm.Network.State == store.NetworkDeleting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the VM was never deleting")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Its node removes it, and another client creates v again, at once.
	if err := l.st.DeleteVM(ctx, "default", "v"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.st.CreateVM(ctx, store.VM{Tenant: "default", ID: "v", Network: store.Network{Mode: "netns", Node: "gw-a", State: store.NetworkPending}}); err != nil {
		t.Fatal(err)
	}
	if r := <-answer; r.status != http.StatusNoContent {
		t.Errorf("DELETE: %d %s, want 204: its VM is gone", r.status, r.raw)
	}
}
