// Package dialer connects the gateway to a destination it has decided on: "decide on the
// name, dial the address you checked".
//
// A client names a destination; a policy allows names; but a connection goes to an address.
// Between the two lies DNS, which a client (or whoever controls a zone) can point anywhere:
// at the gateway's own metadata endpoint, at a private network, at loopback (DNS
// rebinding). So the Dialer never dials what the client resolved, nor an address it did
// not judge. For a destination given by name it:
//
//  1. judges the name alone (policy.Set.Decide with no address) and stops there if that
//     denies, so a denied name is not even looked up;
//  2. resolves the name itself, A and AAAA, with egressd's one resolver (package resolve);
//  3. judges every address it got, as the connection it would be (the name, that address,
//     the port), and keeps the ones the policy allows;
//  4. dials the allowed addresses in order until one connects, within one timeout.
//
// Steps 1 to 3 are Plan, step 4 is Connect, and Dial does both. The check endpoint calls
// Plan with the same resolver, so what it answers is what Dial would do. When no address is
// allowed, the denial of the first one is the answer (not_public, say). An address that was
// not judged is never dialled. A destination given as an IP literal is judged and dialled as
// it is.
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

	"github.com/egressd/egressd/internal/dataplane/resolve"
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

// Dialer dials destinations that a policy allows. The zero value resolves the system's way
// (package resolve) and times out after 10 seconds. A Dialer is safe
// for concurrent use; do not change its fields once it is in use.
type Dialer struct {
	// Resolver looks names up; nil means a resolve.Resolver that resolves the system's way.
	Resolver Resolver
	// Timeout bounds a Dial as a whole, resolving included; 0 means 10 seconds.
	Timeout time.Duration
	// Control, if set, is called on each socket before it connects (as net.Dialer.Control):
	// the transparent gateway marks its own connections with it.
	Control func(network, address string, c syscall.RawConn) error

	defaultResolver resolve.Resolver
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

// Judged is one address that was judged, as the connection it would be, with its decision.
type Judged struct {
	Conn     policy.Conn
	Decision policy.Decision
}

// Plan is a destination judged before any connection: what Dial would dial, in order, and
// why. The check endpoint answers from a Plan and Dial connects one, so the two cannot
// disagree.
type Plan struct {
	// Target is the connection attempt as judged and Decision the decision on it: the first
	// address to dial and its decision when there is one, else the denial (of the name
	// alone, or of the first address resolved). On a resolver error they are the name's.
	Target   policy.Conn
	Decision policy.Decision
	// Addresses are the addresses the name resolved to, each judged, in the resolver's
	// order (at most 64); empty for an IP literal or a name denied as a name.
	Addresses []Judged
	// Resolve is the time spent looking the name up.
	Resolve time.Duration

	dial []Judged // what Connect tries: allowed outright first, then monitored
}

// Plan judges c with set: the name alone, then, if that passes, every address the name
// resolves to (judge, resolve, judge). c is a TCP connection attempt: Host (in
// policy.NormalizeName form) and Port, or IP and Port for an IP literal. An IP given
// together with a Host is ignored: the gateway resolves names itself.
//
// A name on a port that is not a web port is denied as a name (port_not_allowed) unless its
// addresses are inside allowed_cidrs: such a name is resolved only when the DNS filter
// would answer it (DecideQuery allows it, denied_domains included), so that a sandbox
// cannot make the gateway look up names that carry data out, and then every address is
// judged as usual (DESIGN §2.3: internal services by name).
//
// The error wraps ErrDenied when the policy denies, ErrNotFound or ErrNoAddress (of package
// resolve) when the name leads nowhere, and otherwise the resolver's error.
func (d *Dialer) Plan(ctx context.Context, set *policy.Effective, c policy.Conn) (Plan, error) {
	c.Transport = policy.TCP
	if c.Host == "" {
		c.IP = c.IP.Unmap().WithZone("") // the address Decide judges is the one dialled
		p := Plan{Target: c, Decision: set.Decide(c)}
		if !p.Decision.Allow {
			return p, denied(c, p.Decision)
		}
		p.dial = []Judged{{c, p.Decision}}
		return p, nil
	}

	c.IP = netip.Addr{}
	p := Plan{Target: c, Decision: set.Decide(c)}
	if !p.Decision.Allow && !resolvesForCIDRs(set, c, p.Decision) {
		return p, denied(c, p.Decision)
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout())
	defer cancel()
	start := time.Now()
	addrs, err := d.resolver().LookupNetIP(ctx, c.Host)
	p.Resolve = time.Since(start)
	if err != nil {
		return p, fmt.Errorf("dialer: %w", err)
	}
	if len(addrs) > maxJudged {
		addrs = addrs[:maxJudged]
	}
	// Addresses the policy allows outright go first, those a monitor layer would deny
	// after them; the resolver's order is kept within each group.
	var monitored []Judged
	var firstDenied *Judged
	for _, a := range addrs {
		t := c
		t.IP = a.Unmap()
		j := Judged{t, set.Decide(t)}
		p.Addresses = append(p.Addresses, j)
		switch {
		case !j.Decision.Allow:
			if firstDenied == nil {
				firstDenied = &p.Addresses[len(p.Addresses)-1]
			}
		case j.Decision.WouldDeny:
			monitored = append(monitored, j)
		default:
			p.dial = append(p.dial, j)
		}
	}
	p.dial = append(p.dial, monitored...)
	if len(p.dial) == 0 {
		p.Target, p.Decision = firstDenied.Conn, firstDenied.Decision
		return p, denied(p.Target, p.Decision)
	}
	p.Target, p.Decision = p.dial[0].Conn, p.dial[0].Decision
	return p, nil
}

// resolvesForCIDRs reports whether a name denied as a name may still lead into
// allowed_cidrs: it was denied only for its port, every layer allows some range, and the DNS
// filter would answer the name. (AllowedPrefixes allocates: this path is the rare one.)
func resolvesForCIDRs(set *policy.Effective, c policy.Conn, byName policy.Decision) bool {
	return byName.Reason == policy.ReasonPort &&
		len(set.AllowedPrefixes()) > 0 &&
		set.DecideQuery(policy.Query{Name: c.Host, Type: policy.QTypeA}).Allow
}

// Dial plans c (see Plan) and connects to the first address that the plan allows and that
// answers, within the Dialer's timeout.
func (d *Dialer) Dial(ctx context.Context, set *policy.Effective, c policy.Conn) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout())
	defer cancel()
	p, err := d.Plan(ctx, set, c)
	res := Result{Target: p.Target, Decision: p.Decision, Resolve: p.Resolve}
	if err != nil {
		return res, err
	}
	return d.Connect(ctx, p)
}

// Connect tries the plan's allowed addresses in order until one connects. An address that
// the plan did not allow is never dialled.
func (d *Dialer) Connect(ctx context.Context, p Plan) (Result, error) {
	res := Result{Target: p.Target, Decision: p.Decision, Resolve: p.Resolve}
	if len(p.dial) == 0 {
		return res, denied(p.Target, p.Decision)
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout())
	defer cancel()
	return d.connect(ctx, res, p.dial)
}

func (d *Dialer) timeout() time.Duration {
	if d.Timeout > 0 {
		return d.Timeout
	}
	return defaultTimeout
}

// connect tries the candidates in order, sharing what is left of ctx's time among them as
// net.Dialer does, so that one black-holed address cannot use up the whole timeout.
func (d *Dialer) connect(ctx context.Context, res Result, cands []Judged) (Result, error) {
	if len(cands) > maxAttempts {
		cands = cands[:maxAttempts]
	}
	start := time.Now()
	var lastErr error
	for i, cand := range cands {
		res.Target, res.Decision = cand.Conn, cand.Decision
		actx := ctx
		if dl, ok := ctx.Deadline(); ok && i < len(cands)-1 {
			share := time.Until(dl) / time.Duration(len(cands)-i)
			var cancel context.CancelFunc
			actx, cancel = context.WithTimeout(ctx, share)
			defer cancel()
		}
		addr := net.JoinHostPort(cand.Conn.IP.String(), strconv.Itoa(int(cand.Conn.Port)))
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

// Resolver looks up the addresses of a host name; *resolve.Resolver is the one egressd uses.
type Resolver interface {
	LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error)
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
