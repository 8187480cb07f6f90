package proxy

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// namesPolicy opens webIP by allowed_cidrs, and denies one name.
var namesPolicy = policy.Policy{
	AllowHTTPS: true, AllowHTTP: true,
	AllowedDomains: []string{"api.example.test", "other.example.test"},
	DeniedDomains:  []string{"secret.example.test"},
	AllowedCIDRs:   []string{webIP + "/32"},
}

// helloSender sends a TLS client's first flight through an open tunnel and reports
// whether the server answered.
type helloSender func(t *testing.T, e *env, c net.Conn) bool

// handshake is a whole crypto/tls handshake with server name sni ("" sends none).
func handshake(sni string) helloSender {
	return func(t *testing.T, e *env, c net.Conn) bool {
		cfg := &tls.Config{ServerName: sni, RootCAs: e.ca.Pool, InsecureSkipVerify: true}
		return tls.Client(c, cfg).Handshake() == nil
	}
}

// rawHello writes hello in pieces of at most size bytes, pausing between them, so that it
// reaches the proxy in several TCP segments, and reads the server's first byte.
func rawHello(hello func(t *testing.T) []byte, size int) helloSender {
	return func(t *testing.T, _ *env, c net.Conn) bool {
		b := hello(t)
		for len(b) > 0 {
			k := min(size, len(b))
			if _, err := c.Write(b[:k]); err != nil {
				return false
			}
			b = b[k:]
			time.Sleep(5 * time.Millisecond)
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		first := make([]byte, 1)
		_, err := io.ReadFull(c, first)
		return err == nil && first[0] == 0x16 // a ServerHello's record
	}
}

func helloFor(name string) func(t *testing.T) []byte {
	return func(t *testing.T) []byte { return testnet.ClientHello(t, &tls.Config{ServerName: name}) }
}

// dottedHello has the server name "secret.example.test.", which crypto/tls never sends
// (it drops a trailing dot): it is written over a name of the same length.
func dottedHello(t *testing.T) []byte {
	b := testnet.ClientHello(t, &tls.Config{ServerName: "secret.example.tesx"})
	return bytes.Replace(b, []byte("secret.example.tesx"), []byte("secret.example.test."), 1)
}

// alertFirst puts a TLS warning alert record before the ClientHello of secret.example.test:
// crypto/tls servers skip such an alert before the handshake, so the server reads the name.
func alertFirst(t *testing.T) []byte {
	return append([]byte{0x15, 0x03, 0x01, 0x00, 0x02, 0x01, 0x5a}, helloFor("secret.example.test")(t)...)
}

// oldRecordVersion is the ClientHello of secret.example.test in a record whose version is
// 0x0101: crypto/tls servers accept any version below 0x1000 in the first record.
func oldRecordVersion(t *testing.T) []byte {
	b := helloFor("secret.example.test")(t)
	b[1], b[2] = 0x01, 0x01
	return b
}

// After a CONNECT to an address that allowed_cidrs opens, the TLS server name is judged as
// that name at that address, on 443 and on any other port, over IPv4 and IPv6: a denied
// name is refused before the server sees its ClientHello, and the record names it.
func TestNameAfterConnectToAddress(t *testing.T) {
	e := newEnv(t, namesPolicy)
	targets := []string{
		webIP + ":443",
		e.web.serve(webIP+":0", true), // another port inside allowed_cidrs
		"[::ffff:" + webIP + "]:443",  // an IPv6 literal (a native IPv6 origin needs a namespace: ::1 is always denied)
	}
	cases := []struct {
		name   string
		send   helloSender
		allow  bool
		reason string
		host   string
	}{
		{"denied name", handshake("secret.example.test"), false, string(policy.ReasonDeniedDomain), "secret.example.test"},
		{"denied name in upper case", handshake("SECRET.Example.TEST"), false, string(policy.ReasonDeniedDomain), "secret.example.test"},
		{"denied name with a trailing dot", rawHello(dottedHello, 1<<20), false, string(policy.ReasonNotTLS), ""},
		{"denied name in 7-byte segments", rawHello(helloFor("secret.example.test"), 7), false, string(policy.ReasonDeniedDomain), "secret.example.test"},
		{"denied name after a TLS alert record", rawHello(alertFirst, 1<<20), false, string(policy.ReasonNotTLS), ""},
		{"denied name in a record of version 1.1", rawHello(oldRecordVersion, 1<<20), false, string(policy.ReasonNotTLS), ""},
		{"allowed name in 7-byte segments", rawHello(helloFor("api.example.test"), 7), true, string(policy.ReasonAllowedCIDRs), "api.example.test"},
		{"allowed name", handshake("api.example.test"), true, string(policy.ReasonAllowedCIDRs), "api.example.test"},
		{"a name allowed_domains does not list: the address allows it", handshake("unlisted.example.test"), true, string(policy.ReasonAllowedCIDRs), "unlisted.example.test"},
		{"invalid name", handshake("exa_mple.example.test"), false, string(policy.ReasonBadName), ""},
		{"no name", handshake(""), true, string(policy.ReasonAllowedCIDRs), ""},
	}
	for _, target := range targets {
		for _, tc := range cases {
			e.sink.reset()
			c, _, resp, body := e.connect(target)
			if resp.StatusCode != 200 {
				t.Fatalf("CONNECT %s: %s %s", target, resp.Status, body)
			}
			if got := tc.send(t, e, c); got != tc.allow {
				t.Errorf("%s, %s: the server answered: %v, want %v", target, tc.name, got, tc.allow)
			}
			c.Close()
			r := e.sink.wait(t, "the tunnel's decision", func(r events.Record) bool { return r.Kind == events.KindConnect })
			if r.Decision == events.Allow {
				e.sink.wait(t, "the tunnel's close", func(r events.Record) bool { return r.Kind == events.KindClose })
			}
			if r.Decision != decision(tc.allow) || string(r.Reason) != tc.reason || r.Host != tc.host || r.IP == "" {
				t.Errorf("%s, %s: record %s %q host %q ip %q, want %s %q host %q", target, tc.name, r.Decision, r.Reason, r.Host, r.IP, decision(tc.allow), tc.reason, tc.host)
			}
			if r.Decision == events.Deny && e.sink.count(events.KindClose, "") != 0 {
				t.Errorf("%s, %s: a refused tunnel has a close record:\n%s", target, tc.name, e.sink.dump())
			}
		}
	}
	for _, h := range e.web.seen() {
		if strings.Contains(strings.ToLower(h), "secret") {
			t.Errorf("the server got a ClientHello for %s", h)
		}
	}
}

// After a CONNECT by name to a port other than 443 (open because the name's addresses are
// inside allowed_cidrs), the TLS server name is judged at the address dialled, as after a
// CONNECT to that address: a denied name is refused before the server sees its ClientHello.
func TestNameAfterConnectByNameToAnotherPort(t *testing.T) {
	e := newEnv(t, namesPolicy)
	_, port, _ := net.SplitHostPort(e.web.serve(webIP+":0", true))
	target := "api.example.test:" + port
	for _, tc := range []struct {
		name   string
		send   helloSender
		allow  bool
		reason policy.Reason
		host   string
	}{
		{"the CONNECT's name", handshake("api.example.test"), true, policy.ReasonAllowedCIDRs, "api.example.test"},
		{"no name", handshake(""), true, policy.ReasonAllowedCIDRs, "api.example.test"},
		{"a denied name", handshake("secret.example.test"), false, policy.ReasonDeniedDomain, "secret.example.test"},
		{"a denied name in 7-byte segments", rawHello(helloFor("secret.example.test"), 7), false, policy.ReasonDeniedDomain, "secret.example.test"},
		{"a denied name after a TLS alert record", rawHello(alertFirst, 1<<20), false, policy.ReasonNotTLS, "api.example.test"},
	} {
		e.sink.reset()
		c, _, resp, body := e.connect(target)
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT %s: %s %s", target, resp.Status, body)
		}
		if got := tc.send(t, e, c); got != tc.allow {
			t.Errorf("%s: the server answered: %v, want %v", tc.name, got, tc.allow)
		}
		c.Close()
		r := e.sink.wait(t, "the tunnel's decision", func(r events.Record) bool { return r.Kind == events.KindConnect })
		if r.Decision == events.Allow {
			e.sink.wait(t, "the tunnel's close", func(r events.Record) bool { return r.Kind == events.KindClose })
		}
		if r.Decision != decision(tc.allow) || r.Reason != tc.reason || r.Host != tc.host || r.IP != webIP {
			t.Errorf("%s: record %s %q host %q ip %q, want %s %q host %q", tc.name, r.Decision, r.Reason, r.Host, r.IP, decision(tc.allow), tc.reason, tc.host)
		}
	}
	for _, h := range e.web.seen() {
		if strings.Contains(strings.ToLower(h), "secret") {
			t.Errorf("the server got a ClientHello for %s", h)
		}
	}
}

