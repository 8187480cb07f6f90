package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// withRules allows HTTPS and HTTP to *.example.test, and names api.example.test in
// http_rules: its requests are to be decided one by one.
var withRules = policy.Policy{
	AllowHTTPS: true, AllowHTTP: true, AllowedDomains: []string{"*.example.test"},
	HTTPRules: []policy.HTTPRule{{Domain: "api.example.test", Methods: []string{"GET"}, Paths: []string{"/"}}},
}

// TestHTTPRulesDenyUntilIntercepted: until the proxy intercepts, a host that http_rules name
// is refused on every path that would splice or relay it undecided (CONNECT to 443 and 80,
// plain HTTP, the transparent proxy by SNI), with interception_unavailable; nothing else
// changes, and a policy change that adds a rule cuts the tunnels to that host.
func TestHTTPRulesDenyUntilIntercepted(t *testing.T) {
	e := newEnv(t, withRules)
	for _, request := range []string{
		"CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443",
		"CONNECT API.Example.test.:443 HTTP/1.1\r\nHost: api.example.test:443",
		"CONNECT api.example.test:80 HTTP/1.1\r\nHost: api.example.test:80",
		"GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test",
	} {
		c, br := e.dial()
		resp, body := e.roundTrip(c, br, request+"\r\nProxy-Authorization: "+e.authHeader()+"\r\n\r\n")
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Egress-Reason") != string(policy.ReasonInterceptionUnavailable) {
			t.Errorf("%s: %s, reason %q (%s)", strings.SplitN(request, "\r\n", 2)[0], resp.Status, resp.Header.Get("X-Egress-Reason"), body)
		}
		if rule := resp.Header.Get("X-Egress-Rule"); !strings.HasPrefix(rule, "http_rules[0] api.example.test") {
			t.Errorf("X-Egress-Rule %q does not name the entry", rule)
		}
	}
	// Another host is spliced as before.
	resp, err := e.client().Get("https://other.example.test/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("other.example.test: %s", resp.Status)
	}
	for _, h := range e.web.seen() {
		if strings.Contains(h, "api.example.test") {
			t.Errorf("the intercepted host was reached: %s", h)
		}
	}

	// A tunnel that a new rule would intercept is cut, as any tightening.
	c := e.client()
	resp, err = c.Get("https://other.example.test/slow?n=500")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	tightened := withRules
	tightened.HTTPRules = append(tightened.HTTPRules, policy.HTTPRule{Domain: "other.example.test"})
	cut := time.Now()
	e.live.publish(set(t, tightened))
	n, _ := io.Copy(io.Discard, resp.Body)
	if d := time.Since(cut); d > time.Second || n >= 500*1024-4096 {
		t.Errorf("transfer went on for %v (%d bytes) after a rule named the host", d, n)
	}
	e.sink.wait(t, "close by policy", func(r events.Record) bool { return r.Kind == events.KindClose && r.CloseReason == "policy" })
}

func TestTransparentHTTPRulesDenyUntilIntercepted(t *testing.T) {
	te := newTransparentEnv(t, withRules)
	addr := te.listen(webIP + ":443")
	if _, err := te.tlsGet(addr, "api.example.test", "/"); err == nil {
		t.Error("the handshake with an intercepted host succeeded")
	}
	r := te.sink.wait(t, "denial", func(r events.Record) bool { return r.Reason == policy.ReasonInterceptionUnavailable })
	if r.Decision != "deny" || r.Host != "api.example.test" {
		t.Errorf("record %+v", r)
	}
	resp, err := te.tlsGet(addr, "other.example.test", "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("other.example.test: %s", resp.Status)
	}
	for _, h := range te.web.seen() {
		if strings.Contains(h, "api.example.test") {
			t.Errorf("the intercepted host was reached: %s", h)
		}
	}
}
