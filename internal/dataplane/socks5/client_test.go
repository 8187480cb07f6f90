package socks5

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// serve runs the server side of one exchange over a pipe with the package's own parsers,
// answering rep, and returns what it read.
func serve(t *testing.T, c net.Conn, rep Reply, authOK bool) <-chan Request {
	out := make(chan Request, 1)
	go func() {
		defer close(out)
		methods, err := ReadGreeting(c)
		if err != nil || !bytes.Contains(methods, []byte{MethodUserPass}) {
			return
		}
		WriteMethod(c, MethodUserPass)
		if u, p, err := ReadCredentials(c); err != nil || u != "ses_a" || p != "tok" {
			return
		}
		WriteAuthStatus(c, authOK)
		if !authOK {
			return
		}
		q, err := ReadRequest(c)
		if err != nil {
			return
		}
		WriteReply(c, rep, netip.MustParseAddrPort("127.0.0.1:4242"))
		out <- q
	}()
	return out
}

// tcpPair is a connected pair over loopback: net.Pipe has no buffer, and the client
// writes its messages at once while the server answers the first.
func tcpPair(t *testing.T) (client, server net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if server, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []net.Conn{client, server} {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		t.Cleanup(func() { c.Close() })
	}
	return client, server
}

func TestConnect(t *testing.T) {
	tests := []struct {
		name   string
		host   string
		rep    Reply
		authOK bool
		want   Request
		err    error
	}{
		{"name stays a name", "git.example.test", Succeeded, true, Request{Cmd: CmdConnect, Host: "git.example.test", Port: 22}, nil},
		{"IPv4", "203.0.113.7", Succeeded, true, Request{Cmd: CmdConnect, Addr: netip.MustParseAddr("203.0.113.7"), Port: 22}, nil},
		{"IPv6", "2001:db8::1", Succeeded, true, Request{Cmd: CmdConnect, Addr: netip.MustParseAddr("2001:db8::1"), Port: 22}, nil},
		{"not allowed", "a.test", NotAllowed, true, Request{Cmd: CmdConnect, Host: "a.test", Port: 22}, &ReplyError{NotAllowed}},
		{"bad credentials", "a.test", Succeeded, false, Request{}, ErrAuthFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := tcpPair(t)
			got := serve(t, server, tt.rep, tt.authOK)
			bound, err := Connect(client, "ses_a", "tok", tt.host, 22)
			var re *ReplyError
			switch {
			case tt.err == nil && err != nil:
				t.Fatal(err)
			case errors.As(tt.err, &re):
				var gre *ReplyError
				if !errors.As(err, &gre) || gre.Reply != re.Reply {
					t.Fatalf("error %v, want %v", err, tt.err)
				}
			case tt.err != nil && !errors.Is(err, tt.err):
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if err == nil && bound != netip.MustParseAddrPort("127.0.0.1:4242") {
				t.Errorf("bound %v", bound)
			}
			server.Close()
			if q := <-got; q != tt.want {
				t.Errorf("the server read %+v, want %+v", q, tt.want)
			}
		})
	}
}

func TestConnectRefusesBadArguments(t *testing.T) {
	long := string(bytes.Repeat([]byte("x"), 256))
	for _, args := range [][3]string{{"", "p", "h"}, {"u", "", "h"}, {"u", "p", ""}, {long, "p", "h"}, {"u", long, "h"}, {"u", "p", long}} {
		if _, err := Connect(struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(nil), io.Discard}, args[0], args[1], args[2], 1); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

func TestConnectNoMethod(t *testing.T) {
	rw := struct {
		io.Reader
		io.Writer
	}{bytes.NewReader([]byte{Version, MethodNoAcceptable}), io.Discard}
	if _, err := Connect(rw, "u", "p", "h", 1); !errors.Is(err, ErrNoMethod) {
		t.Errorf("error %v, want ErrNoMethod", err)
	}
}

// FuzzReadReply: whatever the server sends, the reader does not panic, and a success has
// a valid address.
func FuzzReadReply(f *testing.F) {
	f.Add(AppendReply(nil, Succeeded, netip.MustParseAddrPort("127.0.0.1:1")))
	f.Add(AppendReply(nil, NotAllowed, netip.AddrPort{}))
	f.Add([]byte{5, 0, 0, 3, 1, 'a', 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ReadReply(bytes.NewReader(data))
		if err == nil && (!a.Addr().IsValid() && data[3] != AtypDomain) {
			t.Fatalf("success with %v", a)
		}
	})
}
