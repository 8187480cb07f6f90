package events

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/policy"
)

// Metric names, for dashboards and alerts.
const (
	MetricDecisions          = "egressd_decisions_total"
	MetricWouldDeny          = "egressd_would_deny_total"
	MetricConnectionsActive  = "egressd_connections_active"
	MetricConnectionBytes    = "egressd_connection_bytes_total"
	MetricConnectionDuration = "egressd_connection_duration_seconds"
	MetricDialDuration       = "egressd_dial_duration_seconds"
	MetricEventsDropped      = "egressd_events_dropped_total"
	MetricRingRecords        = "egressd_events_ring_records"
	MetricRingBytes          = "egressd_events_ring_bytes"
)

// Values of the sink label of egressd_events_dropped_total.
const (
	SinkAudit      = "audit"      // the audit file's queue was full, or writing failed
	SinkSubscriber = "subscriber" // a follower of the events API read too slowly
	SinkRing       = "ring"       // the event ring's queue was full, writing failed, or a record was too large
)

// otherLabel replaces a label value outside its known set. Labels come only from fixed sets
// (kinds, decisions, the codes of policy.Reasons, layers), so a bug that put a host name in a
// reason cannot give Prometheus a new series per host.
const otherLabel = "other"

var (
	knownKinds     = setOf(Kinds...)
	knownDecisions = setOf(Allow, Deny)
	knownLayers    = setOf("", string(policy.LayerSession), string(policy.LayerVM), string(policy.LayerDefault), string(policy.LayerHard))
	knownReasons   = func() map[policy.Reason]bool {
		m := map[policy.Reason]bool{"": true}
		for _, r := range policy.Reasons() {
			m[r.Reason] = true
		}
		return m
	}()
)

func setOf(values ...string) map[string]bool {
	m := make(map[string]bool, len(values))
	for _, v := range values {
		m[v] = true
	}
	return m
}

func label[T ~string](known map[T]bool, v T) string {
	if known[v] {
		return string(v)
	}
	return otherLabel
}

type metrics struct {
	decisions         *prometheus.CounterVec
	wouldDeny         *prometheus.CounterVec
	active            prometheus.Gauge
	bytesUp, bytesDn  prometheus.Counter
	connDuration      prometheus.Histogram
	dialDuration      prometheus.Histogram
	dropped           *prometheus.CounterVec
	droppedAudit      prometheus.Counter
	droppedSubscriber prometheus.Counter
	droppedDisk       prometheus.Counter
	ring              atomic.Pointer[diskRing] // for the ring's gauges; nil without one
	collectors        []prometheus.Collector

	// counters caches the child of decisions for each label set: WithLabelValues validates
	// and hashes four strings on every call, a cache hit only hashes them.
	counters sync.Map // decisionLabels -> prometheus.Counter
}

type decisionLabels struct{ kind, decision, reason, layer string }

func newMetrics() *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricDecisions,
			Help: "Decisions taken by the gateway (connect, request and dns records), by kind, decision, reason and deciding layer.",
		}, []string{"kind", "decision", "reason", "layer"}),
		wouldDeny: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricWouldDeny,
			Help: "Connections and queries that a monitor-mode policy let through but would have denied, by kind and reason.",
		}, []string{"kind", "reason"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricConnectionsActive,
			Help: "Allowed connections open now: allowed connect records minus close records.",
		}),
		connDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    MetricConnectionDuration,
			Help:    "How long allowed connections lived, from close records.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10), // 10 ms .. 44 min
		}),
		dialDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    MetricDialDuration,
			Help:    "How long dialling the destination of an allowed connection took.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 3, 10), // 0.5 ms .. 10 s
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricEventsDropped,
			Help: "Decision records a consumer lost because it fell behind: sink is audit (the audit file), ring (the event ring on disk) or subscriber (a follower of the events API).",
		}, []string{"sink"}),
	}
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricConnectionBytes,
		Help: "Bytes relayed by allowed connections, from close records: up is sandbox to destination, down the way back.",
	}, []string{"direction"})
	m.bytesUp = bytes.WithLabelValues("up")
	m.bytesDn = bytes.WithLabelValues("down")
	m.droppedAudit = m.dropped.WithLabelValues(SinkAudit)
	m.droppedSubscriber = m.dropped.WithLabelValues(SinkSubscriber)
	m.droppedDisk = m.dropped.WithLabelValues(SinkRing)
	ringGauge := func(get func(*diskRing) int64) func() float64 {
		return func() float64 {
			if d := m.ring.Load(); d != nil {
				return float64(get(d))
			}
			return 0
		}
	}
	ringRecords := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: MetricRingRecords,
		Help: "Records held by the event ring on disk (--events-keep bounds it).",
	}, ringGauge(func(d *diskRing) int64 { return d.records.Load() }))
	ringBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: MetricRingBytes,
		Help: "Bytes of the event ring's files on disk (--events-keep-bytes bounds it).",
	}, ringGauge(func(d *diskRing) int64 { return d.bytes.Load() }))
	m.collectors = []prometheus.Collector{m.decisions, m.wouldDeny, m.active, bytes, m.connDuration, m.dialDuration, m.dropped, ringRecords, ringBytes}
	return m
}

// register adds the metrics to reg, all or none.
func (m *metrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors[:i] {
				reg.Unregister(done)
			}
			var already prometheus.AlreadyRegisteredError
			if errors.As(err, &already) {
				return fmt.Errorf("%w (one Hub per registry)", err)
			}
			return err
		}
	}
	return nil
}

// observe counts one record. It runs on the data path, outside the Hub's lock.
func (m *metrics) observe(r *Record) {
	switch r.Kind {
	case KindClose:
		m.active.Dec()
		if r.BytesUp > 0 {
			m.bytesUp.Add(float64(r.BytesUp))
		}
		if r.BytesDown > 0 {
			m.bytesDn.Add(float64(r.BytesDown))
		}
		m.connDuration.Observe(r.DurationMS / 1e3)
		return
	case KindConnect:
		if r.Decision == Allow {
			m.active.Inc()
			if r.DialMS > 0 {
				m.dialDuration.Observe(r.DialMS / 1e3)
			}
		}
	}
	l := decisionLabels{label(knownKinds, r.Kind), label(knownDecisions, r.Decision), label(knownReasons, r.Reason), label(knownLayers, r.Layer)}
	c, ok := m.counters.Load(l)
	if !ok {
		c, _ = m.counters.LoadOrStore(l, m.decisions.WithLabelValues(l.kind, l.decision, l.reason, l.layer))
	}
	c.(prometheus.Counter).Inc()
	if r.WouldDeny {
		m.wouldDeny.WithLabelValues(l.kind, l.reason).Inc()
	}
}
