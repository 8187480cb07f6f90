package events_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// gather returns the value of the series of metric name whose labels include labelPairs
// (name, value, name, value...): a counter's or gauge's value, a histogram's sample count.
// A series that does not exist reads as 0.
func gather(t testing.TB, reg *prometheus.Registry, name string, labelPairs ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() != name {
			continue
		}
	series:
		for _, m := range fam.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labelPairs); i += 2 {
				if have[labelPairs[i]] != labelPairs[i+1] {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

// histogramSum is the sum of a histogram's samples.
func histogramSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() == name && len(fam.GetMetric()) == 1 {
			return fam.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	return 0
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHub(t, events.HubConfig{Registerer: reg})

	allow := events.Record{Kind: events.KindConnect, Tenant: "a", Decision: events.Allow, Reason: policy.ReasonAllowHTTPS, Layer: "session", Host: "a.test", Port: 443, DialMS: 12}
	h.Record(allow)
	h.Record(allow)
	h.Record(deny("a", "s", "b.test"))
	h.Record(events.Record{Kind: events.KindDNS, Tenant: "a", Decision: events.Allow, WouldDeny: true, Reason: policy.ReasonNameNotListed, Layer: "vm", Host: "c.test"})
	h.Record(events.Record{Kind: events.KindClose, Tenant: "a", Decision: events.Allow, BytesUp: 100, BytesDown: 2000, DurationMS: 1500, CloseReason: "eof"})
	// A reason outside the fixed set (here a host name, which a bug could put there) is
	// counted as "other": a label never takes an unbounded value.
	h.Record(events.Record{Kind: events.KindConnect, Tenant: "a", Decision: events.Deny, Reason: "evil.example.com", Layer: "weird"})
	// A code of the data plane's own, from the one list, keeps its own label; a sentence does not.
	h.Record(events.Record{Kind: events.KindRequest, Tenant: "a", Decision: events.Deny, Reason: policy.ReasonBadRequest})
	h.Record(events.Record{Kind: events.KindRequest, Tenant: "a", Decision: events.Deny, Reason: "bad request"})

	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{events.MetricDecisions, []string{"kind", "connect", "decision", "allow", "reason", string(policy.ReasonAllowHTTPS), "layer", "session"}, 2},
		{events.MetricDecisions, []string{"kind", "connect", "decision", "deny", "reason", string(policy.ReasonHostNotListed), "layer", "session"}, 1},
		{events.MetricDecisions, []string{"kind", "dns", "decision", "allow", "reason", string(policy.ReasonNameNotListed), "layer", "vm"}, 1},
		{events.MetricDecisions, []string{"kind", "connect", "decision", "deny", "reason", "other", "layer", "other"}, 1},
		{events.MetricDecisions, []string{"kind", "request", "decision", "deny", "reason", string(policy.ReasonBadRequest), "layer", ""}, 1},
		{events.MetricDecisions, []string{"kind", "request", "decision", "deny", "reason", "other", "layer", ""}, 1},
		{events.MetricDecisions, []string{"kind", "close"}, 0}, // a close is not a decision
		{events.MetricWouldDeny, []string{"kind", "dns", "reason", string(policy.ReasonNameNotListed)}, 1},
		{events.MetricConnectionsActive, nil, 1}, // two allowed connects, one close
		{events.MetricConnectionBytes, []string{"direction", "up"}, 100},
		{events.MetricConnectionBytes, []string{"direction", "down"}, 2000},
		{events.MetricConnectionDuration, nil, 1},
		{events.MetricDialDuration, nil, 2},
		{events.MetricEventsDropped, []string{"sink", events.SinkAudit}, 0},
	} {
		if got := gather(t, reg, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if got := histogramSum(t, reg, events.MetricConnectionDuration); got != 1.5 {
		t.Errorf("connection duration sum %v s, want 1.5", got)
	}
	if got := histogramSum(t, reg, events.MetricDialDuration); got != 0.024 {
		t.Errorf("dial duration sum %v s, want 0.024", got)
	}

	// No label anywhere holds a host.
	families, _ := reg.Gather()
	for _, fam := range families {
		for _, m := range fam.GetMetric() {
			for _, lp := range m.GetLabel() {
				if strings.Contains(lp.GetValue(), ".test") || strings.Contains(lp.GetValue(), "example") {
					t.Errorf("%s has a host in label %s=%q", fam.GetName(), lp.GetName(), lp.GetValue())
				}
			}
		}
	}
}

func TestOneHubPerRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	newHub(t, events.HubConfig{Registerer: reg})
	if _, err := events.NewHub(events.HubConfig{Registerer: reg}); err == nil {
		t.Error("a second Hub on the same registry was accepted")
	}
}
