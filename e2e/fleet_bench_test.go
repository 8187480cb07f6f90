package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
)

// The fleet benchmarks run on the fleet lab (fleetlab_test.go), as root, with PostgreSQL:
//
//	go test -run '^$' -bench Fleet -benchtime 1x ./e2e/
//
// Each iteration is a batch of fleetBatch operations through the API-only node, and the
// figures are the median and 99th percentile of one operation, in milliseconds (ns/op is the
// whole batch and means little).
const fleetBatch = 100

// BenchmarkFleetVMCreate: POST /v1/vms of a netns VM placed automatically, from the request
// to the answer with the network ready (the API node waits for the owning gateway to build
// the namespace; a 202 is followed by polling until ready). Then every VM is deleted, which
// is measured the same way (until the node has removed the namespace and the row).
func BenchmarkFleetVMCreate(b *testing.B) {
	l := newFleetLab(b)
	var create, del []float64
	perNode := map[string]int{}
	accepted := 0
	for n := 0; b.Loop(); n++ {
		var ids []string
		for i := range fleetBatch {
			id := l.id(fmt.Sprintf("bench%d-%d", n, i))
			start := time.Now()
			code, vm, e := l.createVM(b, id, "", nil, nil)
			switch code {
			case http.StatusCreated:
			case http.StatusAccepted:
				accepted++
				if poll(30*time.Second, func() bool { return l.vmState(b, id) == "ready" }) < 0 {
					b.Fatalf("VM %s still %q 30 s after a 202", id, l.vmState(b, id))
				}
				vm.Network.Node = nodeOf(b, l, id)
			default:
				b.Fatalf("create %s: %d %+v", id, code, e)
			}
			create = append(create, msSince(start))
			perNode[vm.Network.Node]++
			ids = append(ids, id)
		}
		for _, id := range ids {
			start := time.Now()
			code, _, e := l.call(b, http.MethodDelete, "/v1/vms/"+id, nil)
			switch code {
			case http.StatusNoContent:
			case http.StatusAccepted:
				if poll(30*time.Second, func() bool { return l.vmState(b, id) == "gone" }) < 0 {
					b.Fatalf("VM %s still %q 30 s after a 202 to DELETE", id, l.vmState(b, id))
				}
			default:
				b.Fatalf("delete %s: %d %+v", id, code, e)
			}
			del = append(del, msSince(start))
			if nsExists(nsName(id)) {
				b.Fatalf("VM %s deleted, its namespace is still there", id)
			}
		}
	}
	b.ReportMetric(percentile(create, 50), "create-p50-ms")
	b.ReportMetric(percentile(create, 99), "create-p99-ms")
	b.ReportMetric(percentile(del, 50), "delete-p50-ms")
	b.ReportMetric(percentile(del, 99), "delete-p99-ms")
	b.Logf("fleet VM create→ready through the API node: p50 %.1f ms, p99 %.1f ms over %d creates (gw-a %d, gw-b %d, %d answered 202); delete: p50 %.1f ms, p99 %.1f ms",
		percentile(create, 50), percentile(create, 99), len(create), perNode["gw-a"], perNode["gw-b"], accepted, percentile(del, 50), percentile(del, 99))
}

// nodeOf is the node GET /v1/vms/{id} names.
func nodeOf(b *testing.B, l *fleetLab, id string) string {
	vm, err := l.admin.GetVM(context.Background(), id)
	if err != nil {
		b.Fatal(err)
	}
	return vm.Network.Node
}

// BenchmarkFleetPolicyWaitFleet: a VM policy write through the API node with ?wait=fleet,
// from the request to the answer, which comes once both gateways have applied it. The
// writes alternate between a VM on gw-a and one on gw-b, flipping which name each allows;
// every answer must list both nodes, and afterwards each sandbox obeys its last policy.
func BenchmarkFleetPolicyWaitFleet(b *testing.B) {
	l := newFleetLab(b)
	vms := []client.VM{
		l.readyVM(b, "wa", "gw-a", nil, httpsOnly("api.example.test"), "gw-a"),
		l.readyVM(b, "wb", "gw-b", nil, httpsOnly("api.example.test"), "gw-b"),
	}
	allow := []string{"api.example.test", "api.example.test"}
	var lat []float64
	for b.Loop() {
		for i := range fleetBatch {
			k := i % 2
			allow[k] = other(allow[k])
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			start := time.Now()
			p, err := l.fleet.SetVMPolicy(ctx, vms[k].VMID, *httpsOnly(allow[k]))
			took := msSince(start)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			if p.Enforcement == nil || !slices.Equal(slices.Sorted(slices.Values(p.EnforcedBy)), []string{"gw-a", "gw-b"}) || len(p.Lagging) > 0 {
				b.Fatalf("write %d: enforcement %+v, want enforced by gw-a and gw-b", i, p.Enforcement)
			}
			lat = append(lat, took)
		}
	}
	for k, vm := range vms {
		l.obeys(b, vm.Network.Netns, allow[k], other(allow[k]), "after the benchmark's writes")
	}
	b.ReportMetric(percentile(lat, 50), "p50-ms")
	b.ReportMetric(percentile(lat, 99), "p99-ms")
	b.Logf("fleet policy write → enforced on gw-a and gw-b (?wait=fleet) through the API node: p50 %.1f ms, p99 %.1f ms over %d writes",
		percentile(lat, 50), percentile(lat, 99), len(lat))
}

func msSince(t time.Time) float64 { return float64(time.Since(t)) / float64(time.Millisecond) }
