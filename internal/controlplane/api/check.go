package api

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/dialer"
	"github.com/egressd/egressd/internal/dataplane/resolve"
	"github.com/egressd/egressd/policy"
)

// check answers the decision the gateway would take, without any traffic.
func (s *Server) check(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	var req client.CheckRequest
	if err := readJSON(w, r, &req, false); err != nil {
		return err
	}
	_, layers, err := s.layers(r.Context(), k.Tenant, r.PathValue("id"))
	if err != nil {
		return err
	}
	set, err := s.env.Effective(layers...)
	if err != nil {
		return err
	}
	if req.DNSQuery != "" {
		q, err := parseQuery(req)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, result(set.DecideQuery(q)))
		return nil
	}
	conn, hreq, err := parseConn(req)
	if err != nil {
		return err
	}
	// What the gateway does with a connection to an intercepted host depends on whether it
	// intercepts; until it does, Decide denies such a connection (interception_unavailable).
	conn.Intercepted = s.env.Interception()
	var rd policy.Decision
	byRequest := hreq != nil && conn.Host != "" && (conn.Port == 80 || conn.Port == 443) && set.Intercepts(conn.Host)
	if byRequest {
		// A request the rules deny is denied whatever the gateway can do: say so first, with
		// the entry that decided, rather than only that the connection is not intercepted.
		if rd = set.DecideRequest(*hreq); !rd.Allow {
			writeJSON(w, http.StatusOK, result(rd))
			return nil
		}
	}
	var out client.CheckResult
	if !req.Resolve || conn.Host == "" {
		out = result(set.Decide(conn))
	} else {
		out = s.plan(r.Context(), set, conn)
	}
	if byRequest && out.Decision == "allow" && (rd.WouldDeny || !out.WouldDeny) {
		// The connection is intercepted and the request allowed: the request's decision is
		// the one the gateway records (the addresses judged stay in the answer).
		addrs := out.Addresses
		out = result(rd)
		out.Addresses = addrs
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// plan answers as the gateway would decide before it dials: it asks the gateway's own
// planner (judge the name, resolve it with the gateway's resolver, judge every address), so
// the answer is the decision the gateway would record. A name that leads nowhere is denied
// here (name_not_found, resolve_failed): the gateway could connect to nothing.
func (s *Server) plan(ctx context.Context, set *policy.Effective, conn policy.Conn) client.CheckResult {
	p, err := s.planner.Plan(ctx, set, conn)
	var out client.CheckResult
	switch {
	case err == nil, errors.Is(err, dialer.ErrDenied):
		out = result(p.Decision)
	case errors.Is(err, resolve.ErrNotFound), errors.Is(err, resolve.ErrNoAddress):
		out = result(policy.Refused(policy.ReasonNameNotFound, conn.Host))
	default:
		out = result(policy.Refused(policy.ReasonResolveFailed, err.Error()))
	}
	for _, a := range p.Addresses {
		d := a.Decision
		out.Addresses = append(out.Addresses, client.AddressResult{
			IP: a.Conn.IP.String(), Decision: decisionWord(d), Reason: string(d.Reason), Message: d.Message(),
			Rule: d.Rule, Layer: string(d.Layer), WouldDeny: d.WouldDeny,
		})
	}
	return out
}

func result(d policy.Decision) client.CheckResult {
	return client.CheckResult{Decision: decisionWord(d), Reason: string(d.Reason), Message: d.Message(), Rule: d.Rule, Layer: string(d.Layer), WouldDeny: d.WouldDeny}
}

func decisionWord(d policy.Decision) string {
	if d.Allow {
		return "allow"
	}
	return "deny"
}

func parseQuery(req client.CheckRequest) (policy.Query, error) {
	if req.URL != "" || req.Host != "" || req.IP != "" {
		return policy.Query{}, badRequest("dns_query", "set one of url, host, ip or dns_query")
	}
	if req.Method != "" {
		return policy.Query{}, badRequest("method", "method goes with url; a dns_query has none")
	}
	if req.Port != 0 || req.Transport != "" {
		return policy.Query{}, badRequest("port", "a dns_query is judged as a query, on no port or transport; leave out port and transport")
	}
	name, err := policy.NormalizeName(req.DNSQuery)
	if err != nil {
		return policy.Query{}, badRequest("dns_query", "%v", err)
	}
	qtype := strings.ToUpper(req.QType)
	if qtype == "" {
		qtype = "A"
	}
	t, ok := dns.StringToType[qtype]
	if !ok {
		n, err := strconv.ParseUint(strings.TrimPrefix(qtype, "TYPE"), 10, 16)
		if err != nil || !strings.HasPrefix(qtype, "TYPE") {
			return policy.Query{}, badRequest("qtype", "unknown query type %q; use A, AAAA, TXT, HTTPS... or TYPEnnn", req.QType)
		}
		t = uint16(n)
	}
	return policy.Query{Name: name, Type: t}, nil
}

// parseConn turns a check request into a connection attempt and, for a URL, the HTTP
// request it would carry.
func parseConn(req client.CheckRequest) (policy.Conn, *policy.Request, error) {
	set := 0
	for _, s := range []string{req.URL, req.Host, req.IP} {
		if s != "" {
			set++
		}
	}
	if set != 1 {
		return policy.Conn{}, nil, badRequest("", `set exactly one of "url", "host" (with "port"), "ip" (with "port" and "transport") or "dns_query"`)
	}
	if req.QType != "" {
		return policy.Conn{}, nil, badRequest("qtype", "qtype goes with dns_query; leave it out")
	}
	if req.Method != "" && req.URL == "" {
		return policy.Conn{}, nil, badRequest("method", "method goes with url: a request has a method, a connection has none")
	}
	if req.URL != "" {
		// A field beside the URL that the URL overrides would make the answer about a
		// destination other than the one asked about.
		if req.Port != 0 || req.Transport != "" {
			return policy.Conn{}, nil, badRequest("port", "a url carries its own port (https://host:8443/) and is TCP; leave out port and transport")
		}
		method := "GET"
		if req.Method != "" {
			m, err := policy.NormalizeMethod(req.Method)
			if err != nil {
				return policy.Conn{}, nil, badRequest("method", "%v", err)
			}
			method = m
		}
		conn, path, err := parseURL(req.URL)
		if err != nil {
			return policy.Conn{}, nil, err
		}
		return conn, &policy.Request{Host: conn.Host, Port: conn.Port, Method: method, Path: path}, nil
	}
	conn, err := parseEndpoint(req)
	return conn, nil, err
}

// parseEndpoint reads the host and ip forms of a check request.
func parseEndpoint(req client.CheckRequest) (policy.Conn, error) {
	switch {
	case req.Host != "":
		port, err := checkPort(req.Port, "port")
		if err != nil {
			return policy.Conn{}, err
		}
		if req.Transport != "" && !strings.EqualFold(req.Transport, "tcp") {
			return policy.Conn{}, badRequest("transport", "a host is judged for TCP; for UDP give an ip")
		}
		return hostConn(req.Host, port, "host")
	default:
		ip, err := netip.ParseAddr(req.IP)
		if err != nil || ip.Zone() != "" {
			return policy.Conn{}, badRequest("ip", "%q is not an IP address", req.IP)
		}
		tr := policy.Transport(strings.ToLower(req.Transport))
		switch tr {
		case "":
			tr = policy.TCP
		case policy.TCP, policy.UDP, policy.ICMP:
		default:
			return policy.Conn{}, badRequest("transport", "transport %q is unknown; use tcp, udp or icmp", req.Transport)
		}
		var port uint16
		if tr != policy.ICMP {
			if port, err = checkPort(req.Port, "port"); err != nil {
				return policy.Conn{}, err
			}
		}
		return policy.Conn{IP: ip.Unmap(), Port: port, Transport: tr}, nil
	}
}

func checkPort(p int, field string) (uint16, error) {
	if p < 1 || p > 65535 {
		return 0, badRequest(field, "port must be 1 to 65535")
	}
	return uint16(p), nil
}

// parseURL reads a URL as the explicit proxy would see it: http and https only, the default
// port of the scheme unless one is given, credentials (user@host) ignored. path is the
// URL's path as written, percent-encoding and all ("/" when it has none), without query or
// fragment: the request's path is judged as the gateway would judge it on the wire, so a
// malformed one is a bad_path decision rather than a 400.
func parseURL(raw string) (conn policy.Conn, path string, err error) {
	rest := raw
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		rest = rest[:i] // a fragment is never sent
	}
	base, path := rest, "/"
	if i := strings.Index(rest, "://"); i >= 0 {
		if j := strings.IndexAny(rest[i+3:], "/?"); j >= 0 {
			base = rest[:i+3+j]
			path, _, _ = strings.Cut(rest[i+3+j:], "?")
			if path == "" {
				path = "/"
			}
		}
	}
	u, err := url.Parse(base)
	if err != nil {
		return policy.Conn{}, "", badRequest("url", "%q is not a URL: %v", raw, err)
	}
	var port uint16
	switch strings.ToLower(u.Scheme) {
	case "http":
		port = 80
	case "https":
		port = 443
	default:
		return policy.Conn{}, "", badRequest("url", "scheme %q is not judged; use an http:// or https:// URL, or host and port", u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return policy.Conn{}, "", badRequest("url", "%q has no host; write scheme://host/path", raw)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil {
			return policy.Conn{}, "", badRequest("url", "port %q is not a number", p)
		}
		if port, err = checkPort(n, "url"); err != nil {
			return policy.Conn{}, "", err
		}
	}
	conn, err = hostConn(u.Hostname(), port, "url")
	return conn, path, err
}

// hostConn makes a TCP attempt to a host, which may be an IP literal: that is judged as an
// address with no name, as the gateway would see it.
func hostConn(host string, port uint16, field string) (policy.Conn, error) {
	if host == "" {
		return policy.Conn{}, badRequest(field, "no host name")
	}
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return policy.Conn{IP: ip.Unmap(), Port: port, Transport: policy.TCP, IPLiteral: true}, nil
	}
	name, err := policy.NormalizeName(host)
	if err != nil {
		return policy.Conn{}, badRequest(field, "%v", err)
	}
	return policy.Conn{Host: name, Port: port, Transport: policy.TCP}, nil
}
