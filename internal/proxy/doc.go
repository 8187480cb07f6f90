// Package proxy is egressd's explicit proxy (DESIGN §4): an HTTP/1.1 proxy, with CONNECT,
// that a sandbox reaches through HTTP_PROXY and HTTPS_PROXY set to its session's proxy_url.
// Every connection it opens for a client has been decided by the session's effective
// policy, dialled to an address the gateway resolved and judged itself, and is recorded.
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
//     X-Egress-Decision: deny, X-Egress-Reason (one of the policy's Reason strings, or the
//     proxy's own Reason constants) and X-Egress-Rule, and a one-line body that says what
//     was denied, why, and what to change. A destination that was allowed but cannot be
//     reached is a 502 (504 on a timeout).
//  3. The proxy answers "200 Connection established". For port 443 with a name, it then
//     reads the client's TLS ClientHello (package sni, within HandshakeTimeout) and requires
//     its server name to be the CONNECT host, after NormalizeName: TLS without SNI, another
//     name, or something other than TLS is refused by closing the tunnel before a byte
//     reaches the destination. The ClientHello itself is passed on untouched: the proxy
//     does not terminate TLS.
//  4. The tunnel is relayed (package relay) between the two raw TCP connections, with
//     splice on Linux, until both sides end, IdleTimeout passes without a byte, or the
//     tunnel is cancelled.
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
//     "Host header does not match the URL"): the destination must not be told one host
//     while the policy judged another.
//   - The URL's port is judged as any port: only 80 passes the web rules, other ports only
//     inside allowed_cidrs.
//   - The request goes to the server in origin form ("GET /path"), with Host set to the
//     URL's host, without hop-by-hop headers nor Proxy-Authorization. Bodies stream both
//     ways, never buffered whole: Content-Length, chunked (with trailers), and responses
//     that end when the server closes (re-chunked for the client, whose connection is
//     kept). Interim responses (100 Continue) are passed on. Upgrade is not forwarded.
//   - The upstream connection is kept for the client's next request while that request
//     goes to the same host:port under the same session and the policy still allows it;
//     otherwise it is closed and another is dialled. A request without a body that fails
//     on a kept connection the server had closed is sent once more on a new one.
//   - "Connection: close" from the client, or an HTTP/1.0 client, ends the client
//     connection after the response. Every refusal closes it too.
//
// # Limits
//
// A session has at most MaxTunnelsPerSession connections through the proxy at once
// (tunnels and plain-HTTP upstream connections); one more is refused with 429. A request
// header must arrive within HandshakeTimeout and fit in MaxHeaderBytes; a client
// connection waits KeepAliveTimeout for its next request; a tunnel or an exchange in which
// nothing moves for IdleTimeout is closed.
//
// # Policy changes
//
// Every live connection is registered with its session (Live.Track) as the connection it
// was allowed as: the name, the address dialled, the port. When a new effective policy no
// longer allows it, or the session ends, the view cancels it and the proxy closes it at
// once: a transfer in progress is cut, not left to finish.
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
package proxy
