// Package socks5 reads and writes the wire protocol of a SOCKS5 server (RFC 1928), with
// username/password authentication (RFC 1929), as egressd's SOCKS listener speaks it. It
// only parses and encodes: who a user is, what a target may reach and how the connection
// is made are the caller's (package proxy).
//
// # The exchange, as egressd serves it
//
// A client connects and the server reads, in this order:
//
//  1. The greeting (ReadGreeting): version 5, a count of 1 to 255 methods, the methods.
//     egressd offers one method, username/password (MethodUserPass, 0x02): a greeting that
//     does not list it is answered MethodNoAcceptable (0xFF) and the connection is
//     closed; so is a client that offers only "no authentication" (0x00). The choice is
//     written with WriteMethod.
//  2. The sub-negotiation (ReadCredentials, RFC 1929): version 1, the username (1 to 255
//     bytes) and the password (1 to 255 bytes). egressd reads the username as the session
//     ID and the password as its token, the credentials of the session's socks_url
//     (socks5h://<session_id>:<token>@host:port). WriteAuthStatus answers: 0x00 and the
//     exchange goes on, anything else and the server closes the connection.
//  3. The request (ReadRequest): version 5, a command, a reserved zero byte, the address
//     (ATYP 1: four bytes of IPv4; 3: a length of 1 to 255 and a domain name; 4: sixteen
//     bytes of IPv6) and the port (never 0). Only CONNECT (CmdConnect) is served; BIND and
//     UDP ASSOCIATE, and any other command, are answered CommandNotSupported (0x07). An
//     unknown address type cannot be read past, so it is an *Error that carries
//     AddressNotSupported (0x08).
//  4. The reply (WriteReply): version 5, a Reply code, a zero byte, and an address: the
//     bound address of the connection made for the client on success (Succeeded), an
//     unspecified IPv4 address and port 0 on a failure. After a success the connection
//     carries the client's bytes; after a failure the server closes it.
//
// Reply codes egressd sends: Succeeded; NotAllowed (0x02, "connection not allowed by
// ruleset") for every policy denial; HostUnreachable (0x04) for a name that does not
// resolve or an address that cannot be reached; ConnectionRefused (0x05); GeneralFailure
// (0x01) for the rest; CommandNotSupported (0x07); AddressNotSupported (0x08).
//
// # Strictness
//
// Every parser reads exactly the bytes its message has, never more (so that a client's
// pipelined bytes stay for the next stage), and fails on a wrong version, a reserved byte
// that is not zero, a zero count or length, a zero port, or a message cut short
// (io.ErrUnexpectedEOF; io.EOF only when not a byte came). The caller closes the connection
// on any error, after writing the reply an *Error names, if any. A domain name is returned
// as the bytes the client sent: the caller normalises it (policy.NormalizeName, the one
// normalisation of names) and refuses what is not a name. The parsers have no deadlines:
// the caller sets one on the connection for the whole handshake.
package socks5

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
)

// Version is the protocol's version byte (RFC 1928); AuthVersion the sub-negotiation's
// (RFC 1929).
const (
	Version     = 0x05
	AuthVersion = 0x01
)

// Methods of authentication (RFC 1928 §3).
const (
	MethodNoAuth       byte = 0x00
	MethodUserPass     byte = 0x02
	MethodNoAcceptable byte = 0xFF
)

// Commands (RFC 1928 §4).
const (
	CmdConnect      byte = 0x01
	CmdBind         byte = 0x02
	CmdUDPAssociate byte = 0x03
)

// Address types (RFC 1928 §5).
const (
	AtypIPv4   byte = 0x01
	AtypDomain byte = 0x03
	AtypIPv6   byte = 0x04
)

// Reply is the REP field of a reply (RFC 1928 §6).
type Reply byte

// Replies.
const (
	Succeeded           Reply = 0x00
	GeneralFailure      Reply = 0x01
	NotAllowed          Reply = 0x02
	NetworkUnreachable  Reply = 0x03
	HostUnreachable     Reply = 0x04
	ConnectionRefused   Reply = 0x05
	TTLExpired          Reply = 0x06
	CommandNotSupported Reply = 0x07
	AddressNotSupported Reply = 0x08
)

