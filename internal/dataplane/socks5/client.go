package socks5

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
)

// ReplyError is a server's reply other than Succeeded to a client's request.
type ReplyError struct{ Reply Reply }

func (e *ReplyError) Error() string {
	return "socks5: the server answered: " + e.Reply.String()
}

// ErrAuthFailed: the server refused the username and password.
var ErrAuthFailed = errors.New("socks5: the server refused the username and password")

// ErrNoMethod: the server accepts none of the methods offered (username/password).
var ErrNoMethod = errors.New("socks5: the server accepts no username/password authentication")

// Connect is the client's side of a CONNECT with username/password authentication over
// rw, a connection to a SOCKS5 server: greeting, credentials, request for host:port (a name
// is sent as a name, ATYP 3, for the server to resolve: socks5h), and the reply. It returns
// the bound address of a success; a refusal is a *ReplyError. After a success rw carries
// the connection to host:port. The caller sets the deadlines. egressctl socks-connect and
// the tests use it.
func Connect(rw io.ReadWriter, user, password, host string, port uint16) (netip.AddrPort, error) {
	if len(user) == 0 || len(user) > 255 || len(password) == 0 || len(password) > 255 {
		return netip.AddrPort{}, errors.New("socks5: the username and the password must be 1 to 255 bytes each")
	}
	if len(host) == 0 || len(host) > 255 {
		return netip.AddrPort{}, errors.New("socks5: the host must be 1 to 255 bytes")
	}
	msg := []byte{Version, 1, MethodUserPass, AuthVersion, byte(len(user))}
	msg = append(msg, user...)
	msg = append(msg, byte(len(password)))
	msg = append(msg, password...)
	// The messages go in one write: a server that reads them one by one gets them all the
	// same, and the exchange takes one round trip less.
	msg = append(msg, Version, CmdConnect, 0)
	if a, err := netip.ParseAddr(host); err == nil && a.Zone() == "" {
		if a.Is4() {
			v := a.As4()
			msg = append(append(msg, AtypIPv4), v[:]...)
		} else {
			v := a.As16()
			msg = append(append(msg, AtypIPv6), v[:]...)
		}
	} else {
		msg = append(append(msg, AtypDomain, byte(len(host))), host...)
	}
	msg = append(msg, byte(port>>8), byte(port))
	if _, err := rw.Write(msg); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks5: writing the request: %w", err)
	}
	var b [2]byte
	if _, err := io.ReadFull(rw, b[:]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks5: reading the method: %w", err)
	}
	switch {
	case b[0] != Version:
		return netip.AddrPort{}, malformed("method answer version %d", b[0])
	case b[1] == MethodNoAcceptable:
		return netip.AddrPort{}, ErrNoMethod
	case b[1] != MethodUserPass:
		return netip.AddrPort{}, malformed("the server chose method %d, not offered", b[1])
	}
	if _, err := io.ReadFull(rw, b[:]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks5: reading the authentication status: %w", err)
	}
	if b[0] != AuthVersion {
		return netip.AddrPort{}, malformed("authentication status version %d", b[0])
	}
	if b[1] != 0 {
		return netip.AddrPort{}, ErrAuthFailed
	}
	return ReadReply(rw)
}

// ReadReply reads a server's reply to a request: the bound address of a success, or a
// *ReplyError.
func ReadReply(r io.Reader) (netip.AddrPort, error) {
	var hdr [4]byte
	if err := readFull(r, hdr[:], true); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks5: reading the reply: %w", err)
	}
	if hdr[0] != Version || hdr[2] != 0 {
		return netip.AddrPort{}, malformed("reply % x", hdr[:3])
	}
	var a netip.Addr
	switch hdr[3] {
	case AtypIPv4:
		var v [4]byte
		if err := readFull(r, v[:], false); err != nil {
			return netip.AddrPort{}, fmt.Errorf("socks5: reading the reply's address: %w", err)
		}
		a = netip.AddrFrom4(v)
	case AtypIPv6:
		var v [16]byte
		if err := readFull(r, v[:], false); err != nil {
			return netip.AddrPort{}, fmt.Errorf("socks5: reading the reply's address: %w", err)
		}
		a = netip.AddrFrom16(v)
	case AtypDomain:
		var n [1]byte
		if err := readFull(r, n[:], false); err != nil {
			return netip.AddrPort{}, fmt.Errorf("socks5: reading the reply's address: %w", err)
		}
		if err := readFull(r, make([]byte, n[0]), false); err != nil {
			return netip.AddrPort{}, fmt.Errorf("socks5: reading the reply's address: %w", err)
		}
	default:
		return netip.AddrPort{}, malformed("reply address type %d", hdr[3])
	}
	var p [2]byte
	if err := readFull(r, p[:], false); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks5: reading the reply's port: %w", err)
	}
	if Reply(hdr[1]) != Succeeded {
		return netip.AddrPort{}, &ReplyError{Reply: Reply(hdr[1])}
	}
	return netip.AddrPortFrom(a, uint16(p[0])<<8|uint16(p[1])), nil
}

// JoinHostPort is host:port for messages, as a socks5h URL would write it.
func JoinHostPort(host string, port uint16) string {
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		return "[" + host + "]:" + strconv.Itoa(int(port))
	}
	return host + ":" + strconv.Itoa(int(port))
}
