package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/egressd/egressd/policy"
)

// target is a destination as a client named it, parsed and normalised: either a host name
// in policy.NormalizeName form, or an IP address (an IP literal), and a port.
type target struct {
	host string     // normalised name; "" for an IP literal
	ip   netip.Addr // the literal's address, unmapped; zero for a name
	port uint16
	// pin binds a name to the address its connection is bound to (a Host inside a CONNECT
	// to an address, or on a redirected connection to an address allowed_cidrs opens): the
	// name is judged at that address, which is dialled. Zero: the gateway resolves the name.
	pin netip.Addr
	// nameErr is set when the host is neither an address nor a name NormalizeName accepts
	// ("exa_mple.com", "127.1"): well-formed as a request, denied by policy.
	nameErr error
	// intercepted: the host's requests are decided one by one (DESIGN §2.7), so its
	// connection is judged with policy.Conn.Intercepted (set by send for plain HTTP).
	intercepted bool
}

// conn is the connection attempt to judge.
func (t target) conn() policy.Conn {
	if t.host == "" {
		return policy.Conn{IP: t.ip, Port: t.port, Transport: policy.TCP, IPLiteral: true}
	}
	return policy.Conn{Host: t.host, IP: t.pin, Port: t.port, Transport: policy.TCP, Intercepted: t.intercepted}
}

// String is host:port in normal form, brackets around IPv6: the CONNECT target or the
// Host header the proxy sends upstream.
func (t target) String() string {
	h := t.host
	if h == "" {
		h = t.ip.String()
	}
	return net.JoinHostPort(h, strconv.Itoa(int(t.port)))
}

// hostHeader is the Host header for the destination: the port only when it is not the
// scheme's default.
func (t target) hostHeader(defaultPort uint16) string {
	if t.port != defaultPort {
		return t.String()
	}
	if t.host == "" && t.ip.Is6() {
		return "[" + t.ip.String() + "]"
	}
	if t.host == "" {
		return t.ip.String()
	}
	return t.host
}

// errBadTarget is wrapped by every parse error: the request is malformed (400), as opposed
// to a well-formed request for a host the policy denies.
var errBadTarget = errors.New("bad target")

// parseAuthority parses host[:port] as it appears in a CONNECT request-target, the
// authority of an absolute URL, or a Host header. defaultPort 0 means the port is required
// (CONNECT). Userinfo ("user@host"), percent-encoding, zones, paths and empty parts are
// refused: each is a way to make the proxy and the destination read a different host.
func parseAuthority(s string, defaultPort uint16) (target, error) {
	bad := func(format string, args ...any) (target, error) {
		return target{}, fmt.Errorf("%w: %q: %s", errBadTarget, s, fmt.Sprintf(format, args...))
	}
	if s == "" {
		return bad("empty host")
	}
	if i := strings.IndexAny(s, "@/?#%\\ \t\r\n"); i >= 0 {
		switch s[i] {
		case '@':
			return bad("user information (user@host) is not allowed; give only host:port")
		case '%':
			return bad("percent-encoding and zones are not allowed in a host")
		}
		return bad("not host:port (contains %q)", s[i])
	}
	host, portStr := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return bad("unclosed '['")
		}
		host, portStr = s[1:end], s[end+1:]
		if portStr != "" {
			if portStr[0] != ':' {
				return bad("unexpected text after ']'")
			}
			portStr = portStr[1:]
			if portStr == "" {
				return bad("empty port")
			}
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() {
			return bad("not an IPv6 address between brackets")
		}
	case strings.Count(s, ":") > 1:
		return bad("an IPv6 address must be in brackets")
	case strings.Contains(s, ":"):
		host, portStr, _ = strings.Cut(s, ":")
		if portStr == "" {
			return bad("empty port")
		}
	}
	var port uint16
	switch {
	case portStr != "":
		n, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || n == 0 || portStr[0] == '+' {
			return bad("port must be a number from 1 to 65535")
		}
		port = uint16(n)
	case defaultPort == 0:
		return bad("a CONNECT target needs a port (host:443)")
	default:
		port = defaultPort
	}
	if host == "" {
		return bad("empty host")
	}
	return hostTarget(host, port), nil
}

// hostTarget is host, a CONNECT's or a SOCKS5 request's, at port: an IP literal when it is
// an address (unmapped), else a name in policy.NormalizeName form, or a target with nameErr
// when it is neither.
func hostTarget(host string, port uint16) target {
	if a, err := netip.ParseAddr(host); err == nil && a.Zone() == "" {
		return target{ip: a.Unmap(), port: port}
	}
	name, err := policy.NormalizeName(host)
	if err != nil {
		return target{host: host, port: port, nameErr: err}
	}
	return target{host: name, port: port}
}

// absoluteAuthority returns the authority of an absolute http:// request-target, as the
// client sent it (the raw string, not net/url's decoding of it).
func absoluteAuthority(requestURI string) (string, error) {
	scheme, rest, ok := strings.Cut(requestURI, "://")
	switch {
	case !ok || strings.HasPrefix(requestURI, "/"):
		return "", errOriginForm
	case strings.EqualFold(scheme, "https"):
		return "", fmt.Errorf("%w: https:// URLs go through CONNECT, not a plain request", errBadTarget)
	case !strings.EqualFold(scheme, "http"):
		return "", fmt.Errorf("%w: scheme %q is not proxied; only http:// (and CONNECT)", errBadTarget, scheme)
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	return rest, nil
}

// errOriginForm: a request for a path on the proxy itself ("GET /path").
var errOriginForm = fmt.Errorf("%w: this is a proxy; use an absolute URL (http://host/path), or CONNECT for https", errBadTarget)
