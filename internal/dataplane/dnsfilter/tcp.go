package dnsfilter

import (
	"context"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dataplane/events"
)

// TCPOpener is told of every answer with addresses, before the sandbox gets it: the
// transparent gateway opens the kernel, for that sandbox only, to the (address, port)
// pairs that allowed_tcp allows for the name (DESIGN §2.6), so that the connection the
// sandbox makes as soon as it has the answer is forwarded. OpenTCP returns once the kernel
// holds them; an error means the answer must not be given (see the package doc).
type TCPOpener interface {
	OpenTCP(ctx context.Context, a Answered) error
}

// Answered is one answer given to a sandbox.
type Answered struct {
	// Src is the sandbox's source address, which identifies it (VMs); Tenant and VMID are
	// what VMs said of it. One sandbox's answer never opens anything for another.
	Src          netip.Addr
	Tenant, VMID string
	// Name is the name asked, normalised: the name the policy judged, and the one the
	// sandbox connects to (a CNAME chain's names are not asked for).
	Name string
	// Addrs are the addresses of the answer as the sandbox gets it (filtered, truncated),
	// in its order; never empty.
	Addrs []netip.Addr
	// TTL is the smallest TTL of those address records, as given (capped at MaxTTL).
	TTL uint32
}

// asker is who asked a question that was answered from upstream: what Answered needs
// besides the answer.
type asker struct {
	src          netip.Addr
	tenant, vmID string
	name         string
}

// ruleOpen is the text of the SERVFAIL that a failed OpenTCP gives.
const ruleOpen = "egressd: the gateway could not open the answer's addresses for this sandbox; ask again"

// open tells s.TCP of the addresses of m, the answer as it is to be written, and returns
// what to write: m, or SERVFAIL when the kernel could not be opened. Failing closed keeps
// the sandbox's view consistent: an address it is given is one the kernel forwards to, or
// that it never needed to (a web name's, which goes to the proxy); it is never handed an
// address whose connection the kernel would drop without a word. The record keeps the
// policy's decision (the name is allowed), as for an upstream failure, without an address.
func (s *Server) open(req, m *dns.Msg, who *asker, rec *events.Record) *dns.Msg {
	if s.TCP == nil {
		return m
	}
	a := Answered{Src: who.src, Tenant: who.tenant, VMID: who.vmID, Name: who.name}
	for _, rr := range m.Answer {
		var ip netip.Addr
		switch r := rr.(type) {
		case *dns.A:
			ip, _ = netip.AddrFromSlice(r.A)
		case *dns.AAAA:
			ip, _ = netip.AddrFromSlice(r.AAAA)
		default:
			continue
		}
		ip = ip.Unmap()
		if !ip.IsValid() {
			continue
		}
		if ttl := rr.Header().Ttl; len(a.Addrs) == 0 || ttl < a.TTL {
			a.TTL = ttl
		}
		a.Addrs = append(a.Addrs, ip)
	}
	if len(a.Addrs) == 0 {
		return m // nothing to connect to: nothing to open
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout())
	defer cancel()
	err := s.TCP.OpenTCP(ctx, a)
	if err == nil {
		return m
	}
	s.warn("dnsfilter: opening allowed_tcp addresses failed; answering SERVFAIL", "vm_id", who.vmID, "name", who.name, "err", err)
	f := reply(req, dns.RcodeServerFailure)
	addEDE(f, dns.ExtendedErrorCodeOther, ruleOpen)
	rec.IP = ""
	return f
}

func (s *Server) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultTimeout
}