// A server that speaks first (SSH, SMTP) is heard through a tunnel to an address before the
// client says anything, and what the client then sends is relayed as it is.
func TestConnectToAddressServerSpeaksFirst(t *testing.T) {
	e := newEnv(t, namesPolicy)
	c, br, resp, _ := e.connect(echo(t, "SSH-2.0-test\r\n"))
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	line, err := br.ReadString('\n')
	if err != nil || line != "SSH-2.0-test\r\n" {
		t.Fatalf("banner %q %v", line, err)
	}
	io.WriteString(c, "SSH-2.0-client\r\n")
	if line, err = br.ReadString('\n'); err != nil || line != "SSH-2.0-client\r\n" {
		t.Fatalf("echo %q %v", line, err)
	}
	r := e.sink.wait(t, "connect", func(r events.Record) bool { return r.Kind == events.KindConnect })
	if r.Decision != events.Allow || r.Reason != policy.ReasonAllowedCIDRs || r.Host != "" {
		t.Errorf("record %+v", r)
	}
}

// In monitor mode a denied name after a CONNECT to an address (or sent to an allowed address
// through the transparent proxy) flows, and is recorded as what enforcing would have denied.
func TestNameAfterConnectToAddressMonitor(t *testing.T) {
	p := namesPolicy
	p.Mode = policy.Monitor
	te := newTransparentEnv(t, p)
	e := te.env
	startWeb(t, decoyIP, e.ca)                                          // a public address outside allowed_cidrs
	for _, target := range []string{webIP + ":443", decoyIP + ":443"} { // inside allowed_cidrs, and outside
		e.sink.reset()
		c, _, resp, _ := e.connect(target)
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT %s in monitor mode: %s", target, resp.Status)
		}
		handshake("secret.example.test")(t, e, c)
		c.Close()
		r := e.sink.wait(t, "connect", func(r events.Record) bool { return r.Kind == events.KindConnect })
		if r.Decision != events.Allow || !r.WouldDeny || r.Reason != policy.ReasonDeniedDomain || r.Host != "secret.example.test" {
			t.Errorf("%s: record %s would_deny=%v %q host %q, want allow, would_deny, %q, secret.example.test", target, r.Decision, r.WouldDeny, r.Reason, r.Host, policy.ReasonDeniedDomain)
		}
	}
	// An allowed name sent to an address outside allowed_cidrs is still a would-be denial:
	// enforcing would have refused the address.
	e.sink.reset()
	c, _, _, _ := e.connect(decoyIP + ":443")
	handshake("api.example.test")(t, e, c)
	c.Close()
	r := e.sink.wait(t, "connect", func(r events.Record) bool { return r.Kind == events.KindConnect })
	if !r.WouldDeny || r.Reason != policy.ReasonIPLiteral || r.Host != "api.example.test" {
		t.Errorf("allowed name at an address outside allowed_cidrs: record would_deny=%v %q host %q", r.WouldDeny, r.Reason, r.Host)
	}

	e.sink.reset()
	c, _ = te.dialFrom("127.0.0.1", te.listen(webIP+":443"))
	if !handshake("secret.example.test")(t, e, c) {
		t.Error("transparent, monitor mode: the denied name did not flow")
	}
	c.Close()
	r = e.sink.wait(t, "connect", func(r events.Record) bool { return r.Kind == events.KindConnect })
	vmRecord(t, r)
	if r.Decision != events.Allow || !r.WouldDeny || r.Reason != policy.ReasonDeniedDomain || r.Host != "secret.example.test" || r.IP != webIP {
		t.Errorf("transparent, monitor mode: record %s would_deny=%v %q host %q ip %q", r.Decision, r.WouldDeny, r.Reason, r.Host, r.IP)
	}
}

