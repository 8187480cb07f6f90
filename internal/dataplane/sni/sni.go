// Package sni reads the server name of a TLS ClientHello without terminating TLS.
//
// The gateway must judge a TLS connection by the name the client asks for (DESIGN §2.2),
// yet pass the handshake on untouched to the destination. ServerName reads the ClientHello
// from the client, returns its server name indication (SNI), and returns every byte it read,
// so that the caller can write them to the destination first and then copy the rest of the
// connection (with splice, on Linux) as if nothing had been read.
//
// Parsing is crypto/tls's own, not a hand-written parser: ServerName runs tls.Server over a
// read-only connection that replays the client's bytes, captures ClientHelloInfo.ServerName
// in GetConfigForClient, and aborts the handshake there. What the standard library accepts
// as a ClientHello is what the gateway accepts; what it rejects is refused.
//
// Reading is bounded: at most MaxHelloBytes are read from the client, and the caller bounds
// the time with a read deadline on its connection.
package sni

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// MaxHelloBytes bounds what ServerName reads from a client. A ClientHello is a few hundred
// bytes, about 1.8 KiB with a post-quantum key share, a little more with padding or many
// pre-shared keys; 16 KiB leaves room for any real client and keeps a stalling or hostile
// one from making the gateway buffer much.
const MaxHelloBytes = 16 << 10

// Errors of ServerName, for errors.Is. A read error from the client (a deadline, a reset)
// is returned wrapped as it is.
var (
	// ErrNotTLS: the first bytes are not a TLS handshake record (plain HTTP on port 443, say).
	ErrNotTLS = errors.New("not a TLS handshake")
	// ErrNoServerName: a valid ClientHello without a server name (TLS to an IP address).
	ErrNoServerName = errors.New("TLS ClientHello has no server name (SNI)")
	// ErrTruncated: the client closed the connection before the ClientHello was complete.
	ErrTruncated = errors.New("TLS ClientHello is truncated")
	// ErrTooLarge: the ClientHello does not fit in MaxHelloBytes.
	ErrTooLarge = errors.New("TLS ClientHello is larger than the gateway reads")
	// ErrMalformed: crypto/tls does not accept the ClientHello.
	ErrMalformed = errors.New("malformed TLS ClientHello")
	// ErrBeyondHello: bytes follow the ClientHello that no client sends before the server
	// has answered: another handshake record (a second ClientHello), or, for HelloEnd,
	// anything in the hello's last record after it.
	ErrBeyondHello = errors.New("bytes after the ClientHello")
)

// errAbort stops the handshake once the ClientHello has been parsed.
var errAbort = errors.New("sni: ClientHello read")

// ServerName reads one ClientHello from r and returns its server name, as the client sent
// it (the caller normalises it), and the bytes it read from r, which the caller must send
// to the destination before anything else. The bytes are returned on error too.
//
// ServerName reads at most MaxHelloBytes from r, and may read a little past the
// ClientHello when the client sent more at once (early data): those bytes are in read too.
func ServerName(r io.Reader) (name string, read []byte, err error) {
	rec := &recorder{r: r, buf: make([]byte, 0, 2048)}
	// The record header tells TLS from anything else with a clear error, before crypto/tls
	// gives its own, vaguer one.
	var hdr [5]byte
	if _, err := io.ReadFull(rec, hdr[:]); err != nil {
		return "", rec.buf, readErr(err)
	}
	if hdr[0] != 0x16 || hdr[1] != 3 {
		return "", rec.buf, ErrNotTLS
	}
	rec.replay = 0 // crypto/tls reads the header again, from the recording

	var hello *tls.ClientHelloInfo
	cfg := &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			hello = h
			return nil, errAbort
		},
	}
	// The context only satisfies the API: the caller's deadline on its connection bounds
	// the reads, and a zero-time deadline on the fake connection is never consulted.
	err = tls.Server(readOnlyConn{rec}, cfg).HandshakeContext(context.Background())
	switch {
	case hello != nil && hello.ServerName == "":
		return "", rec.buf, ErrNoServerName
	case hello != nil:
		// The client sent more at once: a handshake record there would be a second
		// ClientHello, which the destination might take instead of the one judged.
		if end, err := HelloEnd(rec.buf, MaxHelloBytes); err == nil && end > 0 && end < len(rec.buf) && rec.buf[end] == 0x16 {
			return "", rec.buf, fmt.Errorf("%w: a TLS handshake record follows the ClientHello at byte %d", ErrBeyondHello, end)
		}
		return hello.ServerName, rec.buf, nil
	case rec.err != nil:
		return "", rec.buf, readErr(rec.err)
	case err == nil:
		return "", rec.buf, ErrMalformed // unreachable: the handshake cannot succeed
	}
	return "", rec.buf, fmt.Errorf("%w: %v", ErrMalformed, err)
}

// readErr turns a read error of the recorder into ServerName's.
func readErr(err error) error {
	switch {
	case errors.Is(err, ErrTooLarge):
		return ErrTooLarge
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ErrTruncated
	}
	return fmt.Errorf("reading the TLS ClientHello: %w", err)
}

// recorder reads from r, keeping what it read, up to MaxHelloBytes; reads start with a
// replay of the recording from offset replay.
type recorder struct {
	r      io.Reader
	buf    []byte
	replay int   // next recorded byte to hand out again; len(buf) when replay is done
	err    error // the first error from r, or ErrTooLarge
}

func (c *recorder) Read(p []byte) (int, error) {
	if c.replay < len(c.buf) {
		n := copy(p, c.buf[c.replay:])
		c.replay += n
		return n, nil
	}
	if c.err != nil {
		return 0, c.err
	}
	room := MaxHelloBytes - len(c.buf)
	if room <= 0 {
		c.err = ErrTooLarge
		return 0, c.err
	}
	if len(p) > room {
		p = p[:room]
	}
	n, err := c.r.Read(p)
	c.buf = append(c.buf, p[:n]...)
	c.replay = len(c.buf)
	if err != nil {
		c.err = err
	}
	return n, err
}

// readOnlyConn is the net.Conn crypto/tls reads the ClientHello from. Writes (the alert
// crypto/tls sends when the handshake is aborted) go nowhere: the client must not see
// anything from the gateway, and the destination will answer it.
type readOnlyConn struct{ r io.Reader }

func (c readOnlyConn) Read(p []byte) (int, error)     { return c.r.Read(p) }
func (readOnlyConn) Write(p []byte) (int, error)      { return 0, io.ErrClosedPipe }
func (readOnlyConn) Close() error                     { return nil }
func (readOnlyConn) LocalAddr() net.Addr              { return nil }
func (readOnlyConn) RemoteAddr() net.Addr             { return nil }
func (readOnlyConn) SetDeadline(time.Time) error      { return nil }
func (readOnlyConn) SetReadDeadline(time.Time) error  { return nil }
func (readOnlyConn) SetWriteDeadline(time.Time) error { return nil }
