package intercept

import (
	"bufio"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// within fails the test unless f returns within d.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: not within %v", what, d)
	}
}

func TestResponseStreamsInPieces(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		release := make(chan struct{})
		e := newEnv(t, envOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: first\n\n")
			w.(http.Flusher).Flush()
			select { // the second piece waits until the client has the first
			case <-release:
			case <-r.Context().Done():
				return
			}
			io.WriteString(w, "data: second\n\n")
		})})
		resp, err := e.client(h2).Get("https://" + apiHost + "/events")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		within(t, 5*time.Second, "the first piece, before the origin sent the second", func() {
			if line, err := br.ReadString('\n'); line != "data: first\n" {
				t.Errorf("%q %v", line, err)
			}
		})
		close(release)
		rest, err := io.ReadAll(br)
		if err != nil || string(rest) != "\ndata: second\n\n" {
			t.Fatalf("%q %v", rest, err)
		}
	})
}

func TestUploadStreams(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		gotFirst := make(chan struct{})
		e := newEnv(t, envOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			br := bufio.NewReader(r.Body)
			first, _ := br.ReadString('\n')
			close(gotFirst) // the origin has the first piece while the client holds the second
			rest, _ := io.ReadAll(br)
			fmt.Fprintf(w, "%s|%s", strings.TrimSpace(first), rest)
		})})
		pr, pw := io.Pipe()
		go func() {
			io.WriteString(pw, "part1\n")
			select {
			case <-gotFirst:
				io.WriteString(pw, "part2")
				pw.Close()
			case <-time.After(5 * time.Second):
				pw.CloseWithError(fmt.Errorf("the origin did not get the first piece of the upload"))
			}
		}()
		resp, body := get(t, e.client(h2), newRequest(t, "PUT", "https://"+apiHost+"/upload", pr))
		if resp.StatusCode != 200 || body != "part1|part2" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		if r := e.sink.wait(t, 1)[0]; r.BytesUp != 11 || r.BytesDown != 11 {
			t.Fatalf("record bytes %d up, %d down", r.BytesUp, r.BytesDown)
		}
	})
}

// pattern is n bytes of a repeating pattern, without holding them.
type pattern struct{ n, off int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n-p.off)]
	for i := range b {
		b[i] = byte((p.off + int64(i)) * 7 % 251)
	}
	p.off += int64(len(b))
	return len(b), nil
}

func TestLargeBodiesBothWays(t *testing.T) {
	const size = 16 << 20
	want := sha256.New()
	io.Copy(want, &pattern{n: size})
	sum := hex.EncodeToString(want.Sum(nil))
	protos(t, func(t *testing.T, h2 bool) {
		e := newEnv(t, envOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == "GET" {
				w.Header().Set("Content-Length", fmt.Sprint(size))
				io.Copy(w, &pattern{n: size})
				return
			}
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
		})})
		c := e.client(h2)
		_, body := get(t, c, newRequest(t, "POST", "https://"+apiHost+"/up", &pattern{n: size}))
		if body != fmt.Sprintf("%d %s", size, sum) {
			t.Fatalf("upload: origin got %s", body)
		}
		resp, err := c.Get("https://" + apiHost + "/down")
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil || n != size || hex.EncodeToString(h.Sum(nil)) != sum {
			t.Fatalf("download: %d bytes, %v", n, err)
		}
	})
}

func TestTrailersBothWays(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		o := &recorder{}
		e := newEnv(t, envOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/req" {
				o.ServeHTTP(w, r)
				return
			}
			w.Header().Set("Trailer", "X-Sum")
			w.WriteHeader(200)
			io.WriteString(w, "body")
			w.(http.Flusher).Flush()
			w.Header().Set("X-Sum", "abc")
			w.Header().Set(http.TrailerPrefix+"X-Late", "late")
		})})
		c := e.client(h2)
		resp, err := c.Get("https://" + apiHost + "/res")
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Trailer.Get("X-Sum") != "abc" || resp.Trailer.Get("X-Late") != "late" {
			t.Errorf("response trailers %v", resp.Trailer)
		}

		pr, pw := io.Pipe()
		req := newRequest(t, "POST", "https://"+apiHost+"/req", pr)
		req.Trailer = http.Header{"X-Req-Sum": nil}
		go func() {
			io.WriteString(pw, "payload")
			req.Trailer.Set("X-Req-Sum", "def")
			pw.Close()
		}()
		get(t, c, req)
		if got := o.last(t); got.Body != "payload" || got.Trailer.Get("X-Req-Sum") != "def" {
			t.Errorf("request trailers: body %q, trailers %v", got.Body, got.Trailer)
		}
	})
}

