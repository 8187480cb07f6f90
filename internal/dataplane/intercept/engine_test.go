package intercept

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
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

// protos runs f for an HTTP/1.1 client and for an HTTP/2 client.
func protos(t *testing.T, f func(t *testing.T, h2 bool)) {
	for _, h2 := range []bool{false, true} {
		name := "http1"
		if h2 {
			name = "h2"
		}
		t.Run(name, func(t *testing.T) { f(t, h2) })
	}
}

func TestForwarded(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		o := &recorder{}
		e := newEnv(t, envOpts{handler: o})
		req := newRequest(t, "GET", "https://"+apiHost+"/v1/items?limit=5&q=a%20b", nil)
		// The sandbox's own X-Forwarded-For passes as it is.
		req.Header.Set("X-Forwarded-For", "203.0.113.7")
		if !h2 { // HTTP/2 has no Connection header
			req.Header.Set("Connection", "X-Hop")
			req.Header.Set("X-Hop", "must not pass")
		}
		resp, body := get(t, e.client(h2), req)
		if resp.StatusCode != 200 || body != "ok" || resp.Header.Get("X-Origin") != "yes" {
			t.Fatalf("status %d body %q header %v", resp.StatusCode, body, resp.Header)
		}
		wantProto := "HTTP/1.1"
		if h2 {
			wantProto = "HTTP/2.0"
		}
		if resp.Proto != wantProto {
			t.Errorf("client got %s, want %s", resp.Proto, wantProto)
		}
		got := o.last(t)
		if got.Proto != wantProto {
			t.Errorf("origin got %s, want %s (the same protocol upstream)", got.Proto, wantProto)
		}
		if got.URI != "/v1/items?limit=5&q=a%20b" || got.Host != apiHost || got.Method != "GET" {
			t.Errorf("origin got %s %s Host %s", got.Method, got.URI, got.Host)
		}
		if xff := got.Header.Values("X-Forwarded-For"); len(xff) != 1 || xff[0] != "203.0.113.7" {
			t.Errorf("X-Forwarded-For = %q: the engine must add nothing", xff)
		}
		if got.Header.Get("X-Hop") != "" || got.Header.Get("Via") != "" {
			t.Errorf("hop-by-hop or Via header reached the origin: %v", got.Header)
		}
		recs := e.sink.wait(t, 1)
		r := recs[0]
		if r.Kind != events.KindRequest || r.Decision != events.Allow || r.Method != "GET" || r.Path != "/v1/items" ||
			r.Host != apiHost || r.Port != 443 || r.Status != 200 || r.BytesDown != 2 || r.SessionID != "ses_1" || r.Reason != policy.ReasonAllowedDomains {
			t.Errorf("record %+v", r)
		}
	})
}

func TestHTTP2ClientToHTTP1Origin(t *testing.T) {
	o := &recorder{}
	e := newEnv(t, envOpts{handler: o, noH2: true})
	resp, _ := get(t, e.client(true), newRequest(t, "POST", "https://"+apiHost+"/x", strings.NewReader("body")))
	if resp.Proto != "HTTP/2.0" || resp.StatusCode != 200 {
		t.Fatalf("%s %d", resp.Proto, resp.StatusCode)
	}
	if got := o.last(t); got.Proto != "HTTP/1.1" || got.Body != "body" {
		t.Fatalf("origin got %s with %q", got.Proto, got.Body)
	}
}

