package socks5

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
)

func TestReadGreeting(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		methods string
		err     error // nil: accepted
		rest    string
	}{
		{"user/pass", "\x05\x01\x02", "\x02", nil, ""},
		{"several, order kept", "\x05\x03\x00\x01\x02", "\x00\x01\x02", nil, ""},
		{"pipelined bytes stay", "\x05\x01\x02\x01\x05", "\x02", nil, "\x01\x05"},
		{"255 methods", "\x05\xff" + strings.Repeat("\x02", 255), strings.Repeat("\x02", 255), nil, ""},
		{"empty", "", "", io.EOF, ""},
		{"version 4", "\x04\x01\x00", "", ErrMalformed, ""},
		{"HTTP instead", "CONNECT a:1 HTTP/1.1\r\n\r\n", "", ErrMalformed, ""},
		{"no method", "\x05\x00", "", ErrMalformed, ""},
		{"cut in the header", "\x05", "", io.ErrUnexpectedEOF, ""},
		{"cut in the methods", "\x05\x03\x00\x02", "", io.ErrUnexpectedEOF, ""},
		{"count but no methods", "\x05\x01", "", io.ErrUnexpectedEOF, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := strings.NewReader(tt.in)
			got, err := ReadGreeting(r)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if string(got) != tt.methods {
				t.Errorf("methods %q, want %q", got, tt.methods)
			}
			if rest, _ := io.ReadAll(r); err == nil && string(rest) != tt.rest {
				t.Errorf("left %q unread, want %q", rest, tt.rest)
			}
		})
	}
}

func TestReadCredentials(t *testing.T) {
	long := strings.Repeat("x", 255)
	tests := []struct {
		name       string
		in         string
		user, pass string
		err        error
	}{
		{"ok", "\x01\x07ses_abc\x03tok", "ses_abc", "tok", nil},
		{"255 each", "\x01\xff" + long + "\xff" + long, long, long, nil},
		{"binary bytes kept as sent", "\x01\x02a\x00\x02:@", "a\x00", ":@", nil},
		{"empty", "", "", "", io.EOF},
		{"version 5 (a second greeting)", "\x05\x01\x02", "", "", ErrMalformed},
		{"version 0", "\x00\x01a\x01b", "", "", ErrMalformed},
		{"empty user", "\x01\x00\x01b", "", "", ErrMalformed},
		{"empty password", "\x01\x01a\x00", "", "", ErrMalformed},
		{"cut in the user", "\x01\x05ab", "", "", io.ErrUnexpectedEOF},
		{"cut before the password length", "\x01\x01a", "", "", io.ErrUnexpectedEOF},
		{"cut in the password", "\x01\x01a\x04pw", "", "", io.ErrUnexpectedEOF},
		{"only the version", "\x01", "", "", io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, p, err := ReadCredentials(strings.NewReader(tt.in))
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if u != tt.user || p != tt.pass {
				t.Errorf("got %q, %q; want %q, %q", u, p, tt.user, tt.pass)
			}
		})
	}
}

