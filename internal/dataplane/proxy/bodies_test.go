package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/testkit/testnet"
)

// bodyCases are the responses of the body tests: every framing, sizes around the proxy's
// buffers and well past them.
var bodyCases = []struct {
	framing string
	n       int
}{
	{testnet.FramingLength, 0},
	{testnet.FramingLength, 1},
	{testnet.FramingLength, 4095},
	{testnet.FramingLength, 16 << 10},
	{testnet.FramingLength, 1<<20 + 12345},
	{testnet.FramingChunked, 1},
	{testnet.FramingChunked, 100000},
	{testnet.FramingChunked, 1<<20 + 777},
	{testnet.FramingClose, 0},
	{testnet.FramingClose, 5000},
	{testnet.FramingClose, 1<<20 + 3},
}

// checkDownloads gets every body case from origins that write in uneven pieces, several
// on one client connection, and compares digests: a response must reach the client
// byte for byte whatever way the origin cut it.
func checkDownloads(t *testing.T, c *http.Client, base string) {
	t.Helper()
	for i, bc := range bodyCases {
		seed := uint64(i + 1)
		url := fmt.Sprintf("%s/pieces?n=%d&seed=%d&framing=%s", base, bc.n, seed, bc.framing)
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: reading the body: %v", url, err)
		}
		want := testnet.Digest(testnet.PiecesBody(bc.n, seed))
		if resp.StatusCode != 200 || len(body) != bc.n || testnet.Digest(body) != want || resp.Header.Get("X-Body-SHA256") != want {
			t.Errorf("%s framing, %d bytes: %s, got %d bytes with digest %s, want %s", bc.framing, bc.n, resp.Status, len(body), testnet.Digest(body), want)
		}
	}
}

// checkUploads sends bodies in uneven pieces, with pauses, with Content-Length and chunked,
// on one raw connection, and compares what the origin got. prefix is what goes before
// the path in the request line ("http://host" for the explicit proxy); headers end with
// CRLF.
func checkUploads(t *testing.T, c net.Conn, br *bufio.Reader, prefix, headers string) {
	t.Helper()
	rnd := rand.New(rand.NewPCG(7, 7))
	for i, n := range []int{1, 5000, 1<<20 + 99} {
		for _, chunked := range []bool{false, true} {
			body := testnet.PiecesBody(n, uint64(100+i))
			framing := "Content-Length: " + itoa(n)
			if chunked {
				framing = "Transfer-Encoding: chunked"
			}
			if _, err := io.WriteString(c, "POST "+prefix+"/sha256 HTTP/1.1\r\n"+headers+framing+"\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			for off := 0; off < n; {
				k := min(1+rnd.IntN(9000), n-off)
				piece := body[off : off+k]
				if chunked {
					piece = []byte(fmt.Sprintf("%x\r\n%s\r\n", k, piece))
				}
				if _, err := c.Write(piece); err != nil {
					t.Fatal(err)
				}
				if rnd.IntN(5) == 0 {
					time.Sleep(time.Millisecond)
				}
				off += k
			}
			if chunked {
				io.WriteString(c, "0\r\n\r\n")
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("upload of %d bytes (chunked %v): %v", n, chunked, err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := fmt.Sprintf("%d %s\n", n, testnet.Digest(body)); resp.StatusCode != 200 || string(got) != want {
				t.Errorf("upload of %d bytes (chunked %v): %s %q, want %q", n, chunked, resp.Status, got, want)
			}
		}
	}
}

func TestPlainHTTPBodiesInPieces(t *testing.T) {
	e := newEnv(t, apiOnly)
	checkDownloads(t, e.client(), "http://api.example.test")
	c, br := e.dial()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	checkUploads(t, c, br, "http://api.example.test", "Host: api.example.test\r\nProxy-Authorization: "+e.authHeader()+"\r\n")
}

func TestTransparentHTTPBodiesInPieces(t *testing.T) {
	te := newTransparentEnv(t, apiOnly)
	addr := te.listen(webIP + ":80")
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}
		return d.DialContext(ctx, "tcp", addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	checkDownloads(t, &http.Client{Transport: tr, Timeout: 30 * time.Second}, "http://api.example.test")
	c, br := te.dialFrom("127.0.0.1", addr)
	c.SetDeadline(time.Now().Add(60 * time.Second))
	checkUploads(t, c, br, "", "Host: api.example.test\r\n")
}

// Through a CONNECT to port 80, the tunnel is HTTP served on the same path.
func TestConnectPort80BodiesInPieces(t *testing.T) {
	e := newEnv(t, apiOnly)
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		c, br, resp, body := e.connect("api.example.test:80")
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("CONNECT: %s %s", resp.Status, body)
		}
		if br.Buffered() > 0 {
			return nil, fmt.Errorf("bytes after the CONNECT answer")
		}
		c.SetDeadline(time.Time{})
		return c, nil
	}}
	t.Cleanup(tr.CloseIdleConnections)
	checkDownloads(t, &http.Client{Transport: tr, Timeout: 30 * time.Second}, "http://api.example.test")
	c, br, resp, _ := e.connect("api.example.test:80")
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	checkUploads(t, c, br, "", "Host: "+strings.ToUpper("api.example.test")+"\r\n")
}