func TestDenied(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		o := &recorder{}
		e := newEnv(t, envOpts{handler: o})
		e.pol.set([]string{"GET"}, []string{"/v1/"})
		c := e.client(h2)
		for _, tc := range []struct {
			method, path string
			reason       policy.Reason
		}{
			{"POST", "/v1/items", "method_not_allowed"},
			{"GET", "/admin", "path_not_allowed"},
			{"GET", "/v1/../admin", "path_not_allowed"}, // resolved before it is decided
			{"GET", "/v1/%2e%2e/admin", "path_not_allowed"},
			{"GET", "/v1/..;x/admin", "path_not_allowed"},
		} {
			resp, body := get(t, c, newRequest(t, tc.method, "https://"+apiHost+tc.path+"?token=q", nil))
			if resp.StatusCode != 403 || resp.Header.Get("X-Egress-Decision") != "deny" ||
				resp.Header.Get("X-Egress-Reason") != string(tc.reason) || resp.Header.Get("X-Egress-Rule") == "" {
				t.Errorf("%s %s: %d %v", tc.method, tc.path, resp.StatusCode, resp.Header)
			}
			if strings.Count(body, "\n") != 1 || !strings.HasPrefix(body, "egressd: "+tc.method+" https://"+apiHost+"/") ||
				!strings.Contains(body, "session ses_1") || !strings.Contains(body, string(tc.reason)) || strings.Contains(body, "token=q") {
				t.Errorf("%s %s: body %q", tc.method, tc.path, body)
			}
		}
		if n := len(o.all()); n != 0 {
			t.Errorf("the origin got %d denied requests", n)
		}
		// The connection carries on after refusals.
		resp, _ := get(t, c, newRequest(t, "GET", "https://"+apiHost+"/v1/ok", nil))
		if resp.StatusCode != 200 || e.accepted.Load() != 1 {
			t.Errorf("allowed after denials: %d, %d connections", resp.StatusCode, e.accepted.Load())
		}
		recs := e.sink.wait(t, 6)
		if r := recs[2]; r.Decision != events.Deny || r.Path != "/admin" || r.Reason != "path_not_allowed" || r.Status != 403 || r.Layer != "session" {
			t.Errorf("record %+v", r)
		}
	})
}

func TestMonitorForwardsWouldDeny(t *testing.T) {
	o := &recorder{}
	e := newEnv(t, envOpts{handler: o})
	e.pol.set([]string{"GET"}, nil)
	e.pol.monitor.Store(true)
	resp, _ := get(t, e.client(false), newRequest(t, "DELETE", "https://"+apiHost+"/x", nil))
	if resp.StatusCode != 200 || len(o.all()) != 1 {
		t.Fatalf("monitor: %d", resp.StatusCode)
	}
	if r := e.sink.wait(t, 1)[0]; r.Decision != events.Allow || !r.WouldDeny || r.Mode != "monitor" {
		t.Fatalf("record %+v", r)
	}
}

func TestMisdirected(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		o := &recorder{}
		e := newEnv(t, envOpts{handler: o})
		c := e.client(h2)
		for _, host := range []string{otherHost, apiHost + ":8443", "127.0.0.1", "exa_mple.test"} {
			req := newRequest(t, "GET", "https://"+apiHost+"/x", nil)
			req.Host = host
			resp, body := get(t, c, req)
			if resp.StatusCode != http.StatusMisdirectedRequest || resp.Header.Get("X-Egress-Reason") != string(policy.ReasonHostMismatch) {
				t.Errorf("Host %s: %d %v", host, resp.StatusCode, resp.Header)
			}
			if !strings.Contains(body, "https://"+host+"/x") || !strings.Contains(body, "connection of its own") {
				t.Errorf("Host %s: body %q", host, body)
			}
		}
		if len(o.all()) != 0 {
			t.Fatal("a misdirected request reached the origin")
		}
		for _, host := range []string{"API.Example.Test.", apiHost + ":443"} {
			req := newRequest(t, "GET", "https://"+apiHost+"/x", nil)
			req.Host = host
			if resp, _ := get(t, c, req); resp.StatusCode != 200 {
				t.Errorf("Host %s: %d", host, resp.StatusCode)
			}
			if got := o.last(t).Host; got != apiHost {
				t.Errorf("Host %s went up as %s", host, got)
			}
		}
		if r := e.sink.wait(t, 1)[0]; r.Decision != events.Deny || r.Reason != policy.ReasonHostMismatch || r.Status != 421 {
			t.Errorf("record %+v", r)
		}
	})
}

