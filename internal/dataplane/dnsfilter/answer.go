package dnsfilter

import (
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/policy"
)

// maxChain bounds the CNAME chain that is followed in an answer.
const maxChain = 8

// answer is what a sandbox may see of an upstream answer.
type answer struct {
	records  []dns.RR   // the CNAME chain, then the kept addresses
	first    netip.Addr // the first kept address; zero if none
	stripped int        // addresses removed by KeepAnswer
}

// filterAnswer keeps, of resp's answer section, the CNAME chain that starts at qname (in
// order, at most maxChain links, a loop cut) and the records of type qtype (A or AAAA)
// owned by a name of that chain whose address set.KeepAnswer admits. Everything else is
// dropped: other types and classes, records of other owners, DNAME (its synthesised CNAME
// is kept), signatures, and the authority and additional sections whole. Every TTL is
// capped at maxTTL; one over 2^31-1 counts as 0 (RFC 2181 §8). The records are resp's own,
// changed in place.
func filterAnswer(resp *dns.Msg, qname string, qtype uint16, set *policy.Effective, maxTTL uint32) answer {
	var chain [maxChain + 1]string
	chain[0] = qname
	n := 1
	var out answer
	for n < len(chain) {
		next := cnameOf(resp.Answer, chain[n-1])
		if next == nil || inChain(chain[:n], next.Target) {
			break
		}
		out.records = append(out.records, next)
		chain[n] = next.Target
		n++
	}
	for _, rr := range resp.Answer {
		h := rr.Header()
		if h.Rrtype != qtype || h.Class != dns.ClassINET || !inChain(chain[:n], h.Name) {
			continue
		}
		var a netip.Addr
		switch r := rr.(type) {
		case *dns.A:
			a, _ = netip.AddrFromSlice(r.A)
		case *dns.AAAA:
			a, _ = netip.AddrFromSlice(r.AAAA)
		default:
			continue // qtype is A or AAAA: cannot happen
		}
		a = a.Unmap()
		if !a.IsValid() || (qtype == dns.TypeA) != a.Is4() || !set.KeepAnswer(a) {
			out.stripped++
			continue
		}
		if !out.first.IsValid() {
			out.first = a
		}
		out.records = append(out.records, rr)
	}
	for _, rr := range out.records {
		h := rr.Header()
		h.Ttl = capTTL(h.Ttl, maxTTL)
	}
	return out
}

// cnameOf returns the CNAME record (class IN) owned by name, or nil.
func cnameOf(rrs []dns.RR, name string) *dns.CNAME {
	for _, rr := range rrs {
		if c, ok := rr.(*dns.CNAME); ok && c.Hdr.Class == dns.ClassINET && strings.EqualFold(c.Hdr.Name, name) {
			return c
		}
	}
	return nil
}

func inChain(chain []string, name string) bool {
	for _, c := range chain {
		if strings.EqualFold(c, name) {
			return true
		}
	}
	return false
}

// capTTL bounds a TTL: at most maxTTL, and 0 for a value with the top bit set.
func capTTL(ttl, maxTTL uint32) uint32 {
	if ttl > 1<<31-1 {
		return 0
	}
	return min(ttl, maxTTL)
}
