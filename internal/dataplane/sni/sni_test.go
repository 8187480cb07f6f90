package sni

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"testing"
	"testing/iotest"

	"github.com/egressd/egressd/internal/testkit/testnet"
)

// clientHello returns the first flight a crypto/tls client with cfg sends.
func clientHello(t testing.TB, cfg *tls.Config) []byte { return testnet.ClientHello(t, cfg) }

// bigHello is a handshake record that announces a 60,000-byte ClientHello and keeps coming.
func bigHello() []byte {
	var b []byte
	for i := 0; i < 4; i++ {
		rec := make([]byte, 5+16384)
		rec[0], rec[1], rec[2] = 0x16, 3, 1
		binary.BigEndian.PutUint16(rec[3:], 16384)
		if i == 0 {
			rec[5] = 1 // client_hello
			rec[6], rec[7], rec[8] = 0x00, 0xea, 0x60
		}
		b = append(b, rec...)
	}
	return b
}

func TestServerName(t *testing.T) {
	withSNI := clientHello(t, &tls.Config{ServerName: "api.example.com"})
	tls12 := clientHello(t, &tls.Config{ServerName: "pypi.org", MaxVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}})
	idn := clientHello(t, &tls.Config{ServerName: "xn--bcher-kva.example"})
	trailingDot := clientHello(t, &tls.Config{ServerName: "example.com."}) // crypto/tls drops the dot
	noSNI := clientHello(t, &tls.Config{InsecureSkipVerify: true})
	ipSNI := clientHello(t, &tls.Config{ServerName: "192.0.2.1"}) // clients never send an IP as SNI

	tests := []struct {
		name    string
		in      []byte
		want    string
		wantErr error
	}{
		{"TLS 1.3 with SNI", withSNI, "api.example.com", nil},
		{"TLS 1.2 with ALPN", tls12, "pypi.org", nil},
		{"punycode name", idn, "xn--bcher-kva.example", nil},
		{"trailing dot stripped by the client", trailingDot, "example.com", nil},
		{"no SNI", noSNI, "", ErrNoServerName},
		{"IP address: no SNI", ipSNI, "", ErrNoServerName},
		{"empty", nil, "", ErrTruncated},
		{"record header only", withSNI[:5], "", ErrTruncated},
		{"truncated", withSNI[:len(withSNI)-10], "", ErrTruncated},
		{"plain HTTP", []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), "", ErrNotTLS},
		{"SSH banner", []byte("SSH-2.0-OpenSSH_9.6\r\n"), "", ErrNotTLS},
		{"alert record", []byte{0x15, 3, 3, 0, 2, 2, 40}, "", ErrNotTLS},
		{"handshake record, not a ClientHello", []byte{0x16, 3, 1, 0, 4, 2, 0, 0, 0}, "", ErrMalformed},
		// Sent at once with the hello: a second ClientHello (the destination might take it
		// instead of the one judged) is refused; early data (an application_data record)
		// is not the gateway's to judge.
		{"a second ClientHello behind the first", append(slices.Clone(withSNI), clientHello(t, &tls.Config{ServerName: "evil.example.com"})...), "", ErrBeyondHello},
		{"early data behind the hello", append(slices.Clone(withSNI), 0x17, 3, 3, 0, 2, 'h', 'i'), "api.example.com", nil},
		{"garbage in a handshake record", append([]byte{0x16, 3, 1, 0, 32}, bytes.Repeat([]byte{0xff}, 32)...), "", ErrMalformed},
		{"oversized ClientHello", bigHello(), "", ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, slow := range []bool{false, true} {
				var r io.Reader = bytes.NewReader(tt.in)
				if slow {
					r = iotest.OneByteReader(r)
				}
				got, read, err := ServerName(r)
				if slow && errors.Is(tt.wantErr, ErrBeyondHello) {
					// Read a byte at a time, the hello ends before the next record is read:
					// only bytes sent with the hello are seen.
					if err != nil || got != "api.example.com" {
						t.Fatalf("slow: %q, %v; want the first hello's name", got, err)
					}
					continue
				}
				if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
					t.Fatalf("slow=%v: error %v, want %v", slow, err, tt.wantErr)
				}
				if got != tt.want {
					t.Errorf("slow=%v: name %q, want %q", slow, got, tt.want)
				}
				if !bytes.HasPrefix(tt.in, read) {
					t.Errorf("slow=%v: the bytes read are not a prefix of the input", slow)
				}
				if len(read) > MaxHelloBytes {
					t.Errorf("slow=%v: read %d bytes, more than MaxHelloBytes", slow, len(read))
				}
			}
		})
	}
}

// TestServerNameReplay checks that the bytes read plus what is left in the reader are the
// client's stream, whatever the client sent after its ClientHello.
func TestServerNameReplay(t *testing.T) {
	hello := clientHello(t, &tls.Config{ServerName: "example.com"})
	extra := []byte("early data the destination must still see")
	in := append(append([]byte{}, hello...), extra...)
	r := bytes.NewReader(in)
	name, read, err := ServerName(r)
	if err != nil || name != "example.com" {
		t.Fatalf("ServerName = %q, %v", name, err)
	}
	rest, _ := io.ReadAll(r)
	if got := append(append([]byte{}, read...), rest...); !bytes.Equal(got, in) {
		t.Fatalf("read+rest differs from the input: %d+%d bytes of %d", len(read), len(rest), len(in))
	}
	if len(read) < len(hello) {
		t.Fatalf("read %d bytes, the ClientHello has %d", len(read), len(hello))
	}
}

// TestServerNameReadError passes a reader's error (a deadline) through, wrapped.
func TestServerNameReadError(t *testing.T) {
	hello := clientHello(t, &tls.Config{ServerName: "example.com"})
	r := io.MultiReader(bytes.NewReader(hello[:20]), iotest.ErrReader(errDeadline))
	_, read, err := ServerName(r)
	if !errors.Is(err, errDeadline) {
		t.Fatalf("error %v, want it to wrap %v", err, errDeadline)
	}
	if len(read) != 20 {
		t.Fatalf("read %d bytes, want 20", len(read))
	}
}

var errDeadline = errors.New("i/o timeout")

// countingReader counts what ServerName pulls from its source.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func FuzzServerName(f *testing.F) {
	f.Add(clientHello(f, &tls.Config{ServerName: "api.example.com"}))
	f.Add(clientHello(f, &tls.Config{InsecureSkipVerify: true}))
	f.Add(clientHello(f, &tls.Config{ServerName: "pypi.org", MaxVersion: tls.VersionTLS12}))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Add(bigHello()[:100])
	f.Fuzz(func(t *testing.T, in []byte) {
		src := &countingReader{r: bytes.NewReader(in)}
		name, read, err := ServerName(src)
		if src.n > MaxHelloBytes {
			t.Fatalf("read %d bytes from the client, limit %d", src.n, MaxHelloBytes)
		}
		if len(read) != src.n || !bytes.HasPrefix(in, read) {
			t.Fatalf("returned %d bytes, read %d; prefix of the input: %v", len(read), src.n, bytes.HasPrefix(in, read))
		}
		if (err == nil) != (name != "") {
			t.Fatalf("name %q with error %v", name, err)
		}
	})
}