func TestAbsoluteURLForAnotherHost(t *testing.T) {
	o := &recorder{}
	e := newEnv(t, envOpts{handler: o})
	c := e.tlsConn(apiHost)
	fmt.Fprintf(c, "GET https://%s/x HTTP/1.1\r\nHost: %s\r\n\r\n", otherHost, apiHost)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusMisdirectedRequest || len(o.all()) != 0 {
		t.Fatalf("absolute URL for another host: %d", resp.StatusCode)
	}
}

func TestPathRefusedOrResolved(t *testing.T) {
	o := &recorder{}
	e := newEnv(t, envOpts{handler: o})
	c := e.tlsConn(apiHost, "http/1.1")
	br := bufio.NewReader(c)
	for _, tc := range []struct {
		target string
		status int
		up     string // what the origin receives
	}{
		{"/a/./b/../c?x=1", 200, "/a/c?x=1"},
		{"/a/%2e%2E/c", 200, "/c"},
		{"/a%2Fb/c", 200, "/a%2Fb/c"},
		{"/a/..%2fb", 400, ""},
		{"/a/..\\b", 400, ""},
	} {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", tc.target, apiHost)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.target, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", tc.target, resp.StatusCode, tc.status)
			continue
		}
		if tc.up != "" {
			if got := o.last(t).URI; got != tc.up {
				t.Errorf("%s went up as %s, want %s", tc.target, got, tc.up)
			}
		} else if resp.Header.Get("X-Egress-Reason") != string(policy.ReasonBadRequest) {
			t.Errorf("%s: %v", tc.target, resp.Header)
		}
	}
}

func TestConnectInsideRefused(t *testing.T) {
	o := &recorder{}
	e := newEnv(t, envOpts{handler: o})
	c := e.tlsConn(apiHost)
	fmt.Fprintf(c, "CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n\r\n", apiHost, apiHost)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 400 || len(o.all()) != 0 {
		t.Fatalf("CONNECT inside: %d", resp.StatusCode)
	}
}

func TestPolicyChangeAppliesToNextRequest(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		o := &recorder{}
		e := newEnv(t, envOpts{handler: o})
		c := e.client(h2)
		if resp, _ := get(t, c, newRequest(t, "GET", "https://"+apiHost+"/v1/a", nil)); resp.StatusCode != 200 {
			t.Fatalf("first: %d", resp.StatusCode)
		}
		e.pol.set(nil, []string{"/v2/"})
		resp, _ := get(t, c, newRequest(t, "GET", "https://"+apiHost+"/v1/a", nil))
		if resp.StatusCode != 403 || resp.Header.Get("X-Egress-Reason") != "path_not_allowed" {
			t.Fatalf("second, after the change: %d", resp.StatusCode)
		}
		if n := e.accepted.Load(); n != 1 {
			t.Fatalf("%d connections: the two requests must share one", n)
		}
		if len(o.all()) != 1 {
			t.Fatal("the denied request reached the origin")
		}
	})
}

func TestUpstreamVerificationFails(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		o := &recorder{}
		e := newEnv(t, envOpts{handler: o, cfg: func(c *Config) { c.RootCAs = x509.NewCertPool() }})
		resp, body := get(t, e.client(h2), newRequest(t, "GET", "https://"+apiHost+"/x", nil))
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "TLS certificate did not verify") ||
			!strings.Contains(body, "--upstream-ca-file") || resp.Header.Get("X-Egress-Decision") != "allow" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		if len(o.all()) != 0 {
			t.Fatal("the origin was reached")
		}
		if r := e.sink.wait(t, 1)[0]; r.Status != 502 || r.Decision != events.Allow {
			t.Fatalf("record %+v", r)
		}
	})
}

