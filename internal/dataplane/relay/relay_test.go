package relay

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type accepted struct {
		c   *net.TCPConn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.AcceptTCP()
		ch <- accepted{c, err}
	}()
	a, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	acc := <-ch
	if acc.err != nil {
		t.Fatal(acc.err)
	}
	t.Cleanup(func() { a.Close(); acc.c.Close() })
	return a, acc.c
}

// setup is app <-> [Client relay Upstream] <-> server.
func setup(t testing.TB, idle time.Duration) (app *net.TCPConn, r *Relay, server *net.TCPConn) {
	app, client := pair(t)
	upstream, server := pair(t)
	return app, &Relay{Client: client, Upstream: upstream, Idle: idle}, server
}

func run(r *Relay, prefix []byte) <-chan Result {
	ch := make(chan Result, 1)
	go func() { ch <- r.Run(prefix) }()
	return ch
}

func wait(t *testing.T, ch <-chan Result, within time.Duration) Result {
	t.Helper()
	select {
	case res := <-ch:
		return res
	case <-time.After(within):
		t.Fatalf("relay still running after %v", within)
	}
	return Result{}
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// The bytes arrive intact and are counted exactly, prefix included; EOF from each side
// half-closes the other, and a request/response exchange that relies on it completes.
func TestCountsAndHalfClose(t *testing.T) {
	app, r, server := setup(t, 0)
	prefix := []byte("ClientHello bytes read before the decision")
	request := random(3<<20 + 7)
	response := random(5<<20 + 3)
	done := run(r, prefix)

	serverGot := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(server) // ends only when the relay half-closes its write side
		serverGot <- b
		server.Write(response)
		server.CloseWrite()
	}()
	if _, err := app.Write(request); err != nil {
		t.Fatal(err)
	}
	app.CloseWrite()
	got, err := io.ReadAll(app)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(<-serverGot, append(append([]byte{}, prefix...), request...)) {
		t.Error("the server did not get prefix+request intact")
	}
	if !bytes.Equal(got, response) {
		t.Errorf("the client got %d bytes, want the %d-byte response", len(got), len(response))
	}
	res := wait(t, done, 5*time.Second)
	if res.Up != int64(len(prefix)+len(request)) || res.Down != int64(len(response)) {
		t.Errorf("counted up %d down %d, want %d and %d", res.Up, res.Down, len(prefix)+len(request), len(response))
	}
	if res.Reason != ReasonEOF || res.Err != nil {
		t.Errorf("reason %q err %v, want eof", res.Reason, res.Err)
	}
}

func TestIdle(t *testing.T) {
	const idle = 200 * time.Millisecond
	app, r, server := setup(t, idle)
	start := time.Now()
	done := run(r, nil)

	// Traffic with pauses shorter than idle, in either direction, keeps it open.
	buf := make([]byte, 1)
	for i := 0; i < 8; i++ {
		w, rd := app, server
		if i%2 == 1 {
			w, rd = server, app
		}
		if _, err := w.Write([]byte{byte(i)}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if _, err := io.ReadFull(rd, buf); err != nil {
			t.Fatalf("read %d: %v (the relay closed an active connection after %v)", i, err, time.Since(start))
		}
		if i < 7 {
			time.Sleep(idle / 2)
		}
	}
	quiet := time.Now()
	res := wait(t, done, 5*time.Second)
	if res.Reason != ReasonIdle {
		t.Fatalf("reason %q, want idle", res.Reason)
	}
	if d := time.Since(quiet); d < idle {
		t.Errorf("closed after %v of silence, before the idle timeout %v", d, idle)
	}
	if res.Up != 4 || res.Down != 4 {
		t.Errorf("counted %d up, %d down; want 4 and 4", res.Up, res.Down)
	}
	for _, c := range []*net.TCPConn{app, server} {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(buf); err == nil || errors.Is(err, errTimeout) {
			t.Errorf("a side is still open after idle: %v", err)
		}
	}
}

var errTimeout = errors.New("timeout")

// A half-closed relay is judged idle by the direction that is left.
func TestIdleAfterHalfClose(t *testing.T) {
	app, r, server := setup(t, 100*time.Millisecond)
	done := run(r, nil)
	app.CloseWrite()
	if _, err := io.ReadAll(server); err != nil {
		t.Fatal(err)
	}
	if res := wait(t, done, 5*time.Second); res.Reason != ReasonIdle {
		t.Errorf("reason %q, want idle", res.Reason)
	}
}

func TestCancel(t *testing.T) {
	for _, before := range []bool{false, true} {
		app, r, server := setup(t, time.Hour)
		if before {
			r.Cancel("session ended")
		}
		done := run(r, []byte("prefix"))
		if !before {
			app.Write([]byte("x"))
			io.ReadFull(server, make([]byte, 7))
			r.Cancel("policy")
			r.Cancel("later reasons do not count")
		}
		res := wait(t, done, 2*time.Second)
		want := "policy"
		if before {
			want = "session ended"
		}
		if res.Reason != want || res.Err != nil {
			t.Errorf("before=%v: reason %q err %v, want %q", before, res.Reason, res.Err, want)
		}
		for name, c := range map[string]*net.TCPConn{"client": app, "server": server} {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := io.ReadAll(c); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Errorf("before=%v: the %s's side was not closed", before, name)
				}
			}
		}
	}
}

