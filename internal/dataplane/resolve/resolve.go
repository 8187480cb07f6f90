package resolve

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

// Errors of LookupNetIP, for errors.Is.
var (
	// ErrNotFound: the name does not exist (NXDOMAIN).
	ErrNotFound = errors.New("no such host")
	// ErrNoAddress: the name exists but has no A or AAAA record.
	ErrNoAddress = errors.New("host has no address")
)

// RcodeError is a server's answer that is neither NOERROR nor NXDOMAIN (SERVFAIL, REFUSED…):
// Exchange then asks the next server, and returns it (wrapped) when none answered better.
type RcodeError struct{ Rcode int }

func (e *RcodeError) Error() string { return "it answered " + dns.RcodeToString[e.Rcode] }

// Defaults of a Resolver's zero fields.
const (
	// DefaultTimeout bounds one exchange with one server, both transports: under the 5
	// seconds a glibc stub waits, so that a sandbox gets SERVFAIL rather than a timeout.
	DefaultTimeout    = 4 * time.Second
	DefaultHostsFile  = "/etc/hosts"
	DefaultResolvConf = "/etc/resolv.conf"
)

// udpSize is the buffer advertised in our OPT record: the DNS Flag Day 2020 size.
const udpSize = 1232

// Resolver answers questions; see the package documentation. Set its fields before first
// use and do not change them afterwards. The zero value resolves the system's way. A
// Resolver is safe for concurrent use.
type Resolver struct {
	// Upstream is the one server to ask, host:port or a bare host (port 53); "" means the
	// system's way (HostsFile, then the nameservers of ResolvConf).
	Upstream string
	// HostsFile and ResolvConf are the system's files; "" means /etc/hosts and
	// /etc/resolv.conf. They are read only when Upstream is "".
	HostsFile, ResolvConf string
	// Timeout bounds one exchange with one server; 0 means DefaultTimeout. The caller's
	// context bounds the whole.
	Timeout time.Duration
	// CacheSize bounds LookupNetIP's cache (one entry per name and type); 0 means 4096,
	// negative turns it off.
	CacheSize int

	hosts   fileCache[hostsTable]
	servers fileCache[[]string]
	cache   addrCache

	upOnce sync.Once
	up     string
}

// Exchange asks one question: qname (a fully qualified name in normal form, as the policy
// judged it) of type qtype, class IN. It returns the answer of the first source that gave
// one (the hosts file, or a server that answered NOERROR or NXDOMAIN), or an error when none
// did.
func (r *Resolver) Exchange(ctx context.Context, qname string, qtype uint16) (*dns.Msg, error) {
	qname = dns.Fqdn(qname)
	if r.Upstream == "" {
		if m, ok := r.fromHosts(qname, qtype); ok {
			return m, nil
		}
	}
	servers, err := r.serversFor()
	if err != nil {
		return nil, err
	}
	var lastErr error
	for _, srv := range servers {
		m, err := r.exchangeWith(ctx, srv, qname, qtype)
		if err == nil {
			return m, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// exchangeWith asks one server, over UDP and then TCP when truncated. SERVFAIL and REFUSED
// are errors here, so that Exchange tries the next server.
func (r *Resolver) exchangeWith(ctx context.Context, srv, qname string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype) // a fresh ID from crypto/rand
	m.RecursionDesired = true
	m.SetEdns0(udpSize, false)
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	what := strings.TrimSuffix(qname, ".") + " " + dns.TypeToString[qtype]
	resp, _, err := (&dns.Client{Net: "udp", UDPSize: udpSize}).ExchangeContext(ctx, m, srv)
	if err == nil && resp.Truncated {
		resp, _, err = (&dns.Client{Net: "tcp"}).ExchangeContext(ctx, m, srv)
	}
	if err != nil {
		return nil, fmt.Errorf("asking %s for %s: %w", srv, what, err)
	}
	if len(resp.Question) != 1 || resp.Question[0].Qtype != qtype || !strings.EqualFold(resp.Question[0].Name, qname) {
		return nil, fmt.Errorf("asking %s for %s: the answer is for another question", srv, what)
	}
	if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("asking %s for %s: %w", srv, what, &RcodeError{Rcode: resp.Rcode})
	}
	return resp, nil
}

// serversFor returns the servers to ask, in order.
func (r *Resolver) serversFor() ([]string, error) {
	if r.Upstream != "" {
		r.upOnce.Do(func() {
			r.up = r.Upstream
			if _, _, err := net.SplitHostPort(r.up); err != nil {
				r.up = net.JoinHostPort(strings.Trim(r.up, "[]"), "53")
			}
		})
		return []string{r.up}, nil
	}
	path := r.ResolvConf
	if path == "" {
		path = DefaultResolvConf
	}
	servers, err := r.servers.get(path, readResolvConf)
	if err != nil {
		return nil, fmt.Errorf("no DNS server: %w (or set --dns-upstream)", err)
	}
	return servers, nil
}

func readResolvConf(path string) ([]string, error) {
	cfg, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, err
	}
	if len(cfg.Servers) == 0 {
		return nil, fmt.Errorf("%s names no nameserver", path)
	}
	out := make([]string, len(cfg.Servers))
	for i, s := range cfg.Servers {
		out[i] = net.JoinHostPort(s, cfg.Port)
	}
	return out, nil
}