var replyNames = [...]string{
	"succeeded", "general SOCKS server failure", "connection not allowed by ruleset",
	"network unreachable", "host unreachable", "connection refused", "TTL expired",
	"command not supported", "address type not supported",
}

func (r Reply) String() string {
	if int(r) < len(replyNames) {
		return replyNames[r]
	}
	return "reply 0x" + strconv.FormatUint(uint64(r), 16)
}

// ErrMalformed is wrapped by every error about bytes that are not the protocol: a wrong
// version, a reserved byte that is not zero, a zero count, length or port.
var ErrMalformed = errors.New("socks5: malformed message")

// Error is a request that the server must answer with Reply before it closes: an address
// type it cannot read (AddressNotSupported).
type Error struct {
	Reply Reply
	Err   error
}

func (e *Error) Error() string { return "socks5: " + e.Reply.String() + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// readFull reads len(b) bytes; a message cut after its first byte is io.ErrUnexpectedEOF
// (io.ReadFull's rule), and so is one cut at a later field (first false).
func readFull(r io.Reader, b []byte, first bool) error {
	_, err := io.ReadFull(r, b)
	if !first && errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ReadGreeting reads a client's greeting: version 5, NMETHODS (at least 1) and the
// methods. It returns the methods in the client's order.
func ReadGreeting(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if err := readFull(r, hdr[:], true); err != nil {
		return nil, fmt.Errorf("socks5: reading the greeting: %w", err)
	}
	if hdr[0] != Version {
		return nil, malformed("greeting version %d, not 5", hdr[0])
	}
	if hdr[1] == 0 {
		return nil, malformed("greeting offers no method")
	}
	methods := make([]byte, hdr[1])
	if err := readFull(r, methods, false); err != nil {
		return nil, fmt.Errorf("socks5: reading the greeting's methods: %w", err)
	}
	return methods, nil
}

// WriteMethod answers a greeting with the method chosen, or MethodNoAcceptable.
func WriteMethod(w io.Writer, method byte) error {
	_, err := w.Write([]byte{Version, method})
	return err
}

// ReadCredentials reads the username/password sub-negotiation (RFC 1929): version 1, a
// username of 1 to 255 bytes, a password of 1 to 255 bytes.
func ReadCredentials(r io.Reader) (user, password string, err error) {
	var hdr [2]byte
	if err := readFull(r, hdr[:], true); err != nil {
		return "", "", fmt.Errorf("socks5: reading the credentials: %w", err)
	}
	if hdr[0] != AuthVersion {
		return "", "", malformed("username/password version %d, not 1", hdr[0])
	}
	u, err := readString(r, int(hdr[1]), "username")
	if err != nil {
		return "", "", err
	}
	var plen [1]byte
	if err := readFull(r, plen[:], false); err != nil {
		return "", "", fmt.Errorf("socks5: reading the password's length: %w", err)
	}
	p, err := readString(r, int(plen[0]), "password")
	if err != nil {
		return "", "", err
	}
	return u, p, nil
}

func readString(r io.Reader, n int, what string) (string, error) {
	if n == 0 {
		return "", malformed("empty %s", what)
	}
	b := make([]byte, n)
	if err := readFull(r, b, false); err != nil {
		return "", fmt.Errorf("socks5: reading the %s: %w", what, err)
	}
	return string(b), nil
}

// WriteAuthStatus answers the sub-negotiation: status 0x00 when ok, 0x01 when not (after
// which the server closes the connection, as RFC 1929 requires).
func WriteAuthStatus(w io.Writer, ok bool) error {
	status := byte(0x01)
	if ok {
		status = 0x00
	}
	_, err := w.Write([]byte{AuthVersion, status})
	return err
}

// Request is a client's request. Exactly one of Host (ATYP 3: the name's bytes as sent,
// not normalised) and Addr (ATYP 1 or 4, an IPv4-mapped IPv6 address unmapped to IPv4) is
// set.
type Request struct {
	Cmd  byte
	Host string
	Addr netip.Addr
	Port uint16
}

// String is host:port as the request named it, for messages (brackets around IPv6).
func (q Request) String() string {
	if q.Host != "" {
		return q.Host + ":" + strconv.Itoa(int(q.Port))
	}
	return netip.AddrPortFrom(q.Addr, q.Port).String()
}

// ReadRequest reads a request: version 5, CMD, RSV 0, the address and the port, which for
// CONNECT must not be 0. The command is returned whatever it is: answering one other than
// CmdConnect is the caller's. BIND and UDP ASSOCIATE commonly carry 0.0.0.0:0 (RFC 1928
// §7: the client does not know its address yet), so port 0 is theirs to send and the
// caller's "command not supported" to answer. An unknown address type is an *Error with
// AddressNotSupported.
func ReadRequest(r io.Reader) (Request, error) {
	var hdr [4]byte
	if err := readFull(r, hdr[:], true); err != nil {
		return Request{}, fmt.Errorf("socks5: reading the request: %w", err)
	}
	switch {
	case hdr[0] != Version:
		return Request{}, malformed("request version %d, not 5", hdr[0])
	case hdr[2] != 0:
		return Request{}, malformed("request's reserved byte is %d, not 0", hdr[2])
	}
	q := Request{Cmd: hdr[1]}
	switch hdr[3] {
	case AtypIPv4:
		var a [4]byte
		if err := readFull(r, a[:], false); err != nil {
			return Request{}, fmt.Errorf("socks5: reading the request's IPv4 address: %w", err)
		}
		q.Addr = netip.AddrFrom4(a)
	case AtypIPv6:
		var a [16]byte
		if err := readFull(r, a[:], false); err != nil {
			return Request{}, fmt.Errorf("socks5: reading the request's IPv6 address: %w", err)
		}
		q.Addr = netip.AddrFrom16(a).Unmap()
	case AtypDomain:
		var n [1]byte
		if err := readFull(r, n[:], false); err != nil {
			return Request{}, fmt.Errorf("socks5: reading the request's name length: %w", err)
		}
		h, err := readString(r, int(n[0]), "request's name")
		if err != nil {
			return Request{}, err
		}
		q.Host = h
	default:
		return Request{}, &Error{Reply: AddressNotSupported, Err: fmt.Errorf("%w: address type %d", ErrMalformed, hdr[3])}
	}
	var p [2]byte
	if err := readFull(r, p[:], false); err != nil {
		return Request{}, fmt.Errorf("socks5: reading the request's port: %w", err)
	}
	q.Port = uint16(p[0])<<8 | uint16(p[1])
	if q.Port == 0 && q.Cmd == CmdConnect {
		return Request{}, malformed("CONNECT to port 0")
	}
	return q, nil
}

// AppendReply appends a reply with code rep and the bound address bound to b: an IPv4
// address as ATYP 1 (an IPv4-mapped one too), IPv6 as ATYP 4; an invalid bound as
// 0.0.0.0:0, what a failure carries.
func AppendReply(b []byte, rep Reply, bound netip.AddrPort) []byte {
	b = append(b, Version, byte(rep), 0)
	a := bound.Addr().Unmap()
	switch {
	case !bound.IsValid() || !a.IsValid():
		b = append(b, AtypIPv4, 0, 0, 0, 0, 0, 0)
		return b
	case a.Is4():
		v := a.As4()
		b = append(b, AtypIPv4)
		b = append(b, v[:]...)
	default:
		v := a.As16()
		b = append(b, AtypIPv6)
		b = append(b, v[:]...)
	}
	return append(b, byte(bound.Port()>>8), byte(bound.Port()))
}

// WriteReply writes a reply (see AppendReply).
func WriteReply(w io.Writer, rep Reply, bound netip.AddrPort) error {
	_, err := w.Write(AppendReply(nil, rep, bound))
	return err
}