func decision(allow bool) string {
	if allow {
		return events.Allow
	}
	return events.Deny
}

// A CONNECT to port 80 carries HTTP, parsed and decided request by request: every request
// must be for the CONNECT's host (to an address: a name is judged at that address), and a
// name seen in it is judged.
func TestConnectPort80IsHTTP(t *testing.T) {
	e := newEnv(t, namesPolicy)
	tests := []struct {
		target   string
		requests string // written at once: pipelined when there are several
		want     []int
		reasons  []string
	}{
		{"api.example.test:80", "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n", []int{200}, nil},
		{"api.example.test:80", "GET / HTTP/1.1\r\nHost: API.Example.TEST.:80\r\n\r\n", []int{200}, nil},
		{"api.example.test:80", "GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\n\r\n", []int{200}, nil},
		{"api.example.test:80", "GET / HTTP/1.1\r\nHost: other.example.test\r\n\r\n", []int{403}, []string{string(policy.ReasonHostMismatch)}},
		{"api.example.test:80", "GET / HTTP/1.1\r\nHost: secret.example.test\r\n\r\n", []int{403}, []string{string(policy.ReasonDeniedDomain)}},
		{"api.example.test:80", "GET http://other.example.test/ HTTP/1.1\r\nHost: other.example.test\r\n\r\n", []int{403}, []string{string(policy.ReasonHostMismatch)}},
		{"api.example.test:80", "GET http://api.example.test/ HTTP/1.1\r\nHost: other.example.test\r\n\r\n", []int{403}, []string{string(policy.ReasonHostMismatch)}},
		{"api.example.test:80", "GET / HTTP/1.1\r\n\r\n", []int{403}, []string{string(policy.ReasonNoHost)}},
		{"api.example.test:80", "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\nGET / HTTP/1.1\r\nHost: other.example.test\r\n\r\n",
			[]int{200, 403}, []string{"", string(policy.ReasonHostMismatch)}},
		{"api.example.test:80", "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\nGET http://secret.example.test/ HTTP/1.1\r\nHost: secret.example.test\r\n\r\n",
			[]int{200, 403}, []string{"", string(policy.ReasonDeniedDomain)}},
		{webIP + ":80", "GET / HTTP/1.1\r\nHost: " + webIP + "\r\n\r\n", []int{200}, nil},
		{webIP + ":80", "GET / HTTP/1.1\r\nHost: secret.example.test\r\n\r\n", []int{403}, []string{string(policy.ReasonDeniedDomain)}},
		// Bound to an address: a name is judged at that address, and reaches it.
		{webIP + ":80", "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n", []int{200}, nil},
		{webIP + ":80", "GET / HTTP/1.1\r\nHost: unlisted.example.test\r\n\r\n", []int{200}, nil},
		{webIP + ":80", "GET / HTTP/1.1\r\n\r\n", []int{200}, nil},
		{webIP + ":80", "GET / HTTP/1.1\r\nHost: " + decoyIP + "\r\n\r\n", []int{403}, []string{string(policy.ReasonHostMismatch)}},
		{webIP + ":80", "GET / HTTP/1.1\r\nHost: unlisted.example.test\r\n\r\nGET / HTTP/1.1\r\nHost: SECRET.example.test.\r\n\r\n",
			[]int{200, 403}, []string{"", string(policy.ReasonDeniedDomain)}},
		{"api.example.test:80", "\x16\x03\x01\x00\x05hello\r\n\r\n", []int{400}, []string{""}}, // TLS is not relayed
	}
	for _, tt := range tests {
		name := fmt.Sprintf("CONNECT %s, %q", tt.target, tt.requests)
		c, br, resp, _ := e.connect(tt.target)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", name, resp.Status)
		}
		io.WriteString(c, tt.requests)
		for i, want := range tt.want {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Errorf("%s: response %d: %v", name, i, err)
				break
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != want || (tt.reasons != nil && resp.Header.Get("X-Egress-Reason") != tt.reasons[i]) {
				t.Errorf("%s: response %d: %s %s %q", name, i, resp.Status, resp.Header.Get("X-Egress-Reason"), body)
			}
		}
		c.Close()
	}
	for _, h := range e.web.seen() {
		if h != "api.example.test" && h != webIP && h != "unlisted.example.test" {
			t.Errorf("the server saw a request for %s", h)
		}
	}

	// Kept alive: several requests on the CONNECT's one upstream connection, each decided.
	e.sink.reset()
	c, br, resp, _ := e.connect("api.example.test:80")
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	for i := 0; i < 3; i++ {
		if resp, body := e.roundTrip(c, br, "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n"); resp.StatusCode != 200 || body != "hello from api.example.test\n" {
			t.Fatalf("request %d: %s %q", i, resp.Status, body)
		}
	}
	if n := e.sink.count(events.KindRequest, events.Allow); n != 3 {
		t.Errorf("%d request records, want 3:\n%s", n, e.sink.dump())
	}
	if n := e.sink.count(events.KindConnect, ""); n != 1 {
		t.Errorf("%d connect records, want the CONNECT's one:\n%s", n, e.sink.dump())
	}
	// A CONNECT to port 80 of a denied host is refused at once.
	if _, _, resp, _ := e.connect("secret.example.test:80"); resp.StatusCode != 403 || resp.Header.Get("X-Egress-Reason") != string(policy.ReasonDeniedDomain) {
		t.Errorf("CONNECT secret.example.test:80: %s %s", resp.Status, resp.Header.Get("X-Egress-Reason"))
	}
}

