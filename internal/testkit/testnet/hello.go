package testnet

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// ClientHello returns the first flight a crypto/tls client with cfg sends: the bytes a
// test writes itself when it must cut them, delay them or change them.
func ClientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c := &captureConn{}
	err := tls.Client(c, cfg).Handshake()
	if err == nil || len(c.out) == 0 {
		t.Fatalf("testnet: capturing a ClientHello: handshake error %v, %d bytes", err, len(c.out))
	}
	return c.out
}

// captureConn keeps what a TLS client writes and fails its first read, which ends the
// handshake right after the ClientHello.
type captureConn struct{ out []byte }

func (c *captureConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *captureConn) Write(p []byte) (int, error)      { c.out = append(c.out, p...); return len(p), nil }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *captureConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }
