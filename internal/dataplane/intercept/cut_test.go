package intercept

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// ticker is an origin that streams a line every 20 ms until its request ends, and then
// says so on done: the proof that a cut ends the upstream request too.
func ticker(done chan<- struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { done <- struct{}{} }()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if _, err := io.WriteString(w, "tick\n"); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
	})
}

// openStream starts a request to the ticker and returns its body once a line came.
func openStream(t *testing.T, c *http.Client) *bufio.Reader {
	t.Helper()
	br := openStreamAt(t, c, "/stream")
	return br
}

// openStreamAt opens a stream at path and returns its body once a line came.
func openStreamAt(t *testing.T, c *http.Client, path string) *bufio.Reader {
	t.Helper()
	resp, err := c.Get("https://" + apiHost + path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); line != "tick\n" && line != "first\n" {
		t.Fatalf("%q %v", line, err)
	}
	return br
}

// cutShows requires the client's stream to end, and the origin's request with it.
func cutShows(t *testing.T, br *bufio.Reader, originDone <-chan struct{}) {
	t.Helper()
	within(t, 3*time.Second, "the client's stream ends", func() {
		_, err := io.Copy(io.Discard, br)
		if err == nil {
			t.Error("the cut stream ended as if it were whole")
		}
	})
	select {
	case <-originDone:
	case <-time.After(3 * time.Second):
		t.Fatal("the upstream request went on after the cut")
	}
}

func TestCancelCutsOpenStream(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		done := make(chan struct{}, 4)
		e := newEnv(t, envOpts{handler: ticker(done)})
		br := openStream(t, e.client(h2))
		e.lastConn().Cancel("policy")
		cutShows(t, br, done)
		if r := e.result(); r.Reason != "policy" || r.Requests != 1 || r.Up == 0 || r.Down == 0 {
			t.Fatalf("result %+v", r)
		}
		if rec := e.sink.wait(t, 1)[0]; rec.Ended != "policy" || rec.Status != 200 || rec.BytesDown == 0 {
			t.Fatalf("record %+v", rec)
		}
	})
}

func TestEngineCloseCutsOpenStream(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		done := make(chan struct{}, 4)
		e := newEnv(t, envOpts{handler: ticker(done)})
		br := openStream(t, e.client(h2))
		within(t, 3*time.Second, "Engine.Close", func() { e.engine.Close() })
		cutShows(t, br, done)
		if r := e.result(); r.Reason != ReasonShutdown {
			t.Fatalf("result %+v", r)
		}
		// A closed engine serves nothing more.
		if _, err := e.client(h2).Get("https://" + apiHost + "/"); err == nil {
			t.Fatal("a closed engine served a request")
		}
	})
}

func TestContextCutsOpenStream(t *testing.T) {
	done := make(chan struct{}, 4)
	e := newEnv(t, envOpts{handler: ticker(done)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan Result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		res <- e.engine.Serve(ctx, &Conn{Client: c, SNI: apiHost, Policy: e.pol, Dialer: DialFunc(e.dialOrigin)})
	}()
	br := openStream(t, e.clientTo(ln.Addr().String(), true))
	cancel()
	cutShows(t, br, done)
	select {
	case r := <-res:
		if r.Reason != ReasonShutdown {
			t.Fatalf("result %+v", r)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not return")
	}
}

func TestCancelCutsWebSocket(t *testing.T) {
	e := newEnv(t, envOpts{handler: http.HandlerFunc(wsOrigin)})
	c := e.tlsConn(apiHost, "http/1.1")
	br := wsHandshake(t, c, "")
	e.lastConn().Cancel("session ended")
	within(t, 3*time.Second, "the upgraded stream ends", func() {
		if _, err := io.Copy(io.Discard, br); err != nil {
			t.Logf("stream ended with %v", err)
		}
	})
	if r := e.result(); r.Reason != "session ended" {
		t.Fatalf("result %+v", r)
	}
	if rec := e.sink.wait(t, 1)[0]; rec.Ended != "session ended" || rec.Status != 101 {
		t.Fatalf("record %+v", rec)
	}
}

func TestCancelBeforeServe(t *testing.T) {
	e := newEnv(t, envOpts{})
	a, b := net.Pipe()
	defer b.Close()
	c := &Conn{Client: a, SNI: apiHost, Policy: e.pol, Dialer: DialFunc(e.dialOrigin)}
	c.Cancel("policy")
	r := e.engine.Serve(context.Background(), c)
	if r.Reason != "policy" {
		t.Fatalf("result %+v", r)
	}
	if _, err := a.Write([]byte("x")); err == nil {
		t.Fatal("Serve left the client connection open")
	}
}

// TestManyConnectionsNoLeak opens, uses and ends connections of every kind, then requires
// the goroutines to come back to what they were (newEnv's check).
func TestManyConnectionsNoLeak(t *testing.T) {
	done := make(chan struct{}, 100)
	mux := http.NewServeMux()
	mux.Handle("/stream", ticker(done))
	mux.HandleFunc("/ws", wsOrigin)
	mux.Handle("/", &recorder{})
	e := newEnv(t, envOpts{handler: mux})
	for i := 0; i < 5; i++ {
		for _, h2 := range []bool{false, true} {
			c := e.client(h2)
			get(t, c, newRequest(t, "GET", "https://"+apiHost+"/a", nil))
			openStream(t, e.client(h2))
			e.lastConn().Cancel("policy")
		}
		tc := e.tlsConn(apiHost, "http/1.1")
		wsHandshake(t, tc, "")
		tc.Close()
	}
}

func TestIdleExchangesEnd(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		done := make(chan struct{}, 4)
		e := newEnv(t, envOpts{cfg: func(c *Config) { c.IdleTimeout = 300 * time.Millisecond },
			handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer func() { done <- struct{}{} }()
				if r.URL.Path == "/upload" {
					io.Copy(io.Discard, r.Body)
					io.WriteString(w, "got it")
					return
				}
				io.WriteString(w, "first\n") // then silence
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			})})
		c := e.client(h2)
		// An origin that falls silent.
		br := openStreamAt(t, c, "/silent")
		cutShows(t, br, done)
		// A client that stops sending its body.
		pr, pw := io.Pipe()
		defer pw.Close()
		go io.WriteString(pw, "part")
		start := time.Now()
		resp, err := c.Do(newRequest(t, "POST", "https://"+apiHost+"/upload", pr))
		if err != nil {
			t.Fatalf("stalled upload: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("a stalled upload was answered %d %q", resp.StatusCode, b)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("the stalled upload took %v to end", d)
		}
	})
}
