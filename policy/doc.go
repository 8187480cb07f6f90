// Package policy is egressd's policy language: the rule set that says which outbound
// connections and DNS queries a sandbox may make, how it is validated, compiled and combined,
// and how one attempt is decided. It is the contract of DESIGN §2, and the one place where
// that contract is implemented: the API, the explicit proxy, the transparent proxy, the DNS
// filter and the check endpoint all decide through it, so they cannot disagree.
//
// # Policies
//
// A Policy has nine fields, by their JSON names:
//
//   - allow_https, allow_http: outbound HTTPS on TCP 443, HTTP on TCP 80, to a host name;
//   - allowed_domains: if non-empty, the only hosts those flags reach; if empty, any public
//     host. "example.com" matches only example.com; "*.example.com" matches every name under
//     example.com, at any depth, and not example.com itself;
//   - allow_package_managers: the registries of the package-manager Preset, on 80 and 443,
//     whatever the two flags and allowed_domains say;
//   - allowed_cidrs: destinations inside these ranges are allowed on every port, TCP and UDP;
//   - denied_domains: never allowed, whatever else allows them;
//   - mode: "enforce" (the default) or "monitor", which records would-be denials and lets
//     the traffic through;
//   - allowed_tcp: "name:port" endpoints for TCP that is not web ("github.com:22",
//     "*.db.example.com:5432"), whatever the web flags say, at a public address or one inside
//     allowed_cidrs; the names get DNS answers. No IP literals: those belong in allowed_cidrs;
//   - http_rules: per-domain method and path rules (HTTPRule). A domain that an entry names
//     is intercepted: each HTTP request to it is decided (DecideRequest).
//
// Parse decodes a policy strictly (an unknown field is an error: a typo must not silently
// mean "deny nothing") and Normalize validates it: names go through NormalizeName, the one
// normalisation of host names, used for policy entries and for traffic alike (IDNA to
// punycode, lower case, one trailing dot dropped); CIDRs through ParseCIDR. Errors are
// *FieldError, naming the field ("allowed_cidrs[1]") and saying how to fix it. Normalize
// also returns warnings for a policy that is valid but probably not meant.
//
// # Decisions
//
// Compile turns a policy into an immutable Matcher. An Effective combines the Classifier (the
// operator's address classes) with one or more layers: the session's policy and its VM's
// (in transparent mode, the VM's and every open session's on it), or the operator's default
// policy when neither is set. Effective.Decide judges a connection attempt in this order:
//
//  1. Hard deny, whatever any policy or mode says: loopback, link-local (so every cloud
//     metadata endpoint), multicast, broadcast, unspecified addresses, egressd's own
//     addresses, the operator's list, and IPv6 forms that embed such an IPv4 address.
//  2. CIDR allow: a destination inside allowed_cidrs is allowed on any port and transport.
//  3. Web allow, TCP 80 or 443 with a host name only: denied_domains deny; the web flag of
//     the port allows a host that allowed_domains matches (any host if it is empty); with
//     allow_package_managers, the preset's hosts are allowed on both ports. The address the
//     gateway resolved must then be public, or inside allowed_cidrs: a name never leads
//     into a private network.
//  4. TCP by name to an allowed_tcp endpoint (name:port), whatever the web flags say, at an
//     address that is public or inside allowed_cidrs (DESIGN §2.6).
//  5. Everything else is denied: other ports, UDP, ICMP, IP literals, TLS without SNI.
//
// denied_domains win wherever a host name is seen, allowed_cidrs included. Each layer
// decides on its own and the decision is their AND: the more restrictive layer wins, and a
// monitor layer never loosens an enforce layer. An Effective with no layer denies everything.
//
// Effective.DecideQuery judges a DNS query: only A and AAAA are answered, for a name that every
// layer could allow (allowed_domains or allowed_tcp, whatever the web flags say, which is how internal
// services are reached by name; the preset; any name when a web flag is on with an empty
// allowed_domains). Effective.KeepAnswer filters the addresses of an answer.
//
// A Decision carries a Reason from a small fixed set (the Reason constants, fit for metrics
// labels), a Rule with the detail ("allowed_domains *.example.com", "loopback 127.0.0.0/8")
// and the Layer that decided. Decisions do not allocate: the data path compiles an Effective once
// per policy change, publishes it through an atomic.Pointer, and reads it without locks.
//
// # Requests to intercepted hosts
//
// Effective.Intercepts says whether connections to a host must be intercepted: an
// http_rules entry of some layer names it, or the extra domains given by WithIntercepted (a
// tenant's secrets, CompileDomains) do. Effective.DecideRequest judges one HTTP request
// inside such a connection: its host as for a connection, then, in every layer that has
// entries for the host, some entry of that layer must allow its method and path. The path is
// percent-decoded and its dot segments resolved (RFC 3986 §5.2.4) before prefixes are
// compared on segment boundaries, and a path that servers read two ways must be allowed in
// both readings (see NormalizeRulePath and docs/policy.md). Decide denies a connection on
// port 80 or 443 to an intercepted host with interception_unavailable unless the caller
// sets Conn.Intercepted, promising to decide its requests: a path that would splice it cannot
// let them through undecided.
//
// Explain renders the effective policy of a session for people: each field's effective
// value and the layers it comes from, with notes on the interplay.
//
// # Example
//
//	p, warnings, err := policy.Parse([]byte(`{"allow_https": true, "allowed_domains": ["*.example.com"]}`))
//	if err != nil {
//		return err // a *policy.FieldError, for the API's 400 answer
//	}
//	m, err := policy.Compile(p, nil) // nil: the built-in package-manager preset
//	if err != nil {
//		return err
//	}
//	set := policy.NewSet(&policy.Classifier{}, policy.Layered{Layer: policy.LayerSession, Matcher: m})
//	host, _ := policy.NormalizeName("API.Example.com.")
//	d := set.Decide(policy.Conn{IP: resolved, Port: 443, Transport: policy.TCP, Host: host})
//	// d.Allow == true, d.Reason == "allowed_domains", d.Rule == "allowed_domains *.example.com"
package policy
