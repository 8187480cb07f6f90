package view_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/view"
)

// BenchmarkLookup measures the data path's lookups in the view, which every new connection
// makes: a session by its proxy credentials (the explicit proxy; this includes hashing the
// token) and a VM by its sandbox's address (the transparent gateway). "parallel" runs them
// on every core at once, as the proxy's connections do: DESIGN §9 wants them lock-free.
func BenchmarkLookup(b *testing.B) {
	f := newFixture(b, view.Config{})
	addr := netip.MustParseAddr("100.96.0.6")
	if _, err := f.st.CreateVM(context.Background(), store.VM{Tenant: "t", ID: "net", Network: store.Network{Mode: "netns", Address: addr.String(), Gateway: "100.96.0.5"}}); err != nil {
		b.Fatal(err)
	}
	f.eventually("the VM", func() bool { return f.v.VMByAddr(addr) != nil })
	for _, bc := range []struct {
		name   string
		lookup func() bool
	}{
		{"Authenticate", func() bool { s, err := f.v.Authenticate("early", "early-token"); return err == nil && s != nil }},
		{"VMByAddr", func() bool { return f.v.VMByAddr(addr) != nil }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.Run("serial", func(b *testing.B) {
				for b.Loop() {
					if !bc.lookup() {
						b.Fatal("lookup failed")
					}
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if !bc.lookup() {
							b.Error("lookup failed")
							return
						}
					}
				})
			})
		})
	}
}