// fromHosts answers from the hosts file: ok when the name is listed there, with the
// addresses of qtype (none: an empty NOERROR answer, as the system gives).
func (r *Resolver) fromHosts(qname string, qtype uint16) (*dns.Msg, bool) {
	path := r.HostsFile
	if path == "" {
		path = DefaultHostsFile
	}
	table, err := r.hosts.get(path, readHosts)
	if err != nil {
		return nil, false // no hosts file: ask the servers
	}
	addrs, ok := table[strings.ToLower(qname)]
	if !ok {
		return nil, false
	}
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.Response, m.Authoritative, m.RecursionAvailable = true, true, true
	for _, a := range addrs {
		hdr := dns.RR_Header{Name: qname, Rrtype: qtype, Class: dns.ClassINET, Ttl: hostsTTL}
		switch {
		case qtype == dns.TypeA && a.Is4():
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case qtype == dns.TypeAAAA && a.Is6():
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	return m, true
}

// hostsTTL is the TTL of an answer from the hosts file: short, since the file may change.
const hostsTTL = 30

// LookupNetIP returns host's IPv4 addresses, then its IPv6 addresses, asking for both at
// once. host is a name in policy.NormalizeName form. It fails with ErrNotFound or
// ErrNoAddress (wrapped) when there is nothing to dial; one family failing does not matter
// when the other answered.
func (r *Resolver) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	name := dns.Fqdn(strings.ToLower(host))
	var v6 []netip.Addr
	var err6 error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		v6, err6 = r.lookup(ctx, name, dns.TypeAAAA)
	}()
	v4, err4 := r.lookup(ctx, name, dns.TypeA)
	wg.Wait()
	addrs := append(append([]netip.Addr(nil), v4...), v6...)
	switch {
	case len(addrs) > 0:
		return addrs, nil
	case err4 != nil:
		return nil, err4
	case err6 != nil:
		return nil, err6
	}
	return nil, fmt.Errorf("%s: %w", host, ErrNoAddress)
}

// lookup answers one question, from the cache or with Exchange.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) ([]netip.Addr, error) {
	key := cacheKey{name, qtype}
	if addrs, ok := r.cache.get(key); ok {
		return addrs, nil
	}
	resp, err := r.Exchange(ctx, name, qtype)
	if err != nil {
		return nil, err
	}
	if resp.Rcode == dns.RcodeNameError {
		return nil, fmt.Errorf("%s: %w", strings.TrimSuffix(name, "."), ErrNotFound)
	}
	addrs, ttl := Addresses(resp, name, qtype)
	r.cache.put(key, addrs, ttl, r.CacheSize)
	return addrs, nil
}
