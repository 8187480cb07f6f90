package policy_test

import (
	"fmt"
	"net/netip"

	"github.com/egressd/egressd/policy"
)

func Example() {
	p, warnings, err := policy.Parse([]byte(`{"allow_https": true, "allowed_domains": ["*.Example.com"]}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.AllowedDomains, len(warnings))

	m, err := policy.Compile(p, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	// A lab classifier: 203.0.113.0/24 plays the public internet.
	c := &policy.Classifier{Public: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}
	set := policy.NewEffective(c, policy.Layered{Layer: policy.LayerSession, Matcher: m})

	host, _ := policy.NormalizeName("API.Example.com.")
	resolved := netip.MustParseAddr("203.0.113.10")
	fmt.Printf("%+v\n", set.Decide(policy.Conn{IP: resolved, Port: 443, Transport: policy.TCP, Host: host}))
	fmt.Printf("%+v\n", set.Decide(policy.Conn{IP: resolved, Port: 80, Transport: policy.TCP, Host: host}))
	fmt.Printf("%+v\n", set.Decide(policy.Conn{IP: netip.MustParseAddr("10.0.0.5"), Port: 443, Transport: policy.TCP, Host: host}))
	fmt.Printf("%+v\n", set.DecideQuery(policy.Query{Name: host, Type: policy.QTypeHTTPS}))
	// Output:
	// [*.example.com] 0
	// {Allow:true WouldDeny:false Reason:allowed_domains Rule:allowed_domains *.example.com Layer:session Mode:enforce}
	// {Allow:false WouldDeny:false Reason:http_off Rule:allow_http is off Layer:session Mode:enforce}
	// {Allow:false WouldDeny:false Reason:not_public Rule:the address is not public and not in allowed_cidrs Layer:session Mode:enforce}
	// {Allow:false WouldDeny:false Reason:query_type Rule:HTTPS: refused so that clients keep a readable SNI (no ECH); only A and AAAA are answered Layer:hard Mode:enforce}
}

func ExampleExplain() {
	session := policy.NamedPolicy{Layer: policy.LayerSession, Policy: policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"*.a.example"}}}
	vm := policy.NamedPolicy{Layer: policy.LayerVM, Policy: policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"x.a.example", "b.example"}}}
	e := policy.Explain(nil, session, vm)
	fmt.Println(e.AllowedDomains.Hosts, e.AllowedDomains.Value, e.AllowedDomains.From)
	// Output: listed [x.a.example] [session vm]
}

// The interception engine asks about each request; the gateway's other paths, which would
// splice the connection, are refused until they hand it to the engine.
func ExampleEffective_DecideRequest() {
	p := policy.Policy{AllowHTTPS: true, HTTPRules: []policy.HTTPRule{
		{Domain: "api.example.com", Methods: []string{"GET", "POST"}, Paths: []string{"/v1/"}},
	}}
	m, err := policy.Compile(p, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	set := policy.NewEffective(nil, policy.Layered{Layer: policy.LayerSession, Matcher: m})
	fmt.Println(set.Intercepts("api.example.com"), set.Intercepts("www.example.com"))
	for _, r := range []policy.Request{
		{Host: "api.example.com", Port: 443, Method: "POST", Path: "/v1/chat?stream=1"},
		{Host: "api.example.com", Port: 443, Method: "DELETE", Path: "/v1/files/1"},
		{Host: "api.example.com", Port: 443, Method: "GET", Path: "/v1/%2e%2e/admin"},
	} {
		d := set.DecideRequest(r)
		fmt.Println(d.Allow, d.Reason, d.Rule)
	}
	d := set.Decide(policy.Conn{Host: "api.example.com", Port: 443, Transport: policy.TCP})
	fmt.Println(d.Allow, d.Reason)
	d = set.Decide(policy.Conn{Host: "api.example.com", Port: 443, Transport: policy.TCP, Intercepted: true})
	fmt.Println(d.Allow, d.Reason)
	// Output:
	// true false
	// true http_rules http_rules[0] api.example.com methods GET,POST paths /v1/
	// false method_not_allowed http_rules[0] api.example.com methods GET,POST paths /v1/
	// false path_not_allowed http_rules[0] api.example.com methods GET,POST paths /v1/
	// false interception_unavailable
	// true allow_https
}
