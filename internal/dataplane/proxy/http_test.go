package proxy

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

func TestPlainHTTPAllowedAndKeptAlive(t *testing.T) {
	e := newEnv(t, apiOnly)
	c := e.client()
	for i := 0; i < 3; i++ {
		resp, err := c.Get("http://api.example.test/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "hello from api.example.test\n" {
			t.Fatalf("request %d: %s %q", i, resp.Status, body)
		}
	}
	if n := e.sink.count(events.KindRequest, "allow"); n != 3 {
		t.Errorf("%d request records, want 3", n)
	}
	if n := e.sink.count(events.KindConnect, "allow"); n != 1 {
		t.Errorf("%d upstream connections for three requests on a kept-alive connection, want 1\n%s", n, e.sink.dump())
	}
	c.CloseIdleConnections()
	cl := e.sink.wait(t, "close", func(r events.Record) bool { return r.Kind == events.KindClose })
	if cl.BytesUp == 0 || cl.BytesDown == 0 || cl.IP != webIP || cl.Port != 80 {
		t.Errorf("close record %+v", cl)
	}
}

// What the server gets: origin form, the URL's Host, no hop-by-hop headers, no credentials.
func TestPlainHTTPRewrite(t *testing.T) {
	e := newEnv(t, apiOnly)
	c, br := e.dial()
	resp, body := e.roundTrip(c, br, "GET http://API.Example.TEST./headers?q=1 HTTP/1.1\r\nHost: api.example.test\r\n"+
		"Proxy-Authorization: "+e.authHeader()+"\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nProxy-Connection: keep-alive\r\n"+
		"Keep-Alive: timeout=5\r\nX-End-To-End: yes\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s", resp.Status, body)
	}
	if !strings.HasPrefix(body, "GET /headers?q=1 api.example.test\n") {
		t.Errorf("the server got %q", strings.SplitN(body, "\n", 2)[0])
	}
	for _, h := range []string{"Proxy-Authorization", "X-Hop", "Proxy-Connection", "Keep-Alive", "User-Agent"} {
		if strings.Contains(body, h+":") {
			t.Errorf("the server got %s:\n%s", h, body)
		}
	}
	if !strings.Contains(body, "X-End-To-End: yes") {
		t.Errorf("an end-to-end header was dropped:\n%s", body)
	}
}

func TestPlainHTTPBodies(t *testing.T) {
	e := newEnv(t, apiOnly)
	c := e.client()
	// A chunked request body streams up and comes back.
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 50; i++ {
			fmt.Fprintf(pw, "chunk %d\n", i)
		}
		pw.Close()
	}()
	resp, err := c.Post("http://api.example.test/echo", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "chunk 0\n") || !strings.HasSuffix(string(body), "chunk 49\n") {
		t.Errorf("chunked echo: %q", body)
	}
	// Content-Length, with Expect: 100-continue.
	req, _ := http.NewRequest("PUT", "http://api.example.test/echo", strings.NewReader(strings.Repeat("a", 200000)))
	req.Header.Set("Expect", "100-continue")
	c.Transport.(*http.Transport).ExpectContinueTimeout = 5 * time.Second
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(body) != 200000 {
		t.Errorf("echo with Content-Length: %d bytes", len(body))
	}
	// A response that ends at close reaches the client whole.
	resp, err = c.Get("http://api.example.test/close-delimited")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(body) != 100000 {
		t.Errorf("close-delimited body: %d bytes, want 100000", len(body))
	}
	// HEAD: headers only.
	resp, err = c.Head("http://api.example.test/bytes?n=12345")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != 12345 {
		t.Errorf("HEAD: %s, length %d", resp.Status, resp.ContentLength)
	}
	// And the connection still works after all of that.
	resp, err = c.Get("http://api.example.test/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("after the bodies: %s", resp.Status)
	}
}

func TestSecondRequestToDeniedHostOnKeptAliveConnection(t *testing.T) {
	e := newEnv(t, apiOnly)
	c, br := e.dial()
	resp, body := e.roundTrip(c, br, "GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\nProxy-Authorization: "+e.authHeader()+"\r\n\r\n")
	if resp.StatusCode != 200 || body != "hello from api.example.test\n" {
		t.Fatalf("first request: %s %q", resp.Status, body)
	}
	resp, body = e.roundTrip(c, br, "GET http://other.example.test/ HTTP/1.1\r\nHost: other.example.test\r\nProxy-Authorization: "+e.authHeader()+"\r\n\r\n")
	if resp.StatusCode != 403 || resp.Header.Get("X-Egress-Reason") != string(policy.ReasonHostNotListed) {
		t.Errorf("second request to a denied host: %s %v %q", resp.Status, resp.Header, body)
	}
	if slices.Contains(e.web.seen(), "other.example.test") {
		t.Error("the denied request reached the server")
	}
	// The kept-alive upstream of the first request was closed and recorded.
	e.sink.wait(t, "close of the first upstream", func(r events.Record) bool { return r.Kind == events.KindClose && r.Host == "api.example.test" })
}

// A kept-alive upstream connection that the server closed is replaced, and a request
// without a body is sent again on the new one.
func TestStaleUpstreamIsRetried(t *testing.T) {
	e := newEnv(t, apiOnly)
	c, br := e.dial()
	req := "GET http://api.example.test%s HTTP/1.1\r\nHost: api.example.test\r\nProxy-Authorization: " + e.authHeader() + "\r\n\r\n"
	resp, body := e.roundTrip(c, br, fmt.Sprintf(req, "/then-close"))
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("first request: %s %q", resp.Status, body)
	}
	time.Sleep(50 * time.Millisecond) // the server's FIN arrives
	resp, body = e.roundTrip(c, br, fmt.Sprintf(req, "/"))
	if resp.StatusCode != 200 || body != "hello from api.example.test\n" {
		t.Fatalf("request on the stale connection: %s %q", resp.Status, body)
	}
	if n := e.sink.count(events.KindConnect, "allow"); n != 2 {
		t.Errorf("%d upstream connections, want 2:\n%s", n, e.sink.dump())
	}
}
