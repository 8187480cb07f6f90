package fastpath

import (
	"errors"

	"github.com/egressd/egressd/internal/dataplane/sni"
)

// Why a flow is refused. Every Hello.Err wraps one of these (or an error of sni.ServerName)
// with the detail, worded for the denial record.
var (
	ErrMalformed       = errors.New("malformed packet")
	ErrChecksum        = errors.New("bad checksum")
	ErrFragment        = errors.New("IP fragment")
	ErrFastOpen        = errors.New("data on the SYN (TCP Fast Open)")
	ErrSecondSYN       = errors.New("second SYN on a flow")
	ErrUnknownFlow     = errors.New("data on a flow whose SYN was not seen")
	ErrUrgent          = errors.New("urgent data")
	ErrOption          = errors.New("IP or TCP option the verifier does not pass")
	ErrTTL             = errors.New("TTL lower than the SYN's")
	ErrAck             = errors.New("acknowledgement number the server would not take")
	ErrTimestamp       = errors.New("TCP timestamp older than one already sent")
	ErrOverlap         = errors.New("segments disagree")
	ErrBeyondHello     = sni.ErrBeyondHello
	ErrTooLarge        = sni.ErrTooLarge
	ErrTooManySegments = errors.New("ClientHello in too many segments")
	ErrTimeout         = errors.New("ClientHello not complete in time")
	ErrLimit           = errors.New("too many flows or bytes held")
	ErrNotTLS          = sni.ErrNotTLS
	ErrFIN             = errors.New("FIN before the ClientHello was judged")
	ErrNoServerName    = sni.ErrNoServerName
	errDenied          = errors.New("denied by policy")
)

// kinds names each refusal kind for Stats, in the order errors.Is tries them.
var kinds = []struct {
	err  error
	name string
}{
	{ErrChecksum, "checksum"}, {ErrFragment, "fragment"}, {ErrFastOpen, "fast_open"},
	{ErrSecondSYN, "second_syn"}, {ErrUnknownFlow, "unknown_flow"}, {ErrUrgent, "urgent"},
	{ErrOption, "option"}, {ErrTTL, "ttl"}, {ErrAck, "ack"}, {ErrTimestamp, "timestamp"},
	{ErrOverlap, "overlap"}, {ErrBeyondHello, "beyond_hello"}, {ErrTooLarge, "too_large"},
	{ErrTooManySegments, "too_many_segments"}, {ErrTimeout, "timeout"}, {ErrLimit, "limit"},
	{ErrNotTLS, "not_tls"}, {ErrFIN, "fin"}, {ErrMalformed, "malformed"},
	{sni.ErrNoServerName, "no_server_name"}, {sni.ErrMalformed, "malformed_hello"},
	{errDenied, "denied"},
}

// kindOf is the Stats name of a refusal.
func kindOf(err error) string {
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return "other"
}
