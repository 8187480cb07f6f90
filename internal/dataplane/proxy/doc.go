// Package proxy is egressd's explicit proxy (DESIGN §4): an HTTP/1.1 proxy, with CONNECT,
// that a sandbox reaches through HTTP_PROXY and HTTPS_PROXY set to its session's proxy_url;
// and its transparent proxy, to which the gateway's firewall redirects a sandbox's TCP 80
// and 443 (see Transparent mode below). Every connection it opens for a client has been
// decided by the effective policy, dialled to an address the gateway resolved and judged
// itself, and is recorded.
//
// The explicit proxy is a convenience: a sandbox can ignore proxy variables, so it is not
// the security boundary (the transparent gateway is). It still never lets through what the
// policy denies, so that what a client sees through it is what the boundary will enforce.
//
// # Identity
//
// Every request, CONNECT or plain, carries Proxy-Authorization: Basic with
// base64(session_id:token), the credentials in the session's proxy_url; clients send them
// with every request once the proxy URL has them. Missing or wrong credentials, or those of
// an ended session, are answered 407 with Proxy-Authenticate: Basic realm="egressd", and
// the connection is closed. Each request is judged under the session its own credentials
// name, so one client connection cannot borrow another request's session.
//
// # HTTPS: CONNECT
//
// "CONNECT host:port" is served as follows.
//
//  1. The target is parsed strictly: host:port with a port; an IPv6 address in brackets;
//     no user information ("user@host"), percent-encoding, zone, path or space. A target
//     that is not well formed is a 400. The host goes through policy.NormalizeName, the
//     one normalisation of names, so "API.Example.com." and "api.example.com" are one
//     name, and an internationalised name is judged in its punycode form. An IP literal
//     ("192.0.2.1:443", "[2001:db8::1]:443", an IPv4-mapped form) is judged as an address,
//     which the policy allows only inside allowed_cidrs. A host that is neither an address
//     nor a valid name ("127.1", "exa_mple.com") is denied.
//  2. The dialer (package dialer) judges the name, and only if the name may pass resolves
//     it, judges every address it got and dials one the policy allows: a name never leads
//     to loopback, link-local, the gateway itself, or a private network outside
//     allowed_cidrs, whatever its DNS says. A denial is answered 403 with the headers
//     X-Egress-Decision: deny, X-Egress-Reason (a code of policy.Reasons, the one list) and
//     X-Egress-Rule, and a one-line body (events.Refusal's sentence) that says what
//     was denied, why, and what to change. A destination that was allowed but cannot be
//     reached is a 502 (504 on a timeout).
//  3. The proxy answers "200 Connection established". For port 443 with a name, it then
//     reads the client's TLS ClientHello (package sni, within HandshakeTimeout) and requires
//     its server name to be the CONNECT host, after NormalizeName: TLS without SNI, another
//     name, or something other than TLS is refused by closing the tunnel before a byte
//     reaches the destination. The ClientHello itself is passed on untouched: the proxy
//     does not terminate TLS. For an IP literal (any port but 80), and for a name on
//     a port other than 80 and 443 (which allowed_tcp or allowed_cidrs opens), a name is judged
//     wherever it is seen (DESIGN §4): the proxy looks at the client's first bytes while
//     the destination's already flow to the client (relay.RunAfter: a server that speaks
//     first is heard), and when they are a ClientHello with a server name, the tunnel is
//     judged again as {that name, the address dialled, the port} and recorded with the name; a
//     denial closes it before the ClientHello reaches the destination. TLS without a name,
//     and other protocols, stay judged by the address; bytes that begin as TLS but cannot
//     be read as a ClientHello are refused (see peekName).
//  4. The tunnel is relayed (package relay) between the two raw TCP connections, with
//     splice on Linux, until both sides end, IdleTimeout passes without a byte, or the
//     tunnel is cancelled.
//
// A CONNECT to port 80 carries HTTP, and is never relayed as raw bytes: after the 200 the
// proxy reads the requests inside one by one and serves each on the plain-HTTP path below
// (decided, recorded, forwarded on the upstream connection the CONNECT opened), and each
// must be for the CONNECT's host, in origin form with that Host or as an absolute URL to
// it; a request for another host is refused (policy.ReasonHostMismatch, or the policy's denial of
// the name it gives). The client may wait KeepAliveTimeout before its first request.
//
// # SOCKS5
//
// ServeSOCKS serves the same proxy on a SOCKS5 listener (RFC 1928; package socks5 reads and
// writes the protocol), for clients that are not HTTP: ssh, git over ssh, database
// clients. A SOCKS5 CONNECT is a CONNECT by another door: once its target is read, it
// takes the very path of a CONNECT (openTunnel), with a front that answers in SOCKS5
// replies instead of HTTP status lines. What is decided, dialled, checked, recorded and
// cut is the same; only these differ:
//
//   - Identity: the only method offered is username/password (RFC 1929), with the session
//     ID as the username and its token as the password (the session's socks_url,
//     socks5h://<session_id>:<token>@host:port). A client that does not offer it gets
//     "no acceptable method"; wrong or ended credentials get status 1 and a close, logged
//     and not recorded, as a 407 is. The greeting, the credentials and the request must
//     all arrive within HandshakeTimeout.
//   - The target: a name (ATYP 3) goes through policy.NormalizeName; an address (ATYP 1
//     or 4, an IPv4-mapped IPv6 one unmapped, or a name that is an address) is an IP
//     literal, judged as CONNECT judges one: only allowed_cidrs opens it. A name that is
//     neither is denied (bad_name). Only CONNECT is served: BIND and UDP ASSOCIATE (and
//     any other command) get "command not supported" (0x07) and a record with
//     policy.ReasonBadRequest; an unknown address type gets 0x08; other malformed bytes, a
//     close.
//   - Answers: every denial is "connection not allowed by ruleset" (0x02), whatever its
//     reason, which the record carries; an allowed destination that cannot be reached is
//     "host unreachable" (0x04: no address, no answer in time), "network unreachable"
//     (0x03), "connection refused" (0x05) or "general failure" (0x01). Success (0x00)
//     carries the local address of the gateway's connection to the destination (0.0.0.0:0
//     for an intercepted connection, whose upstream is dialled per request).
//   - After the success the tunnel is served as after a CONNECT's 200: name:443 must carry
//     a ClientHello naming the name (or is intercepted), name:80 is read as HTTP request by
//     request (whose refusals are HTTP 403s, as inside a CONNECT), and anything else is
//     relayed after peekName. Bytes the client sent before the reply go to the destination
//     after those checks.
//
// Records are the CONNECT's (events.KindConnect, then KindClose), without a field that
// tells the doors apart.
//
// # HTTP: absolute URLs
//
// A plain request ("GET http://host/path HTTP/1.1") is parsed with net/http's ReadRequest,
// request by request on a kept-alive client connection, and each request is judged on its
// own: a second request on the same connection to another host is decided anew.
//
//   - Only http:// absolute URLs are proxied. A request for a path on the proxy itself
//     ("GET /path") is a 400 that says to use an absolute URL; an https:// URL in a plain
//     request is a 400 that says to use CONNECT. User information in the URL is refused.
//   - A Host header that names another host or port than the URL is refused (403,
//     policy.ReasonHostMismatch): the destination must not be told one host while the policy
//     judged another. The name it gives is judged all the same, on the URL's port: when the
//     policy denies it, that denial is the answer and the record's.
//   - The URL's port is judged as any port: only 80 passes the web rules, other ports only
//     inside allowed_cidrs.
//   - The request goes to the server in origin form ("GET /path"), with Host set to the
//     URL's host, without hop-by-hop headers nor Proxy-Authorization. Bodies stream both
//     ways, never buffered whole: Content-Length, chunked, and responses that end when the
//     server closes (re-chunked for the client, whose connection is kept), however the
//     origin cuts its writes. Chunked trailers are dropped both ways: nothing judges them.
//     Interim responses (100 Continue) are passed on. Upgrade is not forwarded. A request
//     body whose chunks do not parse is a 400.
//   - The upstream connection is kept for the client's next request while that request
//     goes to the same host:port under the same session and the policy still allows it;
//     otherwise it is closed and another is dialled. A request without a body that fails
//     on a kept connection the server had closed is sent once more on a new one.
//   - "Connection: close" from the client, or an HTTP/1.0 client, ends the client
//     connection after the response. Every refusal closes it too.
//
// # Interception
//
// With Config.Interception, a host that the session's (transparent: the VM's) effective
// policy intercepts, http_rules and the tenant's secrets' domains together
// (policy.Effective.WithIntercepted), is never spliced (DESIGN §2.7). After CONNECT host:443
// the proxy answers 200, checks the ClientHello names host, and hands the connection to the
// intercept.Engine; the transparent proxy does the same on port 443 after reading the SNI.
// The engine reads the current policy per request (a change applies to the next request),
// looks secrets up in the book per request (a rotation too), and dials through the proxy's
// judged dialer with Conn.Intercepted. The connection counts against the cap and is tracked
// with Live: a policy that denies the host cuts it, and a watcher cuts it within
// Interception.Recheck once the host is no longer intercepted (its rule or secret gone).
// Plain HTTP to an intercepted host is decided per request with DecideRequest, and any
// plain-HTTP request carrying a placeholder is refused (secret_over_http). A connection by
// address whose ClientHello names an intercepted host still splices, so policy denies it
// (interception_unavailable).
//
// # Limits
//
// A session has at most MaxTunnelsPerSession connections through the proxy at once
// (tunnels and plain-HTTP upstream connections); one more is refused with 429. A request
// header must arrive within HandshakeTimeout (else 408, also when only part of its first
// line came) and fit in MaxHeaderBytes (else 431, wherever the limit falls); a client
// connection waits KeepAliveTimeout for its next request; a tunnel or an exchange in which
// nothing moves for IdleTimeout is closed.
//
// # Policy changes
//
// Every live connection is registered with its session (Live.Track) as the connection it
// was allowed as: the name, the address dialled, the port. A tunnel judged again by the
// name its first bytes show is registered as that name at the address too, and stays
// registered as what it was opened as (an address the client chose, say). When a new
// effective policy no longer allows one of them, or the session ends, the view cancels it
// and the proxy closes it at once: a transfer in progress is cut, not left to finish. An
// ended session allows nothing more: a tunnel's next request, or a SOCKS5 request sent
// after the credentials, is denied.
//
// # Records
//
// Every decision is one events.Record: KindConnect for a CONNECT and for each upstream
// connection a plain request opens, KindRequest for each plain request; refusals of the
// proxy's own (a bad request, a contradicting Host, the wrong SNI, the tunnel cap) are
// denials too. In monitor mode the policy answers allow with WouldDeny: traffic flows and
// the record says would_deny. Every allowed KindConnect is followed by exactly one
// KindClose when the connection ends, a failed dial included, with the bytes each way,
// the duration and the reason ("eof", "idle", "error", "policy", "session ended",
// "shutdown").
//
// # Transparent mode
//
// ServeTransparent serves the gateway's transparent proxy (Linux, root): nftables
// redirects ("redirect to :port") TCP 80 and 443 from sandbox interfaces to its listener,
// and the sandbox needs no proxy settings. It reuses the explicit proxy's decision, dial
// and relay path unchanged; what differs is how a connection says who and where.
//
//   - Where: the original destination is read from the socket (getsockopt
//     SO_ORIGINAL_DST, or IP6T_SO_ORIGINAL_DST for IPv6; Config.OriginalDst in tests). A
//     connection that was not redirected (its original destination is the listener, or
//     conntrack has none) is closed without a record: it is no sandbox's attempt.
//   - Who: the source address is a VM's (Config.Sandboxes; SandboxesFromView). The VM's
//     policy AND every open session's on it decide (DESIGN §2.4): the sandbox's sessions
//     share its network and cannot be told apart. There is no Proxy-Authorization. A source
//     that is no VM's is closed, and recorded as a denial (policy.ReasonUnknownSandbox) without a
//     tenant. On port 80 the VM is looked up again for every request.
//   - Port 443: the proxy reads the ClientHello (package sni, within HandshakeTimeout),
//     normalises its server name with policy.NormalizeName and judges {name, 443, TCP}.
//     TLS without SNI (policy.ReasonNoHost), an invalid name, or something other than TLS
//     is refused. The proxy cannot speak TLS, so every refusal on 443 is a close: the
//     client sees its handshake fail. The ClientHello is passed on untouched.
//   - Port 80: requests are read one by one as in the explicit proxy, in origin form
//     ("GET /path" with Host); an absolute http:// URL is served too, by its host, with a
//     Host that must match it. Each request is judged by its Host on the connection's port,
//     after NormalizeName; a kept-alive switch to another Host is decided anew and its
//     upstream redialled. No Host is a denial (policy.ReasonNoHost, "HTTP without a host");
//     a Host naming another port than the one the connection went to is refused
//     (policy.ReasonHostMismatch); CONNECT is a 400. Refusals are the explicit proxy's 403 (or
//     400) with X-Egress-Decision and X-Egress-Reason, and a one-line body naming the VM.
//     Requests stream on the explicit proxy's code, upstream connections kept alike.
//   - Another original port should never arrive (the firewall redirects only 80 and 443):
//     it is recorded as a denial (policy.ReasonPort) and closed.
//
// The client's chosen address is never dialled, unless the policy allows that address
// itself (below). On both ports the connection is judged as the name the client sent, and
// the dialer resolves that name itself and dials only an address it judged: an allowed
// name sent to another address reaches the name's address, not the other one. This
// defeats domain fronting through a chosen IP (SNI "allowed.example" sent to an unrelated
// server) and DNS tricks alike, and a redirected connection to the metadata address or
// the gateway with an allowed Host goes to the Host's real address, never to them.
//
// The firewall redirects TCP 80 and 443 to destinations inside allowed_cidrs too, so that
// a name seen on them is judged (DESIGN §4: denied_domains holds wherever a name is seen).
// Such a connection, whose original destination the policy allows by its address (every
// enforcing layer's allowed_cidrs), goes to that address, as the kernel would have routed
// it: on 443 the proxy relays it as a CONNECT to an address is relayed (peekName: a TLS
// server name is judged at the address; TLS without one, or another protocol, passes on
// the address's decision); on 80 each request's Host is judged at the address and the
// request reaches it (no Host, or the address itself: the address's decision; another
// address: policy.ReasonHostMismatch).
//
// Records, tracking (Live.Track: a new effective policy, or the VM's deletion, cuts a
// live connection) and timeouts are the explicit proxy's, with SessionID empty and VMID
// set; a denial without a name (no SNI, not TLS) names the original destination's address.
// MaxTunnelsPerSession caps each VM's connections, apart from its sessions' in the
// explicit proxy. TLS without SNI and HTTP without Host are refused in monitor mode too:
// with no name the gateway would have to dial the address the client chose.
package proxy