// A redirected connection to an address that allowed_cidrs opens goes to that address, and
// a name seen on it (the TLS server name, each request's Host) is judged at that address:
// denied_domains holds there as in the explicit proxy.
func TestTransparentNamesAtAnAllowedAddress(t *testing.T) {
	te := newTransparentEnv(t, namesPolicy)
	tlsAddr := te.listen(webIP + ":443")
	for _, tc := range []struct {
		sni    string
		allow  bool
		reason string
		host   string
	}{
		{"secret.example.test", false, string(policy.ReasonDeniedDomain), "secret.example.test"},
		{"SECRET.example.TEST", false, string(policy.ReasonDeniedDomain), "secret.example.test"},
		{"unlisted.example.test", true, string(policy.ReasonAllowedCIDRs), "unlisted.example.test"},
		{"", true, string(policy.ReasonAllowedCIDRs), ""},
	} {
		te.sink.reset()
		c, _ := te.dialFrom("127.0.0.1", tlsAddr)
		if got := handshake(tc.sni)(t, te.env, c); got != tc.allow {
			t.Errorf("SNI %q: the server answered: %v, want %v", tc.sni, got, tc.allow)
		}
		c.Close()
		r := te.sink.wait(t, "the decision", func(r events.Record) bool { return r.Kind == events.KindConnect })
		vmRecord(t, r)
		if r.Decision != decision(tc.allow) || string(r.Reason) != tc.reason || r.Host != tc.host || r.IP != webIP {
			t.Errorf("SNI %q: record %s %q host %q ip %q", tc.sni, r.Decision, r.Reason, r.Host, r.IP)
		}
	}

	// TLS shaped so that the server reads a name the proxy cannot: refused.
	for _, hello := range []func(*testing.T) []byte{alertFirst, oldRecordVersion} {
		te.sink.reset()
		c, _ := te.dialFrom("127.0.0.1", tlsAddr)
		if rawHello(hello, 1<<20)(t, te.env, c) {
			t.Errorf("a ClientHello for secret.example.test the proxy cannot read reached the server")
		}
		c.Close()
		r := te.sink.wait(t, "the decision", func(r events.Record) bool { return r.Kind == events.KindConnect })
		if r.Decision != events.Deny || r.Reason != policy.ReasonNotTLS || r.IP != webIP {
			t.Errorf("unreadable ClientHello: record %s %q host %q ip %q", r.Decision, r.Reason, r.Host, r.IP)
		}
	}

	httpAddr := te.listen(webIP + ":80")
	c, br := te.dialFrom("127.0.0.1", httpAddr)
	for _, tc := range []struct {
		host   string
		status int
		body   string
	}{
		// rebind.example.test resolves to a private address: judged at the address the
		// client chose, which allowed_cidrs opens, it reaches that address.
		{"rebind.example.test", 200, "hello from rebind.example.test\n"},
		{"", 200, "hello from " + webIP + "\n"},
		{webIP, 200, "hello from " + webIP + "\n"},
		{"SECRET.example.test.", 403, ""},
	} {
		hdr := ""
		if tc.host != "" {
			hdr = "Host: " + tc.host + "\r\n"
		}
		resp, body := te.roundTrip(c, br, "GET / HTTP/1.1\r\n"+hdr+"\r\n")
		if resp.StatusCode != tc.status || (tc.status == 200 && body != tc.body) {
			t.Errorf("Host %q: %s %q", tc.host, resp.Status, body)
		}
		if tc.status == 403 && resp.Header.Get("X-Egress-Reason") != string(policy.ReasonDeniedDomain) {
			t.Errorf("Host %q: reason %q", tc.host, resp.Header.Get("X-Egress-Reason"))
		}
	}
	for _, h := range te.web.seen() {
		if strings.Contains(strings.ToLower(h), "secret") {
			t.Errorf("the server saw %s", h)
		}
	}
}
