package intercept

import (
	"bytes"
	"io"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Status sends one HTTP/2 request of the given header fields, in order, on a new
// connection for apiHost, and returns the :status of the answer.
func h2Status(t *testing.T, e *env, fields [][2]string) string {
	t.Helper()
	c := e.tlsConn(apiHost, "h2")
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range fields {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	dec := hpack.NewDecoder(4096, nil)
	for range 50 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("%v: %v", fields, err)
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			hf, err := dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range hf {
				if h.Name == ":status" {
					return h.Value
				}
			}
		case *http2.RSTStreamFrame:
			return "RST " + f.ErrCode.String()
		case *http2.GoAwayFrame:
			return "GOAWAY " + f.ErrCode.String()
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		}
	}
	t.Fatal("no answer")
	return ""
}

// TestH2AuthorityAndHost: :authority decides; a Host field beside it that names another
// host never reaches the origin as the request's host, and an :authority that is not the
// SNI is a 421 whatever the Host field says.
func TestH2AuthorityAndHost(t *testing.T) {
	o := &recorder{}
	e := newEnv(t, envOpts{handler: o})
	base := func(auth string, extra ...[2]string) [][2]string {
		f := [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", auth}, {":path", "/"}}
		return append(f, extra...)
	}
	for _, tc := range []struct {
		name   string
		fields [][2]string
		want   string
	}{
		{"same", base(apiHost), "200"},
		{"host other", base(apiHost, [2]string{"host", otherHost}), "200"},
		{"authority other", base(otherHost, [2]string{"host", apiHost}), "421"},
		{"no authority, host other", [][2]string{{":method", "GET"}, {":scheme", "https"}, {":path", "/"}, {"host", otherHost}}, "421"},
		{"no authority, no host", [][2]string{{":method", "GET"}, {":scheme", "https"}, {":path", "/"}}, "421"},
		{"extended connect", [][2]string{{":method", "CONNECT"}, {":protocol", "websocket"}, {":scheme", "https"}, {":authority", apiHost}, {":path", "/"}}, ""},
	} {
		before := len(o.all())
		got := h2Status(t, e, tc.fields)
		if tc.want != "" && got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
		if tc.want == "" && got == "200" {
			t.Errorf("%s: served", tc.name)
		}
		for _, s := range o.all()[before:] {
			if s.Host != apiHost || s.Header.Get("Host") != "" {
				t.Errorf("%s: the origin saw Host %q, header %q", tc.name, s.Host, s.Header.Values("Host"))
			}
		}
		t.Logf("%s: %s", tc.name, got)
	}
}

// TestSlowHeadersClosed: a client that starts a request's head and never finishes it
// (HTTP/1.1: a header line a byte at a time, never the blank line; HTTP/2: a HEADERS frame
// without END_HEADERS, never its CONTINUATION) loses its connection within the timeouts.
func TestSlowHeadersClosed(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) {
		c.HandshakeTimeout = 300 * time.Millisecond
		c.KeepAliveTimeout = 300 * time.Millisecond
		c.IdleTimeout = 300 * time.Millisecond
	}})
	closed := func(name string, c io.Reader) {
		start := time.Now()
		buf := make([]byte, 4096)
		for time.Since(start) < 4*time.Second {
			if _, err := c.Read(buf); err != nil {
				if d := time.Since(start); d > 3*time.Second {
					t.Errorf("%s: closed after %v", name, d)
				}
				return
			}
		}
		t.Errorf("%s: still open after 4s", name)
	}

	c1 := e.tlsConn(apiHost, "http/1.1")
	defer c1.Close()
	io.WriteString(c1, "GET / HTTP/1.1\r\nHost: "+apiHost+"\r\nX-Slow: a")
	go func() {
		for range 20 {
			time.Sleep(100 * time.Millisecond)
			if _, err := io.WriteString(c1, "a"); err != nil {
				return
			}
		}
	}()
	c1.SetDeadline(time.Now().Add(5 * time.Second))
	closed("http/1.1", c1)

	c2 := e.tlsConn(apiHost, "h2")
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c2, http2.ClientPreface)
	fr := http2.NewFramer(c2, c2)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: false})
	closed("h2", c2)
}
