package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// A SOCKS5 client written from RFC 1928 and RFC 1929 for these tests, independent of
// egressd's own socks5 package, so that a misreading of the RFCs in one is not hidden by
// the same misreading in the other. It sends requests no library would, such as BIND.

// SOCKS5 commands and reply codes (RFC 1928 §4, §6).
const (
	socksConnect      = 0x01
	socksBind         = 0x02
	socksUDPAssociate = 0x03

	socksSucceeded       = 0x00
	socksNotAllowed      = 0x02
	socksCmdUnsupported  = 0x07
	socksAuthFailed      = 0xf1 // not a reply code: the RFC 1929 status was not 0
	socksNoMethodAccepts = 0xff // not a reply code: the greeting's answer was 0xFF
)

// socksTarget is the address of a request: a name, or an IP literal.
type socksTarget struct {
	name string
	ip   netip.Addr
	port uint16
}

func socksName(name string, port uint16) socksTarget { return socksTarget{name: name, port: port} }
func socksIP(ip string, port uint16) socksTarget {
	return socksTarget{ip: netip.MustParseAddr(ip), port: port}
}

func (t socksTarget) String() string {
	if t.name != "" {
		return net.JoinHostPort(t.name, strconv.Itoa(int(t.port)))
	}
	return net.JoinHostPort(t.ip.String(), strconv.Itoa(int(t.port)))
}

func (t socksTarget) encode() []byte {
	var b []byte
	switch {
	case t.name != "":
		b = append([]byte{0x03, byte(len(t.name))}, t.name...)
	case t.ip.Is4():
		b = append([]byte{0x01}, t.ip.AsSlice()...)
	default:
		b = append([]byte{0x04}, t.ip.AsSlice()...)
	}
	return binary.BigEndian.AppendUint16(b, t.port)
}

// socksHandshake authenticates on c with user/password and sends one request; it returns the
// reply code (or socksAuthFailed / socksNoMethodAccepts). On socksSucceeded after CONNECT,
// c carries the tunnel.
func socksHandshake(c net.Conn, user, pass string, cmd byte, t socksTarget) (byte, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte{5, 1, 2}); err != nil {
		return 0, fmt.Errorf("greeting: %w", err)
	}
	var sel [2]byte
	if _, err := io.ReadFull(c, sel[:]); err != nil {
		return 0, fmt.Errorf("method selection: %w", err)
	}
	if sel[0] != 5 {
		return 0, fmt.Errorf("method selection %x: not SOCKS5", sel)
	}
	if sel[1] == 0xff {
		return socksNoMethodAccepts, nil
	}
	if sel[1] != 2 {
		return 0, fmt.Errorf("the server chose method %d, not user/password", sel[1])
	}
	auth := append(append([]byte{1, byte(len(user))}, user...), byte(len(pass)))
	if _, err := c.Write(append(auth, pass...)); err != nil {
		return 0, fmt.Errorf("user/password: %w", err)
	}
	var st [2]byte
	if _, err := io.ReadFull(c, st[:]); err != nil {
		return 0, fmt.Errorf("user/password status: %w", err)
	}
	if st[1] != 0 {
		return socksAuthFailed, nil
	}
	if _, err := c.Write(append([]byte{5, cmd, 0}, t.encode()...)); err != nil {
		return 0, fmt.Errorf("request: %w", err)
	}
	var rep [4]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		return 0, fmt.Errorf("reply to %s: %w", t, err)
	}
	if rep[0] != 5 || rep[2] != 0 {
		return 0, fmt.Errorf("reply %x: malformed", rep)
	}
	var rest int
	switch rep[3] {
	case 1:
		rest = 4 + 2
	case 4:
		rest = 16 + 2
	case 3:
		var n [1]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return 0, err
		}
		rest = int(n[0]) + 2
	default:
		return 0, fmt.Errorf("reply with address type %d", rep[3])
	}
	if _, err := io.ReadFull(c, make([]byte, rest)); err != nil {
		return 0, fmt.Errorf("reply's bound address: %w", err)
	}
	return rep[1], nil
}

// errSocksRefused is returned by socksDial for a reply other than success.
var errSocksRefused = errors.New("SOCKS5 request refused")

// socksDial opens a tunnel to t through the SOCKS5 listener at socks (dialled by dial).
func socksDial(dial func(string) (net.Conn, error), socks, user, pass string, t socksTarget) (net.Conn, byte, error) {
	c, err := dial(socks)
	if err != nil {
		return nil, 0, fmt.Errorf("dial the SOCKS5 listener: %w", err)
	}
	rep, err := socksHandshake(c, user, pass, socksConnect, t)
	if err == nil && rep != socksSucceeded {
		err = fmt.Errorf("%w: CONNECT %s: reply %#x", errSocksRefused, t, rep)
	}
	if err != nil {
		c.Close()
		return nil, rep, err
	}
	return c, rep, nil
}
