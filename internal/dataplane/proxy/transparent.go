package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/relay"
	"github.com/egressd/egressd/internal/dataplane/sni"
	"github.com/egressd/egressd/policy"
)

// Rules of the transparent proxy's own refusals.
const (
	ruleUnknownSource  = "the source address belongs to no VM"
	ruleTransparentTLS = "TCP 443 must carry TLS with a server name"
	ruleNoHost         = "HTTP without a host: the gateway needs a Host header to judge"
	ruleHostPort       = "the Host header must name the port the connection went to"
	ruleTransparentReq = "a request on TCP 80 must be GET /path (origin form) or an http:// URL, with a Host"
	ruleConnectHost    = "a request must be for the host its connection goes to (the CONNECT's)"
)

// ServeTransparent accepts connections that the gateway's firewall redirected to ln (TCP
// 80 and 443 from sandbox interfaces, "redirect to :port") and serves each on its own
// goroutine until ln fails or the proxy is shut down; it then returns ErrClosed. The
// sandbox is the VM that Config.Sandboxes finds for the source address, the destination
// is the original one (Config.OriginalDst). ln must hand out *net.TCPConn.
func (p *Proxy) ServeTransparent(ln net.Listener) error {
	if p.cfg.Sandboxes == nil {
		return errors.New("proxy: ServeTransparent needs Config.Sandboxes")
	}
	return p.accept(ln, (*clientConn).serveTransparent)
}

