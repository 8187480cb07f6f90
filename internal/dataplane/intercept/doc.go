// Package intercept serves one intercepted TLS connection (DESIGN §2.7): it terminates the
// sandbox's TLS with a certificate of egressd's CA, decides every HTTP request inside on its
// host, method and path, puts the tenant's secrets in place of their placeholders toward
// the secrets' own hosts only, and forwards each allowed request to the origin over TLS
// verified against the operator's roots, streaming both ways.
//
// A domain that nothing intercepts is never decrypted: the proxies keep SNI-peek and
// splice for it (package relay). This package is what they call instead, for the one
// connection, once they have judged its TLS server name and chosen to intercept it.
//
// # Entry point
//
// One Engine serves every intercepted connection of the gateway. The caller (the explicit
// proxy after a CONNECT to port 443 whose ClientHello it peeked, or the transparent proxy
// on port 443) hands it one connection at a time:
//
//	c := &intercept.Conn{
//		Client:  tc,      // the sandbox's connection
//		Prefix:  hello,   // the bytes already read from it (the ClientHello, and any after)
//		SNI:     name,    // the server name, in policy.NormalizeName form, judged allowed
//		Source:  src,     // whom the records are about
//		Policy:  pol,     // decides each request; read per request (live)
//		Secrets: secrets, // the tenant's secrets, or nil
//		Dialer:  dial,    // the caller's judged dialer: resolves the name itself
//	}
//	untrack := live.Track(policy.Conn{Host: name, Port: 443}, c.Cancel)
//	res := engine.Serve(ctx, c) // returns when the connection has ended
//	untrack()
//
// Serve owns the connection from the call on and closes it before it returns. The
// ClientHello must not have been consumed from the caller's point of view: Prefix replays
// it, so TLS starts where the sandbox started it. Result says how the connection ended, with
// the bytes each way on the sandbox's side, for the caller's close record.
//
// Wiring, for both proxies: the caller decides to intercept once it has judged the name
// (a domain named by http_rules or by a secret), and then dials nothing itself: the engine
// dials per request. After a CONNECT to name:443 the explicit proxy answers "200
// Connection established", reads the ClientHello (package sni) and checks its name is
// the CONNECT's, and passes Prefix = the ClientHello and whatever its reader buffered
// after it. The transparent proxy passes the ClientHello it peeked on port 443. Either
// records the connection's decision (events.KindConnect, allowed for the name) before, and
// its events.KindClose from Result after, tracks it with Live.Track(policy.Conn{Host:
// name, Port: 443}, c.Cancel), and counts it against the sandbox's connection cap. On
// plain HTTP (port 80, and CONNECT name:80) it refuses a request for which SecretsIn finds
// a placeholder (secret_over_http).
//
// # What the caller implements
//
//   - Certs: Leaf(name) returns the certificate for the name, minted by the CA (cached by
//     the caller). The ClientHello's server name must be the SNI the caller judged.
//   - Policy: DecideRequest(host, method, path) decides one request. It is called for every
//     request, so an implementation that reads the current effective policy each time
//     (view.Session.Effective) applies a policy change to the next request on a kept-alive
//     or multiplexed connection. Monitor mode is the policy's business: an allow with
//     WouldDeny is forwarded and recorded as such.
//   - Secrets: Lookup(placeholder, host) finds a secret by its placeholder, says whether the
//     host is one of the secret's domains, and only then gives its value. It is called per
//     request too: a rotated value applies to the next request.
//   - Dialer: Dial(ctx, host, 443) connects to the origin. It is the caller's judged dialer
//     (package dialer): it resolves the name itself and dials only an address the policy
//     allows. A refusal is returned as a *DeniedError carrying the policy's decision, which
//     the sandbox gets as a 403. The engine never resolves a name.
//   - Sink: Request(Record) takes one decision record per request.
//
// Every interface is called from many goroutines at once (HTTP/2 serves requests
// concurrently): implementations must be safe for concurrent use and must not block.
//
// # Each request
//
// Requests are read by net/http's server: HTTP/1.1 with kept-alive connections, and HTTP/2
// when the client offers it in ALPN (the engine offers "h2" and "http/1.1"). Each request
// is served in this order; the first refusal is the answer, and nothing goes upstream.
//
//  1. Host. The Host header (HTTP/1.1; an absolute URL's host wins, as net/http reads it) or
//     :authority (HTTP/2), without a port or with port 443, after policy.NormalizeName, must
//     be the SNI. Anything else (another name, another port, an address, no valid name) is
//     a 421 Misdirected Request (policy.ReasonHostMismatch): the client may send it on a
//     connection of its own, whose name will be judged.
//  2. Path. The path is decided as the origin will read it: percent-decoded once, with dot
//     segments resolved ("/a/./b/../c" is "/a/c"; "%2e%2e" and "..;x" are dot segments too).
//     The request goes upstream with the dot segments already resolved, so the origin
//     cannot climb out of what was decided. A dot segment hidden behind an encoded slash or
//     a backslash ("/a%2f..%2fb", "/a/..\b") is refused (400, bad_request): origins disagree
//     on what it means. The query is never decided on, and goes up as it came.
//  3. CONNECT inside the connection is refused (400, bad_request).
//  4. Policy.DecideRequest(SNI, method, path), path as it goes up (escaped as sent, dot
//     segments resolved): the policy decodes it once itself. A denial is a 403 with X-Egress-Decision:
//     deny, X-Egress-Reason (a code of policy.Reasons), X-Egress-Rule, and a one-line body,
//     the shape of the explicit proxy's refusals.
//  5. Secrets. Every header value that contains PlaceholderPrefix is scanned; each
//     placeholder found (see Placeholders below) is looked up. A placeholder of a secret
//     whose domains do not match the host denies the whole request (403,
//     ReasonSecretNotForHost): neither the placeholder nor anything else reaches the origin.
//     The path (as sent and decoded) and the query (likewise) are searched too, for such
//     placeholders only, and so is the request's trailer when the body ends (the request
//     is then ended before the trailer goes up, and answered 403). The body is not.
//     Otherwise each placeholder is replaced by its secret's value, in the header values
//     only: never in header names, the path, the query or the body.
//  6. Forward, below. An answer's header values and trailers (and 103 hints, and a 502's
//     message quoting the transport's error) are searched for the values put in on the
//     connection so far, by any of its requests (of 8 bytes or more; a Basic credential
//     also as encoded), which go back to their placeholders: an origin that echoes a key
//     it got (an error message, a debugging endpoint, a redirect) does not hand it to the
//     sandbox that way. The body is not searched: an origin that writes the
//     key into a body hands it over.
//
// # Forwarding
//
// Each client connection gets its own upstream connections, dialled through its own Dialer
// (so one sandbox's requests never ride another's connection, and cutting the client
// connection cuts them), to the SNI on port 443, with TLS verified against Config.RootCAs
// (the system's roots and --upstream-ca-file, built by the caller) for the SNI. A
// verification failure is a 502 that says so; an unreachable origin is a 502 (504 on a
// timeout, or an origin that sends nothing for IdleTimeout). An HTTP/1.1 client gets
// HTTP/1.1 upstream; an HTTP/2 client gets HTTP/2 when the origin offers it, else
// HTTP/1.1 (several connections, at most MaxUpstreamConns).
//
// The request goes up with Host (and :authority) set to the SNI, hop-by-hop headers
// removed (those of RFC 9110 §7.6.1 and those the Connection header names; "TE: trailers"
// is kept), and nothing added: no X-Forwarded-For (the origin has no use for a sandbox's
// private address, and the sandbox's own headers go up untouched), no Via, no default
// User-Agent, no Accept-Encoding (bodies are passed as they are, never decompressed).
// Bodies stream both ways and are never buffered whole: the request body is read as the
// origin takes it, and each piece of the response is flushed to the client as it arrives.
// Trailers pass both ways. Interim responses (103 Early Hints) are passed on; 100 Continue
// is the client-side server's own. An upstream body that breaks off mid-way aborts the
// client's response (HTTP/1.1: the connection closes; HTTP/2: the stream is reset), so the
// client never takes a cut body for a whole one.
//
// A WebSocket Upgrade request from an HTTP/1.1 client is decided like any request and
// then forwarded (any other Upgrade, h2c above all, is dropped from the request: after a
// switch the bytes are opaque, and HTTP/2 inside them would carry requests nothing
// decides); when the origin answers 101 the engine passes the 101 on and copies raw
// bytes both ways until the origin's side ends (or the connection is cut). HTTP/2's
// extended CONNECT (RFC 8441) is not served.
//
// # Placeholders
//
// A placeholder is PlaceholderPrefix, the secret's name and "-" and 24 letters or digits
// (DESIGN §2.7: "egressd-secret-<name>-<24 random base32 chars>"). Only header values that
// contain the prefix cost anything beyond one substring search. A candidate runs from the
// prefix over letters, digits, '-', '_' and '.'; since a name may contain '-' and a
// placeholder may be followed directly by such characters, every end within that run that
// is "-" and 24 letters or digits is tried, longest first, and the first known placeholder
// wins. A string that looks like a placeholder but is none is left as it is. An
// "Authorization: Basic" value is also decoded (base64) and scanned, and re-encoded if a
// placeholder was replaced, so that user:placeholder credentials (git, pip) work.
//
// # Records
//
// Every request is one Record: an events.Record of kind events.KindRequest (host = SNI,
// port 443, the decision with its reason, rule, layer and mode, the request and response
// body bytes, the duration) and the method, the decided path (no query), the status sent,
// and the names of the secrets applied (or refused). A secret's value is never in a
// record, a log line, an error or a response; nor is any header value. Records of requests
// cut in flight say why in Ended.
//
// # Limits and timeouts
//
// A request header is bounded by MaxHeaderBytes (431 beyond, HTTP/1.1; HTTP/2 refuses it
// by its SETTINGS_MAX_HEADER_LIST_SIZE) and must arrive within HandshakeTimeout, as must
// the TLS handshake. A connection waits KeepAliveTimeout for its next request (HTTP/1.1)
// or closes after that long without a stream (HTTP/2). There is no bound on the number of
// requests per connection. In an exchange, a client that sends no byte of its body for
// IdleTimeout gets a 408; an origin that sends nothing for IdleTimeout ends the exchange
// (a 504 before its answer, an aborted response after); a client that takes nothing for
// IdleTimeout loses its connection. A request whose client left, or whose connection was
// cut, is aborted, never answered. An upgraded stream ends when the origin sends nothing for
// IdleTimeout, whatever the client sends.
// HTTP/2: at most MaxConcurrentStreams streams per connection, 1 MiB flow-control windows
// (per stream and per connection), and a connection that cannot write a byte for
// IdleTimeout is closed.
//
// # Ending a connection
//
// Conn.Cancel(reason), from any goroutine, before or during Serve, closes the client
// connection and every upstream connection it opened, and ends every request in flight on
// it (their upstream requests are cancelled): a policy that tightens cuts at once, as for
// a relayed tunnel. Cancelling Serve's context does the same with the reason
// ReasonShutdown, and so does Engine.Close for every connection. Serve returns only when
// every goroutine it started for the connection has ended.
package intercept
