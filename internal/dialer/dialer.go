// Package dialer connects the gateway to a destination it has decided on: "decide on the
// name, dial the address you checked".
//
// A client names a destination; a policy allows names; but a connection goes to an address.
// Between the two lies DNS, which a client (or whoever controls a zone) can point anywhere:
// at the gateway's own metadata endpoint, at a private network, at loopback (DNS
// rebinding). So the Dialer never dials what the client resolved, nor what the system's
// resolver would pick. For a destination given by name it:
//
//  1. judges the name alone (policy.Set.Decide with no address) and stops there if that
//     denies, so a denied name is not even looked up;
//  2. resolves the name itself, A and AAAA, with its own Resolver;
//  3. judges every address it got, as the connection it would be (the name, that address,
//     the port), and keeps the ones the policy allows;
//  4. dials the allowed addresses in order until one connects, within one timeout.
//
// When no address is allowed, the denial of the first one is the answer ("address is not
// public", say). An address that was not judged is never dialled. A destination given as
// an IP literal is judged and dialled as it is.
//
// Monitor mode needs nothing special: the policy answers Allow with WouldDeny, and such an
// address is dialled, after every address the policy allows outright. Hard denials
// (loopback, link-local, the gateway's own addresses) deny in every mode.
//
// The connection is returned as the raw *net.TCPConn, so that the relay can splice it.
package dialer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"github.com/egressd/egressd/policy"
)

// ErrDenied is wrapped by Dial's error when the policy denies the destination; the
// Result's Decision says why.
var ErrDenied = errors.New("denied by policy")

// Limits on one Dial.
const (
	defaultTimeout = 10 * time.Second
	maxJudged      = 64 // addresses judged; an answer with more is cut
	maxAttempts    = 4  // allowed addresses tried before giving up
)

// Dialer dials destinations that a policy allows. The zero value resolves with a DNS
// against the system's first nameserver and times out after 10 seconds. A Dialer is safe
// for concurrent use; do not change its fields once it is in use.
type Dialer struct {
	// Resolver looks names up; nil means a DNS with the default settings.
	Resolver Resolver
	// Timeout bounds a Dial as a whole, resolving included; 0 means 10 seconds.
	Timeout time.Duration
	// Control, if set, is called on each socket before it connects (as net.Dialer.Control):
	// the transparent gateway marks its own connections with it.
	Control func(network, address string, c syscall.RawConn) error

	defaultResolver DNS
}

// Result is what Dial did.
type Result struct {
	// Conn is the connection; nil unless Dial returned no error.
	Conn *net.TCPConn
	// Target is the connection attempt as judged: the caller's policy.Conn with IP set to
	// the address dialled, or on a denial to the address denied (no IP when the name alone
	// was denied, or nothing resolved).
	Target policy.Conn
	// Decision is the decision on Target: it allows when Conn is set. On an error other
	// than a denial it is the decision of the last address tried, or of the name.
	Decision policy.Decision
	// Resolve and Connect are the time spent looking the name up and connecting.
	Resolve, Connect time.Duration
}

// Latency is the time from the decision to a connection: resolving and connecting.
func (r Result) Latency() time.Duration { return r.Resolve + r.Connect }

// Dial judges c with set and connects to an address that set allows. c is a TCP
// connection attempt: Host (in policy.NormalizeName form) and Port, or IP and Port for an
// IP literal (with IPLiteral set). An IP given together with a Host is ignored: the
// gateway resolves names itself.
//
// The error wraps ErrDenied when the policy denies, ErrNotFound or ErrNoAddress when the
// name leads nowhere, and otherwise the resolver's or the last connect's error.
func (d *Dialer) Dial(ctx context.Context, set *policy.Set, c policy.Conn) (Result, error) {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c.Transport = policy.TCP

	if c.Host == "" {
		c.IP = c.IP.Unmap().WithZone("") // the address Decide judges is the one dialled
		res := Result{Target: c, Decision: set.Decide(c)}
		if !res.Decision.Allow {
			return res, denied(c, res.Decision)
		}
		return d.connect(ctx, res, []candidate{{c, res.Decision}})
	}

	c.IP = netip.Addr{}
	res := Result{Target: c, Decision: set.Decide(c)}
	if !res.Decision.Allow {
		return res, denied(c, res.Decision)
	}
	start := time.Now()
	addrs, err := d.resolver().LookupNetIP(ctx, c.Host)
	res.Resolve = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("dialer: %w", err)
	}
	if len(addrs) > maxJudged {
		addrs = addrs[:maxJudged]
	}
	// Addresses the policy allows outright go first, those a monitor layer would deny
	// after them; the resolver's order is kept within each group.
	var clean, monitored []candidate
	var firstDenied *candidate
	for _, a := range addrs {
		t := c
		t.IP = a.Unmap()
		dec := set.Decide(t)
		switch {
		case !dec.Allow:
			if firstDenied == nil {
				firstDenied = &candidate{t, dec}
			}
		case dec.WouldDeny:
			monitored = append(monitored, candidate{t, dec})
		default:
			clean = append(clean, candidate{t, dec})
		}
	}
	cands := append(clean, monitored...)
	if len(cands) == 0 {
		res.Target, res.Decision = firstDenied.conn, firstDenied.dec
		return res, denied(res.Target, res.Decision)
	}
	return d.connect(ctx, res, cands)
}

// candidate is an address that was judged, with its decision.
type candidate struct {
	conn policy.Conn
	dec  policy.Decision
}

// connect tries the candidates in order, sharing what is left of ctx's time among them as
// net.Dialer does, so that one black-holed address cannot use up the whole timeout.
func (d *Dialer) connect(ctx context.Context, res Result, cands []candidate) (Result, error) {
	if len(cands) > maxAttempts {
		cands = cands[:maxAttempts]
	}
	start := time.Now()
	var lastErr error
	for i, cand := range cands {
		res.Target, res.Decision = cand.conn, cand.dec
		actx := ctx
		if dl, ok := ctx.Deadline(); ok && i < len(cands)-1 {
			share := time.Until(dl) / time.Duration(len(cands)-i)
			var cancel context.CancelFunc
			actx, cancel = context.WithTimeout(ctx, share)
			defer cancel()
		}
		addr := net.JoinHostPort(cand.conn.IP.String(), strconv.Itoa(int(cand.conn.Port)))
		nd := net.Dialer{Control: d.Control}
		conn, err := nd.DialContext(actx, "tcp", addr)
		if err == nil {
			res.Conn = conn.(*net.TCPConn)
			res.Connect = time.Since(start)
			return res, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	res.Connect = time.Since(start)
	return res, fmt.Errorf("dialer: connecting to %s: %w", describe(res.Target), lastErr)
}

func (d *Dialer) resolver() Resolver {
	if d.Resolver != nil {
		return d.Resolver
	}
	return &d.defaultResolver
}

func denied(c policy.Conn, dec policy.Decision) error {
	return fmt.Errorf("dialer: %s: %s (%s): %w", describe(c), dec.Reason, dec.Rule, ErrDenied)
}

// describe names a destination for messages: "api.example.com:443 (192.0.2.1)".
func describe(c policy.Conn) string {
	port := strconv.Itoa(int(c.Port))
	switch {
	case c.Host == "":
		return net.JoinHostPort(c.IP.String(), port)
	case c.IP.IsValid():
		return net.JoinHostPort(c.Host, port) + " (" + c.IP.String() + ")"
	}
	return net.JoinHostPort(c.Host, port)
}
