package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A client's request that cannot be read is answered with the status that names its
// fault, on every path that reads requests: the explicit proxy, a CONNECT to port 80, and
// the transparent proxy's port 80.
func TestUnreadableRequests(t *testing.T) {
	const limit = 1024
	te := newTransparentEnv(t, apiOnly, func(c *Config) {
		c.MaxHeaderBytes = limit
		c.HandshakeTimeout = 500 * time.Millisecond
	})
	transparent := te.listen(webIP + ":80")

	// paths open a connection ready for a request, and say what goes before the path and
	// which headers every request carries.
	paths := []struct {
		name          string
		open          func() (net.Conn, *bufio.Reader)
		prefix, extra string
	}{
		{"explicit", te.dial, "http://api.example.test", "Proxy-Authorization: " + te.authHeader() + "\r\n"},
		{"CONNECT :80", func() (net.Conn, *bufio.Reader) {
			c, br, resp, _ := te.connect("api.example.test:80")
			if resp.StatusCode != 200 {
				t.Fatalf("CONNECT: %s", resp.Status)
			}
			return c, br
		}, "", ""},
		{"transparent", func() (net.Conn, *bufio.Reader) { return te.dialFrom("127.0.0.1", transparent) }, "", ""},
	}
	// header builds a request header of exactly n bytes, its last line ending at n.
	header := func(prefix, extra string, n int) string {
		start := "GET " + prefix + "/ HTTP/1.1\r\nHost: api.example.test\r\n" + extra
		pad := n - len(start) - len("X-Pad: \r\n")
		return start + "X-Pad: " + strings.Repeat("p", pad) + "\r\n"
	}
	cases := []struct {
		name   string
		send   func(prefix, extra string) string
		status int
	}{
		{"bad chunk size", func(prefix, extra string) string {
			return "POST " + prefix + "/sha256 HTTP/1.1\r\nHost: api.example.test\r\n" + extra + "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
		}, http.StatusBadRequest},
		{"chunk without its CRLF", func(prefix, extra string) string {
			return "POST " + prefix + "/sha256 HTTP/1.1\r\nHost: api.example.test\r\n" + extra + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n"
		}, http.StatusBadRequest},
		{"header limit reached at a line end", func(prefix, extra string) string {
			return header(prefix, extra, limit)
		}, http.StatusRequestHeaderFieldsTooLarge},
		{"header limit reached inside a line", func(prefix, extra string) string {
			return header(prefix, extra, limit+40)
		}, http.StatusRequestHeaderFieldsTooLarge},
		{"incomplete request line at the deadline", func(string, string) string {
			return "GET /some/pa"
		}, http.StatusRequestTimeout},
		{"incomplete header at the deadline", func(prefix, extra string) string {
			return "GET " + prefix + "/ HTTP/1.1\r\nHost: api.exa"
		}, http.StatusRequestTimeout},
		{"not HTTP", func(string, string) string { return "NOT HTTP\r\n\r\n" }, http.StatusBadRequest},
	}
	for _, p := range paths {
		for _, tc := range cases {
			c, br := p.open()
			if _, err := io.WriteString(c, tc.send(p.prefix, p.extra)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Errorf("%s, %s: no answer: %v", p.name, tc.name, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("%s, %s: %s, want %d", p.name, tc.name, resp.Status, tc.status)
			}
		}
	}
	for _, h := range te.web.seen() {
		t.Errorf("a request that could not be read reached the server: Host %s", h)
	}
}

// Chunked trailers end at the proxy, both ways: a trailer could carry what the header
// could not (a second Host), and nothing in the gateway judges it.
func TestTrailersAreDropped(t *testing.T) {
	te := newTransparentEnv(t, apiOnly)
	transparent := te.listen(webIP + ":80")
	for _, p := range []struct {
		name          string
		c             net.Conn
		br            *bufio.Reader
		prefix, extra string
	}{
		{"explicit", nil, nil, "http://api.example.test", "Proxy-Authorization: " + te.authHeader() + "\r\n"},
		{"transparent", nil, nil, "", ""},
	} {
		if p.name == "explicit" {
			p.c, p.br = te.dial()
		} else {
			p.c, p.br = te.dialFrom("127.0.0.1", transparent)
		}
		for i := 0; i < 2; i++ { // and the kept-alive connection goes on
			io.WriteString(p.c, "POST "+p.prefix+"/trailers HTTP/1.1\r\nHost: api.example.test\r\n"+p.extra+
				"Trailer: Host, X-Secret\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nHost: secret.example.test\r\nX-Secret: 1\r\n\r\n")
			resp, err := http.ReadResponse(p.br, nil)
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "body hello, trailers map[]\n" {
				t.Errorf("%s: the server got %s %q, want the body and no trailers", p.name, resp.Status, body)
			}
			if len(resp.Trailer) != 0 {
				t.Errorf("%s: the client got the server's trailers %v", p.name, resp.Trailer)
			}
		}
	}
}
