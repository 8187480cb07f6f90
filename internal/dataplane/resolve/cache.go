package resolve

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Cache bounds.
const (
	defaultCacheSize = 4096
	maxCacheTTL      = 5 * time.Minute // a long TTL must not pin an address for hours
	negativeTTL      = 30 * time.Second
	maxCNAMEs        = 8
)

type cacheKey struct {
	name  string // FQDN, lower case
	qtype uint16
}

type cacheEntry struct {
	addrs   []netip.Addr // never modified once cached
	expires time.Time
}

// addrCache is LookupNetIP's bounded cache. A cache is an optimisation: when full it drops
// expired entries, then entries at random, so that a client looking up many names cannot
// grow it.
type addrCache struct {
	mu sync.Mutex
	m  map[cacheKey]cacheEntry
}

func (c *addrCache) get(k cacheKey) ([]netip.Addr, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || time.Now().After(e.expires) {
		return nil, false
	}
	return e.addrs, true
}

// put caches addrs for ttl; size is the Resolver's CacheSize.
func (c *addrCache) put(k cacheKey, addrs []netip.Addr, ttl time.Duration, size int) {
	if size < 0 || ttl <= 0 {
		return
	}
	if size == 0 {
		size = defaultCacheSize
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[cacheKey]cacheEntry)
	}
	if len(c.m) >= size {
		for k, e := range c.m {
			if now.After(e.expires) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < size {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[k] = cacheEntry{addrs: addrs, expires: now.Add(ttl)}
}

// Addresses collects the answer's addresses of type qtype for name, following the CNAME
// chain that starts at name (at most 8 links, a loop cut), and the smallest TTL on the way,
// capped at five minutes; 30 seconds when there is no address. Records of other owners
// (which a resolver should not send) are ignored.
func Addresses(resp *dns.Msg, name string, qtype uint16) ([]netip.Addr, time.Duration) {
	name = strings.ToLower(dns.Fqdn(name))
	ttl := uint32(maxCacheTTL / time.Second)
	owner := map[string]bool{name: true}
	cur := name
	for range maxCNAMEs {
		next := ""
		for _, rr := range resp.Answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, cur) {
				next = strings.ToLower(c.Target)
				ttl = min(ttl, c.Hdr.Ttl)
			}
		}
		if next == "" || owner[next] {
			break
		}
		owner[next], cur = true, next
	}
	var addrs []netip.Addr
	for _, rr := range resp.Answer {
		if !owner[strings.ToLower(rr.Header().Name)] || rr.Header().Rrtype != qtype {
			continue
		}
		var ip net.IP
		switch r := rr.(type) {
		case *dns.A:
			ip = r.A
		case *dns.AAAA:
			ip = r.AAAA
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			addrs = append(addrs, a.Unmap())
			ttl = min(ttl, rr.Header().Ttl)
		}
	}
	if len(addrs) == 0 {
		return nil, negativeTTL
	}
	return addrs, time.Duration(ttl) * time.Second
}
