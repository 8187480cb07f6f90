// Package events records every decision egressd takes (DESIGN §6): the explicit proxy, the
// transparent proxy and the DNS filter hand each one to a Sink, and the Hub fans it out to a
// bounded in-memory buffer (GET /v1/egress/events, with follow=true streaming), an optional
// JSON-lines audit file and Prometheus metrics.
package events

import "time"

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
	Seq       uint64    `json:"seq"` // set by the Hub: increasing, for resuming a stream
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	Tenant    string    `json:"tenant"`
	VMID      string    `json:"vm_id,omitempty"`
	SessionID string    `json:"session_id,omitempty"`
	Decision  string    `json:"decision"` // "allow" or "deny"
	WouldDeny bool      `json:"would_deny,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Rule      string    `json:"rule,omitempty"`
	Layer     string    `json:"layer,omitempty"`
	Mode      string    `json:"mode,omitempty"`      // "enforce" or "monitor": the mode that decided
	Transport string    `json:"transport,omitempty"` // "tcp", "udp", "icmp"
	Host      string    `json:"host,omitempty"`
	IP        string    `json:"ip,omitempty"`
	Port      int       `json:"port,omitempty"`
	QType     string    `json:"qtype,omitempty"` // DNS only
	// For KindClose: bytes from the sandbox to the destination and back, and how long the
	// connection lived. CloseReason says why it ended ("eof", "reset", "policy", "session ended",
	// "idle", "error").
	BytesUp     int64   `json:"bytes_up,omitempty"`
	BytesDown   int64   `json:"bytes_down,omitempty"`
	DurationMS  float64 `json:"duration_ms,omitempty"`
	CloseReason string  `json:"close_reason,omitempty"`
	// DialMS is how long the dial to the destination took (allowed connect records).
	DialMS float64 `json:"dial_ms,omitempty"`
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
