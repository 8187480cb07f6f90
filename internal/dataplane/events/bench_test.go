package events_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/internal/dataplane/events"
)

// BenchmarkRecord measures the data path's cost of one decision record: sequence, ring slot,
// metrics, the audit queue and a follower that keeps up. The aim is well under a microsecond
// per record, with no blocking however the consumers behave. Records come faster than the
// audit writer encodes them, so some are dropped: drops/op says how many, since a record
// dropped costs less than one queued.
func BenchmarkRecord(b *testing.B) {
	for _, bc := range []struct {
		name  string
		audit bool
		sub   bool
		ring  bool
	}{
		{"bare", false, false, false},
		{"audit+follower", true, true, false},
		{"ring", false, false, true}, // egressd's default: the event ring on
	} {
		b.Run(bc.name, func(b *testing.B) {
			reg := prometheus.NewRegistry()
			cfg := events.HubConfig{Registerer: reg, Logger: quiet}
			if bc.audit {
				cfg.AuditPath = filepath.Join(b.TempDir(), "audit.jsonl")
			}
			if bc.ring {
				cfg.RingDir, cfg.RingKeep, cfg.RingKeepBytes = b.TempDir(), events.DefaultBuffer, 64<<20
			}
			h, err := events.NewHub(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			if bc.sub {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				sub, err := h.Subscribe(ctx, events.Filter{Tenant: "a"})
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					for range sub.Records {
					}
				}()
			}
			r := deny("a", "ses_0123456789abcdef", "registry.npm.test")
			b.ReportAllocs()
			drops := func() float64 {
				return gather(b, reg, events.MetricEventsDropped, "sink", events.SinkAudit) + gather(b, reg, events.MetricEventsDropped, "sink", events.SinkRing)
			}
			b.Run("serial", func(b *testing.B) {
				before := drops()
				for b.Loop() {
					h.Record(r)
				}
				b.ReportMetric((drops()-before)/float64(b.N), "drops/op")
			})
			b.Run("parallel", func(b *testing.B) {
				before := drops()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						h.Record(r)
					}
				})
				b.ReportMetric((drops()-before)/float64(b.N), "drops/op")
			})
		})
	}
}