// serveTransparent serves one redirected connection: find its original destination and
// its sandbox, then judge it by its TLS server name (443) or by each request's Host (80).
func (c *clientConn) serveTransparent() {
	defer c.finish()
	dst, err := c.p.cfg.OriginalDst(c.conn)
	if err != nil {
		c.p.log.Warn("transparent connection without an original destination; closing", "client", c.conn.RemoteAddr().String(), "err", err)
		return
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	src := netip.Addr{}
	if a, ok := c.conn.RemoteAddr().(*net.TCPAddr); ok {
		src = a.AddrPort().Addr().Unmap()
	}
	s, ok := c.sandbox(src, dst)
	if !ok {
		return
	}
	// A destination that the policy allows by its address (allowed_cidrs) is where the
	// connection goes; a name seen on it is judged at that address. Any other is judged
	// by the name alone, and the name's own address is dialled.
	addr := policy.Conn{IP: dst.Addr(), Port: dst.Port(), Transport: policy.TCP, IPLiteral: true}
	byAddress := false
	if d := effectiveNow(s).Decide(addr); d.Allow && !d.WouldDeny {
		byAddress = true
	}
	switch {
	case dst.Port() == 443 && byAddress:
		c.tunnel(s, addr, "TLS to "+dst.String(), tunnelOps{
			refuse:      func(policy.Decision) {},
			unreachable: func(error) {},
			first: func(judged policy.Conn, d policy.Decision, r *relay.Relay) ([]byte, policy.Conn, policy.Decision, error) {
				return c.peekName(s, judged, d, r)
			},
		})
	case dst.Port() == 443:
		c.transparentTLS(s, dst)
	case dst.Port() == 80 && byAddress:
		c.transparentHTTP(s, src, dst, &target{ip: dst.Addr(), port: 80})
	case dst.Port() == 80:
		c.transparentHTTP(s, src, dst, nil)
	default:
		// The firewall redirects only 80 and 443: a bug, or someone else's rule.
		d := deny(policy.ReasonPort, "the transparent proxy serves only TCP 80 and 443")
		c.record(events.KindConnect, s, policy.Conn{IP: dst.Addr(), Port: dst.Port(), Transport: policy.TCP, IPLiteral: true}, d, 0)
	}
}

// sandbox finds the VM of a source address; an unknown one is recorded as a denial.
func (c *clientConn) sandbox(src netip.Addr, dst netip.AddrPort) (*Source, bool) {
	if s, ok := c.p.cfg.Sandboxes.BySource(src); ok && s != nil {
		return s, true
	}
	c.p.log.Debug("transparent connection from an unknown source; closing", "src", src.String(), "dst", dst.String())
	conn := policy.Conn{IP: dst.Addr(), Port: dst.Port(), Transport: policy.TCP, IPLiteral: true}
	c.record(events.KindConnect, &Source{}, conn, deny(policy.ReasonUnknownSandbox, ruleUnknownSource+" ("+src.String()+")"), 0)
	return nil, false
}

// transparentTLS reads the ClientHello, judges its server name on port 443, and relays to
// an address the gateway resolved for that name itself: the address the client chose (the
// original destination) is never dialled. A refusal closes the connection: the proxy does
// not speak TLS, so it cannot answer one.
func (c *clientConn) transparentTLS(s *Source, dst netip.AddrPort) {
	c.cr.mode = modeRaw
	c.conn.SetReadDeadline(time.Now().Add(c.p.cfg.HandshakeTimeout))
	name, hello, err := sni.ServerName(c.br)
	c.conn.SetReadDeadline(time.Time{})
	var d policy.Decision
	host := ""
	switch {
	case err == nil:
		var nerr error
		if host, nerr = policy.NormalizeName(name); nerr != nil {
			d = deny(policy.ReasonBadName, "TLS server name "+clip(sanitize(name))+": "+nerr.Error())
		}
	case errors.Is(err, sni.ErrNoServerName):
		d = deny(policy.ReasonNoHost, ruleNoSNI)
	case len(hello) == 0 && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)):
		// The client left without a byte (an abandoned connect, a port probe), or shutdown:
		// no attempt to judge.
		return
	default:
		d = deny(policy.ReasonNotTLS, ruleTransparentTLS+": "+err.Error())
	}
	if d.Reason != "" {
		// Without a name, the record names the address the client chose: all there is.
		c.record(events.KindConnect, s, policy.Conn{IP: dst.Addr(), Port: dst.Port(), Transport: policy.TCP}, d, 0)
		c.p.log.Debug("transparent TLS refused", "vm", s.VMID, "dst", dst.String(), "reason", d.Reason, "rule", d.Rule)
		return
	}
	if dst.Port() == 443 && c.p.ix.intercepts(s, host) {
		c.interceptTLS(s, host, hello)
		return
	}
	// The connection is judged as the name on the original port: the dialer resolves the
	// name itself and dials only an address it judged. The client's chosen IP plays no part.
	conn := policy.Conn{Host: host, Port: dst.Port(), Transport: policy.TCP}
	// A refusal has no answer but the close, which finish does.
	c.tunnel(s, conn, "TLS "+host+" (to "+dst.String()+")", tunnelOps{
		refuse:      func(policy.Decision) {},
		unreachable: func(error) {},
		first: func(judged policy.Conn, d policy.Decision, _ *relay.Relay) ([]byte, policy.Conn, policy.Decision, error) {
			return hello, judged, d, nil
		},
	})
}

// transparentHTTP serves the requests of a connection to port 80 one by one, as the
// explicit proxy serves plain HTTP, each judged by its own Host; bound is the destination
// address when the policy allows it by address.
func (c *clientConn) transparentHTTP(s *Source, src netip.Addr, dst netip.AddrPort, bound *target) {
	for first := true; ; first = false {
		req, hdr, err := c.readRequest(first)
		if err != nil {
			if len(c.cr.rec) > 0 && !isTimeout(err) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) {
				d := deny(policy.ReasonBadRequest, "malformed request: "+err.Error())
				c.record(events.KindRequest, s, policy.Conn{IP: dst.Addr(), Port: dst.Port(), Transport: policy.TCP}, d, 0)
			}
			c.readFailed(err)
			return
		}
		if !first {
			// The source's VM may have gone, or another may have its address by now.
			var ok bool
			if s, ok = c.sandbox(src, dst); !ok {
				return
			}
		}
		if !c.forwardOrigin(req, hdr, s, dst.Port(), bound) {
			return
		}
	}
}