func TestUpstreamWrongName(t *testing.T) {
	o := &recorder{}
	// The origin shows a certificate of the trusted CA, for another name than the SNI.
	e := newEnv(t, envOpts{handler: o, originName: otherHost})
	resp, body := get(t, e.client(false), newRequest(t, "GET", "https://"+apiHost+"/x", nil))
	if resp.StatusCode != 502 || !strings.Contains(body, "did not verify") {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

func TestDialDenied(t *testing.T) {
	d := policy.Decision{Reason: policy.ReasonNotPublic, Rule: "the address is not public", Layer: policy.LayerVM, Mode: policy.Enforce}
	e := newEnv(t, envOpts{dialer: DialFunc(func(context.Context, string, uint16) (net.Conn, error) {
		return nil, &DeniedError{Decision: d}
	})})
	resp, _ := get(t, e.client(false), newRequest(t, "GET", "https://"+apiHost+"/x", nil))
	if resp.StatusCode != 403 || resp.Header.Get("X-Egress-Reason") != string(policy.ReasonNotPublic) {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	if r := e.sink.wait(t, 1)[0]; r.Decision != events.Deny || r.Reason != policy.ReasonNotPublic || r.Layer != "vm" {
		t.Fatalf("record %+v", r)
	}
}

func TestUnreachable(t *testing.T) {
	e := newEnv(t, envOpts{dialer: DialFunc(func(ctx context.Context, _ string, _ uint16) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", "127.0.0.1:1") // nothing listens there
	})})
	resp, body := get(t, e.client(true), newRequest(t, "GET", "https://"+apiHost+"/x", nil))
	if resp.StatusCode != 502 || !strings.Contains(body, "could not be reached") {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

func TestHeaderTooLarge(t *testing.T) {
	e := newEnv(t, envOpts{handler: &recorder{}, cfg: func(c *Config) { c.MaxHeaderBytes = 8 << 10 }})
	req := newRequest(t, "GET", "https://"+apiHost+"/x", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
	resp, err := e.client(false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("%d", resp.StatusCode)
	}
	// HTTP/2 announces the bound; Go's client refuses to send past it.
	if _, err := e.client(true).Do(req); err == nil {
		t.Fatal("HTTP/2: a header over the bound was sent")
	}
}

func TestHandshakeNameMismatch(t *testing.T) {
	e := newEnv(t, envOpts{handler: &recorder{}})
	// The caller judged one name; the ClientHello it hands over asks for another.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan Result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		done <- e.engine.Serve(context.Background(), &Conn{Client: c, SNI: otherHost, Policy: e.pol, Dialer: DialFunc(e.dialOrigin)})
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: apiHost, RootCAs: e.ca.Pool})
	if err == nil {
		c.Close()
		t.Fatal("the handshake for another name than the judged one succeeded")
	}
	select {
	case r := <-done:
		if r.Reason != "error" || r.Err == nil {
			t.Fatalf("result %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}

func TestSmallTimeouts(t *testing.T) {
	e := newEnv(t, envOpts{handler: &recorder{}, cfg: func(c *Config) {
		c.KeepAliveTimeout = 200 * time.Millisecond
		c.HandshakeTimeout = 300 * time.Millisecond
	}})
	// A client that never finishes its handshake, and one that never sends a request.
	raw, err := net.Dial("tcp", e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write(testnet.ClientHello(t, &tls.Config{ServerName: apiHost}))
	if r := e.result(); r.Reason != "error" {
		t.Errorf("stalled handshake: %+v", r)
	}
	c := e.tlsConn(apiHost, "http/1.1")
	c.Write([]byte("GET / HTTP/1.1\r\nHost: " + apiHost + "\r\n\r\n"))
	if r := e.result(); r.Reason != "eof" || r.Requests != 1 || r.Proto != "http/1.1" {
		t.Errorf("idle after a request: %+v", r)
	}
	get(t, e.client(true), newRequest(t, "GET", "https://"+apiHost+"/", nil))
	if r := e.result(); r.Reason != "eof" || r.Requests != 1 || r.Proto != "h2" {
		t.Errorf("HTTP/2, idle after a request: %+v", r)
	}
}