// wsOrigin answers a WebSocket handshake and then echoes raw bytes until the client ends.
func wsOrigin(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "not an upgrade", 400)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		wsAccept(r.Header.Get("Sec-WebSocket-Key")))
	brw.Flush()
	buf := make([]byte, 4096)
	for {
		n, err := brw.Read(buf)
		if n > 0 {
			if _, err := conn.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// wsHandshake sends an upgrade request on c, with early bytes right behind it, and reads
// the 101.
func wsHandshake(t *testing.T, c net.Conn, early string) *bufio.Reader {
	t.Helper()
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n%s", apiHost, key, early)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-Websocket-Accept") != wsAccept(key) ||
		!strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	return br
}

func readN(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return string(b)
}

func TestWebSocketEcho(t *testing.T) {
	e := newEnv(t, envOpts{handler: http.HandlerFunc(wsOrigin)})
	c := e.tlsConn(apiHost, "http/1.1")
	br := wsHandshake(t, c, "early ")
	if got := readN(t, br, 6); got != "early " {
		t.Fatalf("bytes sent right after the request: %q", got)
	}
	for _, msg := range []string{"hello", strings.Repeat("x", 100<<10)} {
		go c.Write([]byte(msg))
		if got := readN(t, br, len(msg)); got != msg {
			t.Fatalf("echo of %d bytes differs", len(msg))
		}
	}
	c.Close()
	r := e.result()
	if r.Requests != 1 || r.Reason != "eof" {
		t.Fatalf("result %+v", r)
	}
	rec := e.sink.wait(t, 1)[0]
	if rec.Status != 101 || rec.BytesUp != 6+5+100<<10 || rec.BytesDown != rec.BytesUp {
		t.Fatalf("record %+v", rec)
	}
}

func TestWebSocketDenied(t *testing.T) {
	e := newEnv(t, envOpts{handler: http.HandlerFunc(wsOrigin)})
	e.pol.set(nil, []string{"/api/"})
	c := e.tlsConn(apiHost, "http/1.1")
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n\r\n", apiHost)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 403 || e.dials.Load() != 0 {
		t.Fatalf("%d, %d dials", resp.StatusCode, e.dials.Load())
	}
}

func TestEarlyHintsPassed(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		e := newEnv(t, envOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			io.WriteString(w, "page")
		})})
		var hints []string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, fmt.Sprint(code, " ", h.Get("Link")))
			return nil
		}}
		req := newRequest(t, "GET", "https://"+apiHost+"/", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		resp, body := get(t, e.client(h2), req)
		if resp.StatusCode != 200 || body != "page" || len(hints) != 1 || hints[0] != "103 </a.css>; rel=preload" {
			t.Fatalf("%d %q, interim %q", resp.StatusCode, body, hints)
		}
	})
}

func TestOnlyWebSocketUpgradesPass(t *testing.T) {
	o := &recorder{}
	e := newEnv(t, envOpts{handler: o})
	c := e.tlsConn(apiHost, "http/1.1")
	// An h2c upgrade would let the sandbox speak HTTP/2 to the origin past every decision.
	fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: %s\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", apiHost)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := o.last(t)
	if resp.StatusCode != 200 || got.Header.Get("Upgrade") != "" || got.Header.Get("Http2-Settings") != "" || got.Header.Get("Connection") != "" {
		t.Fatalf("%d; the origin got %v", resp.StatusCode, got.Header)
	}
}