// forwardOrigin checks and judges one request on a redirected port-80 connection, or in a
// CONNECT tunnel to port 80, and forwards it on the explicit proxy's path. It reports
// whether the client connection can carry another request.
//
// bound, when set, is where the connection goes: the CONNECT's destination, or a
// redirected connection's address that allowed_cidrs opens. Bound to a name, a request
// must name it. Bound to an address, a request may name that address, or give no Host
// (the address is all there is to judge), or name a host, which is then judged at that
// address and reaches it (a name is judged wherever it is seen: denied_domains holds).
func (c *clientConn) forwardOrigin(req *http.Request, hdr []byte, s *Source, port uint16, bound *target) bool {
	t, other, d, ok := originTarget(req, hdr, port)
	if bound != nil {
		switch {
		case !ok && bound.host == "" && d.Reason == policy.ReasonNoHost:
			t, d, ok = *bound, policy.Decision{}, true
		case !ok:
		case bound.host == "" && t.host != "":
			t.pin = bound.ip
		case t != *bound:
			d, other, ok = deny(policy.ReasonHostMismatch, ruleConnectHost+" ("+bound.hostHeader(80)+"), not "+t.hostHeader(80)), t, false
		}
	}
	if !ok {
		conn := policy.Conn{Port: port, Transport: policy.TCP}
		what := req.Method + " " + clip(sanitize(req.RequestURI))
		if t.nameErr == nil && (t.host != "" || t.ip.IsValid()) {
			conn, what = t.conn(), req.Method+" http://"+t.hostHeader(80)+"/"
		}
		if od, denied := deniedName(s, other, port); denied {
			d, conn = od, policy.Conn{Host: other.host, Port: port, Transport: policy.TCP}
		}
		c.record(events.KindRequest, s, conn, d, 0)
		c.refuse(what, s, d)
		return false
	}
	return c.send(req, s, t, req.Method+" http://"+t.hostHeader(80)+"/")
}

// originTarget is the destination of a request on a redirected connection: its Host (or
// the host of an absolute http:// URL, which RFC 9112 lets any server get), on the port
// the connection went to. A request without a host, or whose Host names another port, is
// refused; so is CONNECT, which only the explicit proxy serves. other is the Host of a
// request refused for contradicting its URL.
func originTarget(req *http.Request, hdr []byte, port uint16) (t, other target, d policy.Decision, ok bool) {
	bad := func(detail string) (target, target, policy.Decision, bool) {
		return target{}, target{}, deny(policy.ReasonBadRequest, ruleTransparentReq+": "+detail), false
	}
	uri := req.RequestURI
	switch {
	case req.Method == http.MethodConnect:
		return bad("CONNECT is served by the explicit proxy only")
	case strings.HasPrefix(uri, "/"), uri == "*" && req.Method == http.MethodOptions:
		hosts, err := hostHeaders(hdr)
		switch {
		case err != nil:
			return bad(err.Error())
		case len(hosts) == 0:
			return target{}, target{}, deny(policy.ReasonNoHost, ruleNoHost), false
		case len(hosts) > 1:
			return bad("more than one Host header")
		}
		t, d, ok = originAuthority(hosts[0], port)
		return t, target{}, d, ok
	default:
		authority, err := absoluteAuthority(uri)
		if err != nil {
			return bad(strings.TrimPrefix(err.Error(), errBadTarget.Error()+": "))
		}
		if t, d, ok = originAuthority(authority, port); !ok {
			return t, target{}, d, ok
		}
		d, other, ok = checkHost(hdr, t)
		return t, other, d, ok
	}
}

// originAuthority parses a Host (or URL authority) for a connection to port.
func originAuthority(authority string, port uint16) (target, policy.Decision, bool) {
	t, err := parseAuthority(authority, port)
	switch {
	case err != nil:
		return target{}, deny(policy.ReasonBadRequest, strings.TrimPrefix(err.Error(), errBadTarget.Error()+": ")), false
	case t.nameErr != nil:
		return t, deny(policy.ReasonBadName, t.nameErr.Error()), false
	case t.port != port:
		return t, deny(policy.ReasonHostMismatch, ruleHostPort+" ("+itoa(int(port))+"), not "+itoa(int(t.port))), false
	}
	return t, policy.Decision{}, true
}
