package socks5

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// consumed runs parse on data and returns how many bytes it read.
func consumed(data []byte, parse func(io.Reader) error) (int, error) {
	r := bytes.NewReader(data)
	err := parse(r)
	return len(data) - r.Len(), err
}

// FuzzReadGreeting: never more than the message; a success re-encodes to what was read.
func FuzzReadGreeting(f *testing.F) {
	for _, s := range []string{"\x05\x01\x02", "\x05\x02\x00\x02", "\x05\x00", "\x04\x01\x00", "", "\x05\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var methods []byte
		n, err := consumed(data, func(r io.Reader) (err error) { methods, err = ReadGreeting(r); return })
		if err != nil {
			return
		}
		want := append([]byte{Version, byte(len(methods))}, methods...)
		if !bytes.Equal(data[:n], want) || len(methods) == 0 {
			t.Fatalf("read %q as %q", data[:n], methods)
		}
	})
}

// FuzzReadCredentials: a success re-encodes to exactly the bytes read, with both fields
// 1 to 255 bytes.
func FuzzReadCredentials(f *testing.F) {
	for _, s := range []string{"\x01\x07ses_abc\x03tok", "\x01\x00\x00", "\x01\x01a", "\x05\x01\x02"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var u, p string
		n, err := consumed(data, func(r io.Reader) (err error) { u, p, err = ReadCredentials(r); return })
		if err != nil {
			return
		}
		if len(u) == 0 || len(u) > 255 || len(p) == 0 || len(p) > 255 {
			t.Fatalf("lengths %d, %d", len(u), len(p))
		}
		want := append(append(append([]byte{AuthVersion, byte(len(u))}, u...), byte(len(p))), p...)
		if !bytes.Equal(data[:n], want) {
			t.Fatalf("read %q as %q, %q", data[:n], u, p)
		}
	})
}

// FuzzReadRequest: a success has one of Host and Addr, never a CONNECT to port 0, an unmapped address,
// and read exactly its message; a failure that asks for a reply asks for 0x08.
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		"\x05\x01\x00\x01\xcb\x00\x71\x07\x00\x16", "\x05\x01\x00\x03\x0agithub.com\x00\x16",
		"\x05\x01\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\x7f\x00\x00\x01\x01\xbb",
		"\x05\x02\x00\x02", "\x05\x01\x00\x03\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var q Request
		n, err := consumed(data, func(r io.Reader) (err error) { q, err = ReadRequest(r); return })
		if err != nil {
			var re *Error
			if errors.As(err, &re) && re.Reply != AddressNotSupported {
				t.Fatalf("error %v asks for %v", err, re.Reply)
			}
			return
		}
		if (q.Host != "") == q.Addr.IsValid() || (q.Port == 0 && q.Cmd == CmdConnect) || q.Addr.Is4In6() {
			t.Fatalf("request %+v", q)
		}
		var want []byte
		switch {
		case q.Host != "":
			want = append([]byte{Version, q.Cmd, 0, AtypDomain, byte(len(q.Host))}, q.Host...)
		case q.Addr.Is4() && data[3] == AtypIPv4:
			want = append([]byte{Version, q.Cmd, 0, AtypIPv4}, q.Addr.AsSlice()...)
		default:
			a := q.Addr.As16()
			want = append([]byte{Version, q.Cmd, 0, AtypIPv6}, a[:]...)
		}
		want = append(want, byte(q.Port>>8), byte(q.Port))
		if !bytes.Equal(data[:n], want) {
			t.Fatalf("read %q as %+v", data[:n], q)
		}
	})
}
