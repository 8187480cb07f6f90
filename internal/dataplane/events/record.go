// Package events records every decision egressd takes (DESIGN §6): the explicit proxy, the
// transparent proxy and the DNS filter hand each one to a Sink, and the Hub fans it out to a
// bounded in-memory buffer (GET /v1/egress/events, with follow=true streaming), an optional
// event ring on disk that the buffer is loaded from after a restart (disk.go), an optional
// JSON-lines audit file and Prometheus metrics.
package events

import (
	"time"

	"github.com/egressd/egressd/policy"
)

// Kinds of record.
//
// The Hub keeps egressd_connections_active from the records alone, so a data-path component
// keeps one contract: every KindConnect record with Decision "allow" is followed, once that
// connection ends for whatever reason (a failed dial included), by exactly one KindClose
// record, and KindClose is sent for nothing else.
const (
	KindConnect = "connect" // a tunnel or connection was decided (CONNECT, TLS by SNI, a TCP flow)
	KindRequest = "request" // one plain-HTTP request on a kept-alive connection was decided
	KindDNS     = "dns"     // a DNS query was decided
	KindClose   = "close"   // an allowed connection ended: bytes each way and duration
)

// Kinds lists every kind, for validating filters and bounding metric labels: a new kind goes
// here too.
var Kinds = []string{KindConnect, KindRequest, KindDNS, KindClose}

// Decisions.
const (
	Allow = "allow"
	Deny  = "deny"
)

// Record is one decision or one closed connection. The JSON names are the wire format of
// the events API and the audit file.
type Record struct {
	Seq       uint64        `json:"seq"` // set by the Hub: increasing, for resuming a stream
	Time      time.Time     `json:"time"`
	Kind      string        `json:"kind"`
	Tenant    string        `json:"tenant"`
	VMID      string        `json:"vm_id,omitempty"`
	SessionID string        `json:"session_id,omitempty"`
	Decision  string        `json:"decision"` // "allow" or "deny"
	WouldDeny bool          `json:"would_deny,omitempty"`
	Reason    policy.Reason `json:"reason,omitempty"`
	// Message is the Reason's sentence for people.
	Message   string `json:"message,omitempty"`
	Rule      string `json:"rule,omitempty"`
	Layer     string `json:"layer,omitempty"`
	Mode      string `json:"mode,omitempty"`      // "enforce" or "monitor": the mode that decided
	Transport string `json:"transport,omitempty"` // "tcp", "udp", "icmp"
	Host      string `json:"host,omitempty"`
	IP        string `json:"ip,omitempty"`
	Port      int    `json:"port,omitempty"`
	QType     string `json:"qtype,omitempty"` // DNS only
	// For KindClose: bytes from the sandbox to the destination and back, and how long the
	// connection lived. CloseReason says why it ended ("eof", "reset", "policy", "session ended",
	// "idle", "error").
	BytesUp     int64   `json:"bytes_up,omitempty"`
	BytesDown   int64   `json:"bytes_down,omitempty"`
	DurationMS  float64 `json:"duration_ms,omitempty"`
	CloseReason string  `json:"close_reason,omitempty"`
	// DialMS is how long the dial to the destination took (allowed connect records).
	DialMS float64 `json:"dial_ms,omitempty"`
	// A request decided inside an intercepted connection (DESIGN §2.7): its method, its
	// decided path (never the query), the status sent to the sandbox, and the names of the
	// secrets applied to it (or, on secret_not_for_host, refused). Never a secret's value
	// nor any header value.
	Method  string   `json:"method,omitempty"`
	Path    string   `json:"path,omitempty"`
	Status  int      `json:"status,omitempty"`
	Secrets []string `json:"secrets,omitempty"`
	// Via is "fast_path" for a connection that the kernel forwards after the gateway
	// verified its ClientHello from its packets (DESIGN §4); empty for the proxies'.
	Via string `json:"via,omitempty"`
}

// Source is whom a record is about: the sandbox a connection or query came from. SessionID
// is empty in transparent mode, where the gateway sees only the VM.
type Source struct {
	Tenant, VMID, SessionID string
}

// Decided is the record of one decision d on c from src: the one builder of decision
// records for every part of the data plane (the proxies and the DNS filter), so that each
// record says the same things the same way. The mode is the decision's own (enforce for a
// decision without one: the gateway's own refusals).
func Decided(kind string, src Source, c policy.Conn, d policy.Decision) Record {
	r := about(kind, src, c)
	r.Decision = Deny
	if d.Allow {
		r.Decision = Allow
	}
	r.WouldDeny = d.WouldDeny
	r.Reason, r.Message, r.Rule = d.Reason, d.Reason.Message(), d.Rule
	r.Layer, r.Mode = string(d.Layer), string(d.Mode)
	if r.Mode == "" {
		r.Mode = string(policy.Enforce)
	}
	return r
}

// Closed is the KindClose record of a connection to c that a KindConnect record allowed.
func Closed(src Source, c policy.Conn, up, down int64, lived time.Duration, reason string) Record {
	r := about(KindClose, src, c)
	r.Decision = Allow
	r.BytesUp, r.BytesDown, r.DurationMS, r.CloseReason = up, down, Millis(lived), reason
	return r
}

// about is what every record says of where a connection came from and went to.
func about(kind string, src Source, c policy.Conn) Record {
	r := Record{
		Time:      time.Now(),
		Kind:      kind,
		Tenant:    src.Tenant,
		VMID:      src.VMID,
		SessionID: src.SessionID,
		Transport: string(c.Transport),
		Host:      c.Host,
		Port:      int(c.Port),
	}
	if r.Transport == "" {
		r.Transport = string(policy.TCP)
	}
	if c.IP.IsValid() {
		r.IP = c.IP.String()
	}
	return r
}

// Millis is a duration in milliseconds, to the microsecond, as records carry durations.
func Millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Refusal is the sentence that tells a person why d denied: the reason's message, the rule,
// and the layer whose policy denied, e.g. "the host is not allowed (not in allowed_domains)
// by the session policy". The proxies' refusals and the DNS filter's Extended DNS Errors
// both say it this way.
func Refusal(d policy.Decision) string {
	s := d.Reason.Message()
	if d.Rule != "" {
		s += " (" + d.Rule + ")"
	}
	if d.Layer != "" && d.Layer != policy.LayerHard {
		s += " by the " + string(d.Layer) + " policy"
	}
	return s
}

// Sink takes records. Record must not block the data path: a slow consumer loses records
// (and the loss is counted), the connection never waits.
type Sink interface {
	Record(r Record)
}

// Discard is a Sink that drops everything: the zero value of a data-path component's sink.
var Discard Sink = discard{}

type discard struct{}

func (discard) Record(Record) {}
