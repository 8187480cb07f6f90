package events_test

import (
	"net/netip"
	"testing"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// TestDecided: the one record builder takes the mode from the decision itself, not from
// would_deny: a monitor layer that allows is "monitor", a refusal of the gateway's own
// "enforce".
func TestDecided(t *testing.T) {
	src := events.Source{Tenant: "t", VMID: "vm", SessionID: "s"}
	c := policy.Conn{Host: "a.test", IP: netip.MustParseAddr("203.0.113.1"), Port: 443}
	tests := []struct {
		name     string
		d        policy.Decision
		decision string
		mode     string
	}{
		{"enforce allow", policy.Decision{Allow: true, Reason: policy.ReasonAllowHTTPS, Layer: policy.LayerSession, Mode: policy.Enforce}, events.Allow, "enforce"},
		{"monitor allow", policy.Decision{Allow: true, Reason: policy.ReasonAllowHTTPS, Layer: policy.LayerSession, Mode: policy.Monitor}, events.Allow, "monitor"},
		{"would deny", policy.Decision{Allow: true, WouldDeny: true, Reason: policy.ReasonHostNotListed, Layer: policy.LayerVM, Mode: policy.Monitor}, events.Allow, "monitor"},
		{"deny", policy.Decision{Reason: policy.ReasonHostNotListed, Layer: policy.LayerVM, Mode: policy.Enforce}, events.Deny, "enforce"},
		{"refused", policy.Refused(policy.ReasonBadRequest, "x"), events.Deny, "enforce"},
		{"no mode", policy.Decision{Reason: policy.ReasonTooMany, Layer: policy.LayerHard}, events.Deny, "enforce"},
	}
	for _, tt := range tests {
		r := events.Decided(events.KindConnect, src, c, tt.d)
		if r.Decision != tt.decision || r.Mode != tt.mode || r.Reason != tt.d.Reason || r.Message != tt.d.Reason.Message() ||
			r.Tenant != "t" || r.VMID != "vm" || r.SessionID != "s" || r.Host != "a.test" || r.IP != "203.0.113.1" || r.Port != 443 || r.Transport != "tcp" {
			t.Errorf("%s: %+v", tt.name, r)
		}
	}
}

func TestRefusal(t *testing.T) {
	d := policy.Decision{Reason: policy.ReasonHostNotListed, Rule: "not in allowed_domains", Layer: policy.LayerSession}
	if got, want := events.Refusal(d), "the host is not allowed (not in allowed_domains) by the session policy"; got != want {
		t.Errorf("Refusal = %q, want %q", got, want)
	}
	if got, want := events.Refusal(policy.Refused(policy.ReasonHardDeny, "loopback 127.0.0.0/8")), "the address is always denied (loopback 127.0.0.0/8)"; got != want {
		t.Errorf("Refusal = %q, want %q", got, want)
	}
}
