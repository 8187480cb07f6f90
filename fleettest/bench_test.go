package fleettest

import (
	"slices"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
)

// BenchmarkPropagation measures how long a policy written through node A's API takes, from
// A's answer, to be enforced by node B's proxy, on one PostgreSQL database. Each op flips the
// session's policy between two servers and polls B (every 2 ms, one proxied request to each
// server per poll) until it follows. Run it with a fixed count, e.g.
// -bench Propagation -benchtime 50x; it reports the median and the 99th percentile.
func BenchmarkPropagation(b *testing.B) {
	db := pgtest.NewDatabase(b)
	one, two := startSite(b, webA), startSite(b, webB)
	a := startNode(b, "a", "--store", db, "--role", "all", "--public-cidrs", publicLab)
	gw := startNode(b, "b", "--store", db, "--role", "gateway", "--public-cidrs", publicLab)
	api, err := client.New(a.URL, a.AdminKey)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := api.CreateVM(ctx(b), client.CreateVMRequest{VMID: "vm-1"}); err != nil {
		b.Fatal(err)
	}
	s := newSession(b, api, "vm-1")
	setPolicy(b, api, s.id, only(webB))
	waitFor(b, patience, "B to enforce the first policy", func() bool { return s.enforces(gw.ProxyAddr, two, one) })

	var delays []time.Duration
	for i := 0; b.Loop(); i++ {
		allowed, denied, ip := one, two, webA
		if i%2 == 1 {
			allowed, denied, ip = two, one, webB
		}
		setPolicy(b, api, s.id, only(ip))
		delays = append(delays, waitFor(b, patience, "B to follow", func() bool { return s.enforces(gw.ProxyAddr, allowed, denied) }))
	}
	slices.Sort(delays)
	b.ReportMetric(ms(delays[len(delays)/2]), "p50-ms")
	b.ReportMetric(ms(delays[min(len(delays)-1, len(delays)*99/100)]), "p99-ms")
	b.ReportMetric(ms(delays[len(delays)-1]), "max-ms")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
