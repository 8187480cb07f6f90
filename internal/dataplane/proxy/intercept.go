package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/dataplane/dialer"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/intercept"
	"github.com/egressd/egressd/internal/dataplane/relay"
	"github.com/egressd/egressd/internal/dataplane/secrets"
	"github.com/egressd/egressd/policy"
)

// Interception hands the connections to intercepted hosts (DESIGN §2.7: a domain that an
// http_rules entry or a tenant's secret names) to the interception engine instead of
// splicing them. With Config.Interception nil the proxy splices as before, and the policy
// denies such hosts (interception_unavailable).
type Interception struct {
	// Engine serves the intercepted connections; required.
	Engine *intercept.Engine
	// Secrets are the tenants' secrets (*secrets.Book); nil means none.
	Secrets TenantSecrets
	// Recheck is how often an intercepted connection checks that its host is still
	// intercepted (a rule or a secret's domain removed cuts it); 0 means 250 ms.
	Recheck time.Duration
}

// TenantSecrets gives a tenant's current secrets. *secrets.Book is one; the set is
// replaced, never changed, when a secret changes.
type TenantSecrets interface {
	Tenant(tenant string) *secrets.Set
}

// interception is the proxy's state for Config.Interception.
type interception struct {
	cfg Interception

	mu      sync.Mutex
	domains map[string]tenantDomains // by tenant: the compiled domains of its current set
}

type tenantDomains struct {
	set *secrets.Set
	d   *policy.Domains
}

func newInterception(cfg *Interception) *interception {
	if cfg == nil || cfg.Engine == nil {
		return nil
	}
	c := *cfg
	if c.Recheck <= 0 {
		c.Recheck = 250 * time.Millisecond
	}
	return &interception{cfg: c, domains: make(map[string]tenantDomains)}
}

// set is the tenant's current secrets, or nil.
func (ix *interception) set(tenant string) *secrets.Set {
	if ix == nil || ix.cfg.Secrets == nil {
		return nil
	}
	return ix.cfg.Secrets.Tenant(tenant)
}