// A reset on one side closes the other.
func TestResetClosesBoth(t *testing.T) {
	app, r, server := setup(t, 0)
	done := run(r, nil)
	app.Write([]byte("hello"))
	io.ReadFull(server, make([]byte, 5))
	server.SetLinger(0) // Close sends RST
	server.Close()
	res := wait(t, done, 2*time.Second)
	if res.Reason != ReasonReset || res.Err != nil {
		t.Errorf("reason %q err %v, want reset without an error", res.Reason, res.Err)
	}
	app.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadAll(app); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Error("the client's side was not closed")
		}
	}
}

// BenchmarkRelay measures bulk throughput over loopback through a relay: app → relay →
// server, 1 MiB per operation.
func BenchmarkRelay(b *testing.B) {
	for _, idle := range []time.Duration{0, 10 * time.Minute} {
		name := "idle=off"
		if idle > 0 {
			name = "idle=10m"
		}
		b.Run(name, func(b *testing.B) {
			app, client := pair(b)
			upstream, server := pair(b)
			r := &Relay{Client: client, Upstream: upstream, Idle: idle}
			done := make(chan Result, 1)
			go func() { done <- r.Run(nil) }()
			drained := make(chan int64, 1)
			go func() {
				n, _ := io.Copy(io.Discard, server)
				drained <- n
			}()
			chunk := make([]byte, 1<<20)
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := app.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			app.CloseWrite()
			if n := <-drained; n != int64(b.N)*int64(len(chunk)) {
				b.Fatalf("server got %d bytes, want %d", n, int64(b.N)*int64(len(chunk)))
			}
			b.StopTimer()
			server.Close()
			<-done
		})
	}
}

// BenchmarkLoopback is the baseline for BenchmarkRelay: the same transfer without a relay.
func BenchmarkLoopback(b *testing.B) {
	app, server := pair(b)
	drained := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, server)
		drained <- n
	}()
	chunk := make([]byte, 1<<20)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := app.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	app.CloseWrite()
	<-drained
}

// RunAfter: the server's bytes reach the client while the gate waits for the client's
// first bytes, nothing reaches the server before the gate returns, and a gate that fails
// closes both sides.
func TestRunAfter(t *testing.T) {
	app, r, server := setup(t, 5*time.Second)
	gateSaw := make(chan []byte, 1)
	done := make(chan Result, 1)
	go func() {
		done <- r.RunAfter(func() ([]byte, error) {
			if err := r.WaitClient(); err != nil {
				return nil, err
			}
			b := make([]byte, 5)
			_, err := io.ReadFull(r.Client, b)
			gateSaw <- b
			return append([]byte("gated:"), b...), err
		})
	}()
	server.Write([]byte("banner"))
	got := make([]byte, 6)
	app.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadFull(app, got); err != nil || string(got) != "banner" {
		t.Fatalf("the server's first bytes before the client spoke: %q %v", got, err)
	}
	app.Write([]byte("hello world"))
	if b := <-gateSaw; string(b) != "hello" {
		t.Fatalf("the gate read %q", b)
	}
	got = make([]byte, len("gated:hello world"))
	server.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadFull(server, got); err != nil || string(got) != "gated:hello world" {
		t.Fatalf("the server got %q %v", got, err)
	}
	app.Close()
	server.Close()
	if res := wait(t, done, 3*time.Second); res.Up != int64(len(got)) || res.Down != 6 {
		t.Errorf("counted up %d down %d, want %d and 6", res.Up, res.Down, len(got))
	}

	_, r, server = setup(t, 0)
	res := r.RunAfter(func() ([]byte, error) { return nil, errors.New("refused") })
	if res.Reason != ReasonError || res.Up != 0 {
		t.Errorf("a failed gate: %+v", res)
	}
	server.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := server.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("the server's side stayed open after a failed gate: %d %v", n, err)
	}
}

// A gate that waits for a client that never speaks ends when nothing moves for Idle.
func TestWaitClientIdle(t *testing.T) {
	_, r, _ := setup(t, 200*time.Millisecond)
	res := r.RunAfter(func() ([]byte, error) { return nil, r.WaitClient() })
	if res.Reason != ReasonIdle {
		t.Errorf("reason %q, want idle", res.Reason)
	}
}
