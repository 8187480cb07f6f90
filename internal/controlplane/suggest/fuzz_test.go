package suggest

import (
	"reflect"
	"testing"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// FuzzSuggest: records are data from the gateway and the ring on disk; whatever they hold
// (names that are no names, unknown reasons and layers, any port), a suggestion is computed
// without error, its merged policy is valid and normal, every not-allowable group explains
// itself, and nothing is counted more often than it was read.
func FuzzSuggest(f *testing.F) {
	f.Add("a.example.test", uint16(443), "https_off", "session", "connect", false, "b.example.test", uint16(22))
	f.Add("c.d.x.test", uint16(5432), "port_not_allowed", "session", "connect", true, "e.x.test", uint16(5432))
	f.Add("name.test", uint16(0), "name_not_allowed", "default", "dns", false, "", uint16(0))
	f.Add("", uint16(80), "hard_deny", "hard", "connect", false, "192.0.2.1", uint16(80))
	f.Add("EXAMPLE.com.", uint16(443), "host_not_allowed", "vm", "request", true, "*.bad", uint16(65535))
	f.Fuzz(func(t *testing.T, host string, port uint16, reason, layer, kind string, would bool, host2 string, port2 uint16) {
		recs := []events.Record{
			{Kind: kind, Decision: events.Deny, Layer: layer, Reason: policy.Reason(reason), Host: host, Port: int(port), Transport: "tcp"},
			{Kind: events.KindConnect, Decision: events.Allow, WouldDeny: would, Layer: "session", Reason: policy.ReasonPort, Host: host2, Port: int(port2)},
			{Kind: events.KindDNS, Decision: events.Deny, Layer: "session", Reason: policy.ReasonNameNotListed, Host: host2},
			{Kind: kind, Decision: events.Deny, Layer: "session", Reason: policy.Reason(reason), Host: host, IP: host2, Port: int(port2)},
		}
		base, _, err := policy.Policy{AllowedDomains: []string{"keep.test"}}.Normalize()
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range []Input{
			{Scope: client.ScopeSession, ID: "s", Policy: &base, Records: recs},
			{Scope: client.ScopeVM, ID: "v", Records: recs},
		} {
			got, err := Suggest(nil, in)
			if err != nil {
				t.Fatalf("%+v: %v", recs, err)
			}
			if got.Policy == nil {
				t.Fatal("no merged policy")
			}
			again, _, err := got.Policy.Normalize()
			if err != nil || !reflect.DeepEqual(again, *got.Policy) {
				t.Fatalf("merged policy %+v is not normal: %v", got.Policy, err)
			}
			counted := got.AlreadyAllowed
			for _, n := range got.NotAllowable {
				if n.Explanation == "" || n.Covers <= 0 {
					t.Fatalf("not allowable without explanation: %+v", n)
				}
				counted += n.Covers
			}
			for _, o := range got.OtherLayers {
				counted += o.Covers
			}
			if counted > got.Decisions {
				t.Fatalf("%d counted of %d read: %+v", counted, got.Decisions, got)
			}
		}
	})
}