func TestReadRequest(t *testing.T) {
	v4 := netip.MustParseAddr("203.0.113.7")
	v6 := netip.MustParseAddr("2001:db8::1")
	tests := []struct {
		name  string
		in    string
		want  Request
		err   error
		reply Reply // for an *Error
	}{
		{"connect IPv4", "\x05\x01\x00\x01\xcb\x00\x71\x07\x00\x16", Request{Cmd: CmdConnect, Addr: v4, Port: 22}, nil, 0},
		{"connect IPv6", "\x05\x01\x00\x04" + string(v6.AsSlice()) + "\x01\xbb", Request{Cmd: CmdConnect, Addr: v6, Port: 443}, nil, 0},
		{"IPv4-mapped IPv6 is IPv4", "\x05\x01\x00\x04" + string(netip.MustParseAddr("::ffff:203.0.113.7").AsSlice()) + "\x00\x50",
			Request{Cmd: CmdConnect, Addr: v4, Port: 80}, nil, 0},
		{"connect name", "\x05\x01\x00\x03\x0aGitHub.com\x00\x16", Request{Cmd: CmdConnect, Host: "GitHub.com", Port: 22}, nil, 0},
		{"name as sent, not judged", "\x05\x01\x00\x03\x05a b\x00.\xff\xff", Request{Cmd: CmdConnect, Host: "a b\x00.", Port: 65535}, nil, 0},
		{"bind is read, answered by the caller", "\x05\x02\x00\x01\x00\x00\x00\x00\x00\x01", Request{Cmd: CmdBind, Addr: netip.IPv4Unspecified(), Port: 1}, nil, 0},
		{"udp associate too", "\x05\x03\x00\x01\x00\x00\x00\x00\x00\x01", Request{Cmd: CmdUDPAssociate, Addr: netip.IPv4Unspecified(), Port: 1}, nil, 0},
		{"unknown command too", "\x05\x09\x00\x03\x01a\x00\x01", Request{Cmd: 9, Host: "a", Port: 1}, nil, 0},
		{"empty", "", Request{}, io.EOF, 0},
		{"version 4", "\x04\x01\x00\x01\x01\x02\x03\x04\x00\x16", Request{}, ErrMalformed, 0},
		{"reserved byte set", "\x05\x01\x01\x01\x01\x02\x03\x04\x00\x16", Request{}, ErrMalformed, 0},
		{"address type 2", "\x05\x01\x00\x02\x01\x02\x03\x04\x00\x16", Request{}, ErrMalformed, AddressNotSupported},
		{"address type 0", "\x05\x01\x00\x00", Request{}, ErrMalformed, AddressNotSupported},
		{"empty name", "\x05\x01\x00\x03\x00\x00\x16", Request{}, ErrMalformed, 0},
		{"CONNECT to port 0", "\x05\x01\x00\x03\x01a\x00\x00", Request{}, ErrMalformed, 0},
		{"UDP ASSOCIATE from 0.0.0.0:0", "\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00", Request{Cmd: CmdUDPAssociate, Addr: netip.IPv4Unspecified()}, nil, 0},
		{"BIND to port 0", "\x05\x02\x00\x03\x01a\x00\x00", Request{Cmd: CmdBind, Host: "a"}, nil, 0},
		{"cut in the header", "\x05\x01\x00", Request{}, io.ErrUnexpectedEOF, 0},
		{"cut in IPv4", "\x05\x01\x00\x01\x01\x02", Request{}, io.ErrUnexpectedEOF, 0},
		{"cut in IPv6", "\x05\x01\x00\x04\x20\x01", Request{}, io.ErrUnexpectedEOF, 0},
		{"cut in the name", "\x05\x01\x00\x03\x05ab", Request{}, io.ErrUnexpectedEOF, 0},
		{"no name length", "\x05\x01\x00\x03", Request{}, io.ErrUnexpectedEOF, 0},
		{"cut in the port", "\x05\x01\x00\x03\x01a\x00", Request{}, io.ErrUnexpectedEOF, 0},
		{"no port", "\x05\x01\x00\x01\x01\x02\x03\x04", Request{}, io.ErrUnexpectedEOF, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadRequest(strings.NewReader(tt.in))
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			var re *Error
			if errors.As(err, &re) != (tt.reply != 0) || re != nil && re.Reply != tt.reply {
				t.Errorf("error %v, want one that answers %v", err, tt.reply)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReadRequestLeavesPipelinedBytes(t *testing.T) {
	r := strings.NewReader("\x05\x01\x00\x03\x01a\x01\xbb\x16\x03\x01")
	if _, err := ReadRequest(r); err != nil {
		t.Fatal(err)
	}
	if rest, _ := io.ReadAll(r); string(rest) != "\x16\x03\x01" {
		t.Errorf("left %q, want the ClientHello's first bytes", rest)
	}
}

func TestWrites(t *testing.T) {
	tests := []struct {
		name  string
		write func(w io.Writer) error
		want  string
	}{
		{"method user/pass", func(w io.Writer) error { return WriteMethod(w, MethodUserPass) }, "\x05\x02"},
		{"no acceptable method", func(w io.Writer) error { return WriteMethod(w, MethodNoAcceptable) }, "\x05\xff"},
		{"auth ok", func(w io.Writer) error { return WriteAuthStatus(w, true) }, "\x01\x00"},
		{"auth failed", func(w io.Writer) error { return WriteAuthStatus(w, false) }, "\x01\x01"},
		{"success IPv4", func(w io.Writer) error {
			return WriteReply(w, Succeeded, netip.MustParseAddrPort("127.0.0.1:4242"))
		}, "\x05\x00\x00\x01\x7f\x00\x00\x01\x10\x92"},
		{"success IPv4-mapped is IPv4", func(w io.Writer) error {
			return WriteReply(w, Succeeded, netip.MustParseAddrPort("[::ffff:127.0.0.1]:1"))
		}, "\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x01"},
		{"success IPv6", func(w io.Writer) error {
			return WriteReply(w, Succeeded, netip.MustParseAddrPort("[::1]:443"))
		}, "\x05\x00\x00\x04" + strings.Repeat("\x00", 15) + "\x01\x01\xbb"},
		{"not allowed carries no address", func(w io.Writer) error {
			return WriteReply(w, NotAllowed, netip.AddrPort{})
		}, "\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00"},
		{"command not supported", func(w io.Writer) error {
			return WriteReply(w, CommandNotSupported, netip.AddrPort{})
		}, "\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tt.write(&b); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Errorf("wrote %q, want %q", b.String(), tt.want)
			}
		})
	}
}

func TestReplyString(t *testing.T) {
	for r, want := range map[Reply]string{NotAllowed: "connection not allowed by ruleset", AddressNotSupported: "address type not supported", 0x42: "reply 0x42"} {
		if r.String() != want {
			t.Errorf("%d: %q, want %q", byte(r), r.String(), want)
		}
	}
}

func TestRequestString(t *testing.T) {
	for q, want := range map[Request]string{
		{Host: "a.test", Port: 22}:                            "a.test:22",
		{Addr: netip.MustParseAddr("2001:db8::1"), Port: 443}: "[2001:db8::1]:443",
	} {
		if q.String() != want {
			t.Errorf("%q, want %q", q.String(), want)
		}
	}
}
