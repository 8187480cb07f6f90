package postgres

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
)

// TestUpdateVMNetworkAcrossStores: the read-modify-write of UpdateVMNetwork is atomic between
// processes too (an API replica retiring a VM while its node finishes it), not only between
// the goroutines of one: several stores on one database, each with its own pool, lose no
// update. What serialises them is the write lock that BeginWrite takes in the database.
func TestUpdateVMNetworkAcrossStores(t *testing.T) {
	t.Parallel()
	const (
		stores  = 4
		writers = 3 // per store
		rounds  = 4
	)
	url := pgtest.NewDatabase(t)
	var open []*Store
	for range stores {
		open = append(open, openTest(t, url))
	}
	ctx := t.Context()
	if _, err := open[0].CreateVM(ctx, store.VM{Tenant: "t", ID: "vm", Network: store.Network{Mode: "netns", Node: "gw", State: store.NetworkPending}}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, s := range open {
		for w := range writers {
			wg.Go(func() {
				for r := range rounds {
					_, err := s.UpdateVMNetwork(ctx, "t", "vm", func(n store.Network) (store.Network, error) {
						time.Sleep(time.Millisecond) // widen the window a racy store would lose updates in
						n.Error += fmt.Sprintf("[%d.%d.%d]", i, w, r)
						return n, nil
					})
					if err != nil {
						t.Errorf("store %d writer %d: %v", i, w, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	vm, err := open[stores-1].GetVM(ctx, "t", "vm")
	if err != nil {
		t.Fatal(err)
	}
	var lost []string
	for i := range stores {
		for w := range writers {
			for r := range rounds {
				if m := fmt.Sprintf("[%d.%d.%d]", i, w, r); strings.Count(vm.Network.Error, m) != 1 {
					lost = append(lost, m)
				}
			}
		}
	}
	if n := strings.Count(vm.Network.Error, "["); len(lost) > 0 || n != stores*writers*rounds {
		t.Errorf("%d markers, want %d; not once each: %v", n, stores*writers*rounds, lost)
	}
}
