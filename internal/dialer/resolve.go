package dialer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Resolver looks up the addresses of a host name. DNS is the implementation egressd uses;
// tests may pass their own.
type Resolver interface {
	LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error)
}

// Errors of DNS.LookupNetIP, for errors.Is.
var (
	// ErrNotFound: the name does not exist (NXDOMAIN).
	ErrNotFound = errors.New("no such host")
	// ErrNoAddress: the name exists but has no A or AAAA record.
	ErrNoAddress = errors.New("host has no address")
)

// Cache bounds.
const (
	defaultCacheSize = 4096
	maxCacheTTL      = 5 * time.Minute // a long TTL must not pin an address for hours
	negativeTTL      = 30 * time.Second
	maxCNAMEs        = 8
)

// DNS resolves names with queries of its own to one upstream resolver, so that the gateway
// decides on the addresses it will dial, not on anything a client or the system's resolver
// configuration chose. It asks for A and AAAA at once, follows CNAMEs inside the answer,
// retries over TCP when an answer is truncated, and caches answers for their TTL (at most
// five minutes; empty answers for 30 seconds). The zero value asks the first nameserver of
// /etc/resolv.conf. A DNS is safe for concurrent use.
type DNS struct {
	// Upstream is the resolver's host:port (--dns-upstream); "" means the first nameserver
	// of /etc/resolv.conf, port 53.
	Upstream string
	// Timeout bounds one query, both transports included; 0 means 5 seconds. The caller's
	// context bounds the whole lookup.
	Timeout time.Duration
	// CacheSize bounds the cached answers (one per name and type); 0 means 4096, a negative
	// value turns the cache off.
	CacheSize int

	upOnce sync.Once
	up     string
	upErr  error

	mu    sync.Mutex
	cache map[cacheKey]cacheEntry
}

type cacheKey struct {
	name  string // FQDN, lower case
	qtype uint16
}

type cacheEntry struct {
	addrs   []netip.Addr // never modified once cached
	expires time.Time
}

// LookupNetIP returns host's IPv4 addresses, then its IPv6 addresses. host is a name in
// policy.NormalizeName form. It fails with ErrNotFound or ErrNoAddress (wrapped) when there
// is nothing to dial.
func (d *DNS) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	up, err := d.upstream()
	if err != nil {
		return nil, err
	}
	name := dns.Fqdn(strings.ToLower(host))
	type answer struct {
		addrs []netip.Addr
		err   error
	}
	var v4, v6 answer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		v6.addrs, v6.err = d.lookup(ctx, up, name, dns.TypeAAAA)
	}()
	v4.addrs, v4.err = d.lookup(ctx, up, name, dns.TypeA)
	wg.Wait()
	addrs := append(append([]netip.Addr(nil), v4.addrs...), v6.addrs...)
	switch {
	case len(addrs) > 0:
		return addrs, nil // one family failing does not matter when the other answered
	case v4.err != nil:
		return nil, v4.err
	case v6.err != nil:
		return nil, v6.err
	}
	return nil, fmt.Errorf("%s: %w", host, ErrNoAddress)
}

// lookup answers one question, from the cache or the upstream.
func (d *DNS) lookup(ctx context.Context, up, name string, qtype uint16) ([]netip.Addr, error) {
	key := cacheKey{name, qtype}
	if addrs, ok := d.cached(key); ok {
		return addrs, nil
	}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, _, err := (&dns.Client{Net: "udp"}).ExchangeContext(ctx, m, up)
	if err == nil && resp.Truncated {
		resp, _, err = (&dns.Client{Net: "tcp"}).ExchangeContext(ctx, m, up)
	}
	if err != nil {
		return nil, fmt.Errorf("resolving %s (%s) with %s: %w", strings.TrimSuffix(name, "."), dns.TypeToString[qtype], up, err)
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, fmt.Errorf("%s: %w", strings.TrimSuffix(name, "."), ErrNotFound)
	default:
		return nil, fmt.Errorf("resolving %s (%s) with %s: %s", strings.TrimSuffix(name, "."), dns.TypeToString[qtype], up, dns.RcodeToString[resp.Rcode])
	}
	addrs, ttl := addresses(resp, name, qtype)
	d.store(key, addrs, ttl)
	return addrs, nil
}

// addresses collects the answer's addresses of type qtype for name, following the CNAME
// chain that starts at name, and the smallest TTL on the way. Records for other owners
// (which a resolver should not send) are ignored.
func addresses(resp *dns.Msg, name string, qtype uint16) ([]netip.Addr, time.Duration) {
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

func (d *DNS) cached(k cacheKey) ([]netip.Addr, bool) {
	if d.CacheSize < 0 {
		return nil, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.cache[k]
	if !ok || time.Now().After(e.expires) {
		return nil, false
	}
	return e.addrs, true
}

func (d *DNS) store(k cacheKey, addrs []netip.Addr, ttl time.Duration) {
	if d.CacheSize < 0 || ttl <= 0 {
		return
	}
	size := d.CacheSize
	if size == 0 {
		size = defaultCacheSize
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cache == nil {
		d.cache = make(map[cacheKey]cacheEntry)
	}
	if len(d.cache) >= size {
		for k, e := range d.cache {
			if now.After(e.expires) {
				delete(d.cache, k)
			}
		}
		// Still full: drop entries at random (map order) until there is room. A cache is an
		// optimisation; a bounded one cannot be grown by a client looking up many names.
		for k := range d.cache {
			if len(d.cache) < size {
				break
			}
			delete(d.cache, k)
		}
	}
	d.cache[k] = cacheEntry{addrs: addrs, expires: now.Add(ttl)}
}

// upstream returns the resolver to ask, reading /etc/resolv.conf once when none is set.
func (d *DNS) upstream() (string, error) {
	d.upOnce.Do(func() {
		if d.Upstream != "" {
			d.up = d.Upstream
			if _, _, err := net.SplitHostPort(d.up); err != nil {
				d.up = net.JoinHostPort(d.up, "53")
			}
			return
		}
		cfg, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			d.upErr = fmt.Errorf("no DNS upstream: reading /etc/resolv.conf: %w (set --dns-upstream)", err)
			return
		}
		if len(cfg.Servers) == 0 {
			d.upErr = errors.New("no DNS upstream: /etc/resolv.conf names no nameserver (set --dns-upstream)")
			return
		}
		d.up = net.JoinHostPort(cfg.Servers[0], cfg.Port)
	})
	return d.up, d.upErr
}