// secretDomains is the tenant's secrets' domains, compiled once per set.
func (ix *interception) secretDomains(tenant string) *policy.Domains {
	set := ix.set(tenant)
	if set.Len() == 0 {
		return nil
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if td, ok := ix.domains[tenant]; ok && td.set == set {
		return td.d
	}
	var patterns, rules []string
	for _, se := range set.All() {
		for _, d := range se.Domains {
			patterns, rules = append(patterns, d), append(rules, "secret "+se.Name+" "+d)
		}
	}
	d, err := policy.CompileDomains(patterns, rules)
	if err != nil {
		// The store validated every domain; a pattern that does not compile names nothing.
		d = nil
	}
	ix.domains[tenant] = tenantDomains{set: set, d: d}
	return d
}

// intercepts reports whether s's connections to host are intercepted now.
func (ix *interception) intercepts(s *Source, host string) bool {
	if ix == nil {
		return false
	}
	return ix.wants(s.Tenant, effectiveNow(s), host)
}

// wants reports whether tenant's connections to host, under eff, must go through the
// engine: an http_rules entry of eff names host, or a secret of the tenant does.
func (ix *interception) wants(tenant string, eff *policy.Effective, host string) bool {
	var extra *policy.Domains
	if ix != nil {
		extra = ix.secretDomains(tenant)
	}
	return eff.WithIntercepted(extra).Intercepts(host)
}

// Intercepts reports whether tenant's connections to host (in NormalizeName form), under
// the effective policy eff, are the proxy's to decide request by request: an http_rules
// entry of eff names host, or one of the tenant's secrets does (DESIGN §2.7). Whatever
// forwards TLS without the proxy (the gateway's kernel fast path) asks it first, so that
// no connection to such a host is spliced past the engine, with Config.Interception or
// without (then the proxy refuses such connections: interception_unavailable).
func (p *Proxy) Intercepts(tenant string, eff *policy.Effective, host string) bool {
	return p.ix.wants(tenant, eff, host)
}

// tenantSecrets is intercept.Secrets over a tenant's current set, read per lookup so that a
// rotated value applies to the next request.
type tenantSecrets struct {
	ix     *interception
	tenant string
}

func (t tenantSecrets) Lookup(placeholder, host string) (intercept.Secret, bool) {
	se := t.ix.set(t.tenant).ByPlaceholder(placeholder)
	if se == nil {
		return intercept.Secret{}, false
	}
	out := intercept.Secret{Name: se.Name}
	if se.Matches(host) && se.Value != nil {
		// A value that did not open is never sent: the request is refused as if the host
		// were not the secret's.
		out.ForHost, out.Value = true, string(se.Value)
	}
	return out, true
}

// secretsOverHTTP returns the names of the secrets whose placeholders a plain-HTTP request
// carries, in its header values or its target u (path and query, as sent and decoded; u
// may be nil): such a request is refused (secret_over_http), since the placeholder would
// travel in the clear wherever it is in the request's head.
func (c *clientConn) secretsOverHTTP(h map[string][]string, u *url.URL, s *Source, host string) []string {
	ix := c.p.ix
	if ix == nil || ix.set(s.Tenant).Len() == 0 {
		return nil
	}
	if u != nil {
		// The target's parts, searched as header values are (never sent as such).
		parts := []string{u.RawPath, u.Path, u.RawQuery, u.Opaque}
		if q, err := url.QueryUnescape(u.RawQuery); err == nil {
			parts = append(parts, q)
		}
		all := make(http.Header, len(h)+1)
		for k, v := range h {
			all[k] = v
		}
		all["\x00target"] = parts
		h = all
	}
	return intercept.SecretsIn(h, tenantSecrets{ix, s.Tenant}, host)
}

// interceptTunnel serves a CONNECT to host:443 whose host is intercepted: decide the name,
// answer through f (200, or the SOCKS5 success), check the ClientHello names host, and hand the connection to the engine.
func (c *clientConn) interceptTunnel(s *Source, host, what string, f front) {
	conn := policy.Conn{Host: host, Port: 443, Transport: policy.TCP, Intercepted: true}
	if !c.p.acquire(s) {
		d := c.p.tooMany(s)
		c.record(events.KindConnect, s, conn, d, 0)
		f.refuse(what, d)
		return
	}
	defer c.p.release(s)
	if d := effectiveNow(s).Decide(conn); !d.Allow {
		c.record(events.KindConnect, s, conn, d, 0)
		f.refuse(what, d)
		return
	}
	if f.ready(nil) != nil {
		return
	}
	prefix, sd := c.checkSNI(host)
	if !sd.Allow {
		sd.Rule = sanitize(sd.Rule)
		c.record(events.KindConnect, s, conn, sd, 0)
		return // the client sees its TLS fail
	}
	c.intercept(s, host, prefix)
}

// interceptTLS serves a transparent connection to port 443 whose ClientHello (hello, read)
// names an intercepted host. A refusal is the close, as for any transparent TLS.
func (c *clientConn) interceptTLS(s *Source, host string, hello []byte) {
	conn := policy.Conn{Host: host, Port: 443, Transport: policy.TCP, Intercepted: true}
	if !c.p.acquire(s) {
		c.record(events.KindConnect, s, conn, c.p.tooMany(s), 0)
		return
	}
	defer c.p.release(s)
	c.intercept(s, host, hello)
}

// intercept hands a connection whose ClientHello (prefix) names host, an intercepted host,
// to the engine, which decides and forwards each request and dials per request through the
// proxy's judged dialer. The connection holds one of s's slots. It is tracked like a
// tunnel: a policy that denies the host, or no longer intercepts it, cuts it.
func (c *clientConn) intercept(s *Source, host string, prefix []byte) {
	conn := policy.Conn{Host: host, Port: 443, Transport: policy.TCP, Intercepted: true}
	d := effectiveNow(s).Decide(conn)
	c.record(events.KindConnect, s, conn, d, 0)
	if !d.Allow {
		return
	}
	if buffered := c.br.Buffered(); buffered > 0 {
		b, _ := c.br.Peek(buffered)
		prefix = append(prefix, b...)
	}
	ix := c.p.ix
	ic := &intercept.Conn{
		Client: c.conn,
		Prefix: prefix,
		SNI:    host,
		Source: s.eventSource(),
		Policy: intercept.PolicyFunc(func(host, method, path string) policy.Decision {
			return effectiveNow(s).DecideRequest(policy.Request{Host: host, Port: 443, Method: method, Path: path})
		}),
		Dialer: intercept.DialFunc(func(ctx context.Context, host string, port uint16) (net.Conn, error) {
			res, err := c.p.cfg.Dialer.Dial(ctx, effectiveNow(s), policy.Conn{Host: host, Port: port, Transport: policy.TCP, Intercepted: true})
			if errors.Is(err, dialer.ErrDenied) {
				return nil, &intercept.DeniedError{Decision: res.Decision, Err: err}
			}
			if err != nil {
				return nil, err
			}
			return res.Conn, nil
		}),
	}
	if ix.cfg.Secrets != nil {
		ic.Secrets = tenantSecrets{ix, s.Tenant}
	}
	untrack := s.Live.Track(conn, ic.Cancel)
	defer untrack()
	c.mu.Lock()
	aborted := c.aborted
	c.mu.Unlock()
	if aborted != "" {
		ic.Cancel(aborted)
	}
	done := make(chan struct{})
	go c.watchInterception(s, host, ic, done)
	res := ix.cfg.Engine.Serve(c.p.ctx, ic)
	close(done)
	c.recordClose(s, conn, relay.Result{Up: res.Up, Down: res.Down, Duration: res.Duration, Reason: res.Reason})
}

// watchInterception cuts ic when its host stops being intercepted (the http_rules entry or
// the secret's domain that made it so was removed): its requests would otherwise still be
// read and rewritten under a policy that no longer asks for it. A policy that denies the
// host cuts it through Live.Track.
func (c *clientConn) watchInterception(s *Source, host string, ic *intercept.Conn, done <-chan struct{}) {
	t := time.NewTicker(c.p.ix.cfg.Recheck)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if !c.p.ix.intercepts(s, host) {
				ic.Cancel("policy")
				return
			}
		}
	}
}
