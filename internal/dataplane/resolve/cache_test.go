package resolve

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"testing"

	"github.com/egressd/egressd/internal/testkit/testnet"
)

func TestCacheTTLAndTruncation(t *testing.T) {
	z := testnet.StartZone(t)
	z.Add(t, "cached.test. 60 IN A 127.0.0.43", "cached.test. 60 IN AAAA 2001:db8::1", "zero.test. 0 IN A 127.0.0.43")
	r := &Resolver{Upstream: z.Addr}
	want := []netip.Addr{netip.MustParseAddr("127.0.0.43"), netip.MustParseAddr("2001:db8::1")}
	for i := range 3 {
		got, err := r.LookupNetIP(context.Background(), "cached.test")
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("lookup %d: %v %v, want %v (IPv4 first)", i, got, err, want)
		}
	}
	if n := z.Queries.Load(); n != 2 {
		t.Errorf("%d queries for three lookups, want 2 (A and AAAA, then the cache)", n)
	}
	z.Queries.Store(0)
	for range 2 {
		if _, err := r.LookupNetIP(context.Background(), "zero.test"); err != nil {
			t.Fatal(err)
		}
	}
	if n := z.Queries.Load(); n != 3 { // A twice (TTL 0), the empty AAAA once
		t.Errorf("TTL 0: %d queries, want 3", n)
	}
	z.TruncateUDP.Store(true)
	got, err := (&Resolver{Upstream: z.Addr}).LookupNetIP(context.Background(), "cached.test")
	if err != nil || len(got) != 2 {
		t.Fatalf("after truncation: %v %v, want the answer over TCP", got, err)
	}
}

func TestCacheBound(t *testing.T) {
	z := testnet.StartZone(t)
	r := &Resolver{Upstream: z.Addr, CacheSize: 8}
	for i := range 40 {
		name := "n" + strconv.Itoa(i) + ".test"
		z.Add(t, name+". 60 IN A 127.0.0.43")
		if _, err := r.LookupNetIP(context.Background(), name); err != nil {
			t.Fatal(err)
		}
	}
	r.cache.mu.Lock()
	n := len(r.cache.m)
	r.cache.mu.Unlock()
	if n > 8 {
		t.Errorf("cache holds %d entries, bound 8", n)
	}
}

func TestUpstreamDefaultPort(t *testing.T) {
	for in, want := range map[string]string{"127.0.0.1": "127.0.0.1:53", "127.0.0.1:5353": "127.0.0.1:5353", "::1": "[::1]:53", "[::1]": "[::1]:53"} {
		got, err := (&Resolver{Upstream: in}).serversFor()
		if err != nil || len(got) != 1 || got[0] != want {
			t.Errorf("Upstream %q: %v %v, want %q", in, got, err, want)
		}
	}
}
