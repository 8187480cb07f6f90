package proxy

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// FuzzSOCKSListener sends any bytes to a SOCKS5 listener whose session's policy denies
// everything, then ends its side. Whatever they are, the listener answers only with the
// protocol's messages in their order, closes the connection, never records an allow, and
// records nothing unless the bytes carried the session's credentials.
func FuzzSOCKSListener(f *testing.F) {
	const hello = "\x05\x01\x02\x01\x05ses_a\x05tok_a"
	for _, s := range []string{
		"", "\x05\x01\x00", hello, hello + "\x05\x01\x00\x03\x10api.example.test\x01\xbb",
		hello + "\x05\x01\x00\x01\x7f\x00\x00\x32\x00\x16", hello + "\x05\x02\x00\x01\x00\x00\x00\x00\x00\x01",
		hello + "\x05\x01\x00\x05", hello + "\x05\x01\x00\x03\x00", "\x05\x01\x02\x01\x05ses_a\x05tok_b",
		"CONNECT a:1 HTTP/1.1\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	auth := &fakeSessions{m: map[string]authEntry{}}
	auth.add("ses_a", "tok_a", set(f, policy.Policy{}))
	rec := &sink{}
	p, err := New(Config{
		Sessions: auth, Sink: rec, HandshakeTimeout: time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	ln := listen(f)
	go p.ServeSOCKS(ln)
	f.Cleanup(func() { p.Close() })

	f.Fuzz(func(t *testing.T, data []byte) {
		rec.reset()
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
		out, err := io.ReadAll(c)
		if isTimeout(err) {
			t.Fatalf("the connection stayed open after %q (answer %q)", data, out)
		}
		if err != nil && !isReset(err) {
			t.Fatalf("reading the answer: %v", err)
		}
		if !validSOCKSAnswer(out) {
			t.Fatalf("answer %q to %q", out, data)
		}
		// The records of this connection are sent before it is closed.
		for _, r := range rec.all() {
			if r.Decision == events.Allow {
				t.Fatalf("allowed: %+v", r)
			}
			if !bytes.Contains(data, []byte("\x05ses_a\x05tok_a")) {
				t.Fatalf("a record without the credentials: %+v", r)
			}
		}
	})
}

// isReset: the server closed with input unread, which resets the connection.
func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// validSOCKSAnswer: what a server that denies everything may answer, in order: a method
// choice (user/password, or none acceptable and the end), an authentication status (a
// failure ends it), a reply that is a refusal with no address.
func validSOCKSAnswer(b []byte) bool {
	refusal := func(rep byte) []byte { return []byte{5, rep, 0, 1, 0, 0, 0, 0, 0, 0} }
	for _, ok := range [][]byte{
		{}, {5, 0xff}, {5, 2}, {5, 2, 1, 1}, {5, 2, 1, 0},
		append([]byte{5, 2, 1, 0}, refusal(2)...),
		append([]byte{5, 2, 1, 0}, refusal(7)...),
		append([]byte{5, 2, 1, 0}, refusal(8)...),
	} {
		if bytes.Equal(b, ok) {
			return true
		}
	}
	return false
}
