package dialer

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/resolve"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// Addresses (DESIGN §10): fake public servers inside Classifier.Public 127.0.0.0/26; answers
// that must be refused on 127.0.0.100, loopback outside it, hard-denied.
const (
	publicIP  = "127.0.0.43"
	deadIP    = "127.0.0.44" // public, nothing listens
	privateIP = "127.0.0.100"
)

var classifier = &policy.Classifier{Public: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/26")}}

func set(t *testing.T, p policy.Policy) *policy.Effective {
	t.Helper()
	m, err := policy.Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return policy.NewEffective(classifier, policy.Layered{Layer: policy.LayerSession, Matcher: m})
}

// listen opens ip:port and counts the connections it accepts.
type listener struct {
	net.Listener
	accepted atomic.Int64
}

func listen(t *testing.T, ip string, port int) *listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("listen %s:%d: %v", ip, port, err)
	}
	l := &listener{Listener: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return l
}

func port(l net.Listener) uint16 { return uint16(l.Addr().(*net.TCPAddr).Port) }

func newDialer(z *testnet.Zone) *Dialer {
	return &Dialer{Resolver: &resolve.Resolver{Upstream: z.Addr}, Timeout: 3 * time.Second}
}

func TestDialByName(t *testing.T) {
	testnet.RequireRoot(t) // the web rule opens ports 80 and 443 only
	z := testnet.StartZone(t)
	z.Add(t,
		"ok.test. 60 IN A "+publicIP,
		"rebind.test. 60 IN A "+privateIP,
		"mixed.test. 60 IN A "+privateIP,
		"mixed.test. 60 IN A "+publicIP,
		"fallback.test. 60 IN A "+deadIP,
		"fallback.test. 60 IN A "+publicIP,
		"alias.test. 60 IN CNAME ok.test.",
		"empty.test. 60 IN TXT \"no address\"",
	)
	pub := listen(t, publicIP, 80)
	priv := listen(t, privateIP, 80)
	allowHTTP := set(t, policy.Policy{AllowHTTP: true})
	d := newDialer(z)

	tests := []struct {
		name       string
		host       string
		set        *policy.Effective
		wantErr    error
		wantIP     string
		wantReason policy.Reason
	}{
		{"allowed", "ok.test", allowHTTP, nil, publicIP, policy.ReasonAllowHTTP},
		{"CNAME followed", "alias.test", allowHTTP, nil, publicIP, policy.ReasonAllowHTTP},
		{"rebinding to loopback", "rebind.test", allowHTTP, ErrDenied, privateIP, policy.ReasonHardDeny},
		{"denied address skipped", "mixed.test", allowHTTP, nil, publicIP, policy.ReasonAllowHTTP},
		{"next address after a refusal", "fallback.test", allowHTTP, nil, publicIP, policy.ReasonAllowHTTP},
		{"no such name", "nx.test", allowHTTP, resolve.ErrNotFound, "", policy.ReasonAllowHTTP},
		{"no address", "empty.test", allowHTTP, resolve.ErrNoAddress, "", policy.ReasonAllowHTTP},
		{"name denied", "ok.test", set(t, policy.Policy{AllowHTTPS: true}), ErrDenied, "", policy.ReasonHTTPOff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := d.Dial(context.Background(), tt.set, policy.Conn{Host: tt.host, Port: 80})
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Dial: %v, want %v", err, tt.wantErr)
			}
			if res.Conn != nil {
				res.Conn.Close()
			}
			if (res.Conn != nil) != (err == nil) {
				t.Errorf("Conn %v with error %v", res.Conn, err)
			}
			if got := addrString(res.Target.IP); got != tt.wantIP {
				t.Errorf("Target.IP %q, want %q", got, tt.wantIP)
			}
			if res.Decision.Reason != tt.wantReason || res.Decision.Allow != (tt.wantErr != ErrDenied) {
				t.Errorf("Decision %+v, want reason %q", res.Decision, tt.wantReason)
			}
			if res.Target.Host != tt.host || res.Target.Port != 80 || res.Target.Transport != policy.TCP {
				t.Errorf("Target %+v", res.Target)
			}
		})
	}
	if n := priv.accepted.Load(); n != 0 {
		t.Errorf("the non-public address was dialled %d times", n)
	}
	// The kernel completes a dial before the server's Accept returns: wait for it a while.
	for deadline := time.Now().Add(2 * time.Second); pub.accepted.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := pub.accepted.Load(); n == 0 {
		t.Error("the public server saw no connection")
	}
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// A name the policy denies is not looked up: a denied name cannot carry data out in DNS.
func TestDeniedNameIsNotResolved(t *testing.T) {
	z := testnet.StartZone(t)
	z.Add(t, "secret.test. 60 IN A "+publicIP)
	s := set(t, policy.Policy{AllowHTTPS: true, DeniedDomains: []string{"secret.test"}})
	for _, c := range []policy.Conn{{Host: "secret.test", Port: 443}, {Host: "ok.test", Port: 22}} {
		res, err := newDialer(z).Dial(context.Background(), s, c)
		if !errors.Is(err, ErrDenied) || res.Decision.Allow {
			t.Errorf("%+v: %v %+v, want a denial", c, err, res.Decision)
		}
	}
	if n := z.Queries.Load(); n != 0 {
		t.Errorf("%d DNS queries for denied names", n)
	}
}

func TestDialIPLiteral(t *testing.T) {
	ln := listen(t, publicIP, 0) // allowed_cidrs opens every port: no root needed
	z := testnet.StartZone(t)
	d := newDialer(z)
	lit := policy.Conn{IP: netip.MustParseAddr("::ffff:" + publicIP), Port: port(ln), IPLiteral: true}

	res, err := d.Dial(context.Background(), set(t, policy.Policy{AllowHTTPS: true, AllowHTTP: true}), lit)
	if !errors.Is(err, ErrDenied) || res.Decision.Reason != policy.ReasonIPLiteral {
		t.Fatalf("IP literal without allowed_cidrs: %v %+v", err, res.Decision)
	}
	res, err = d.Dial(context.Background(), set(t, policy.Policy{AllowedCIDRs: []string{publicIP}}), lit)
	if err != nil {
		t.Fatalf("IP literal inside allowed_cidrs: %v", err)
	}
	defer res.Conn.Close()
	if res.Decision.Reason != policy.ReasonAllowedCIDRs || res.Target.IP != netip.MustParseAddr(publicIP) {
		t.Errorf("Decision %+v, Target %+v (want the unmapped address)", res.Decision, res.Target)
	}
	if got := res.Conn.RemoteAddr().(*net.TCPAddr).IP.String(); got != publicIP {
		t.Errorf("connected to %s", got)
	}
	// Loopback outside Public is hard-denied even inside allowed_cidrs.
	res, err = d.Dial(context.Background(), set(t, policy.Policy{AllowedCIDRs: []string{"127.0.0.0/8"}}),
		policy.Conn{IP: netip.MustParseAddr(privateIP), Port: 80, IPLiteral: true})
	if !errors.Is(err, ErrDenied) || res.Decision.Reason != policy.ReasonHardDeny {
		t.Errorf("loopback literal: %v %+v", err, res.Decision)
	}
	if z.Queries.Load() != 0 {
		t.Error("an IP literal was looked up")
	}
}

// Monitor mode dials what it would deny, but never past a hard denial, and prefers an
// address that is allowed outright.
func TestDialMonitor(t *testing.T) {
	testnet.RequireRoot(t)
	z := testnet.StartZone(t)
	z.Add(t, "other.test. 60 IN A "+publicIP, "rebind.test. 60 IN A "+privateIP)
	listen(t, publicIP, 443)
	priv := listen(t, privateIP, 443)
	s := set(t, policy.Policy{Mode: policy.Monitor, AllowHTTPS: true, AllowedDomains: []string{"api.test"}})
	d := newDialer(z)
	res, err := d.Dial(context.Background(), s, policy.Conn{Host: "other.test", Port: 443})
	if err != nil {
		t.Fatalf("monitor mode: %v", err)
	}
	res.Conn.Close()
	if !res.Decision.Allow || !res.Decision.WouldDeny || res.Decision.Reason != policy.ReasonHostNotListed {
		t.Errorf("Decision %+v, want allow with would_deny", res.Decision)
	}
	res, err = d.Dial(context.Background(), s, policy.Conn{Host: "rebind.test", Port: 443})
	if !errors.Is(err, ErrDenied) || res.Decision.Reason != policy.ReasonHardDeny {
		t.Errorf("monitor mode, loopback answer: %v %+v", err, res.Decision)
	}
	if priv.accepted.Load() != 0 {
		t.Error("monitor mode dialled a hard-denied address")
	}
}

func TestDialTimeout(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	d := &Dialer{Resolver: &resolve.Resolver{Upstream: pc.LocalAddr().String()}, Timeout: 300 * time.Millisecond}
	done := make(chan error, 1)
	go func() {
		_, err := d.Dial(context.Background(), set(t, policy.Policy{AllowHTTPS: true}), policy.Conn{Host: "slow.test", Port: 443})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
			t.Errorf("error %v, want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Dial did not give up")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A name on a port that is not a web port leads into allowed_cidrs (issue 9): it is resolved
// when the DNS filter would answer it, and only addresses inside allowed_cidrs are dialled.
func TestNameOnOtherPortIntoCIDRs(t *testing.T) {
	inside := listen(t, publicIP, 0) // any port inside allowed_cidrs: no root needed
	z := testnet.StartZone(t)
	z.Add(t,
		"db.internal.test. 60 IN A "+publicIP,
		"mixed.internal.test. 60 IN A "+deadIP,
		"mixed.internal.test. 60 IN A "+publicIP,
		"outside.internal.test. 60 IN A "+deadIP,
		"secret.internal.test. 60 IN A "+publicIP,
		"unlisted.test. 60 IN A "+publicIP,
	)
	cidr := publicIP + "/32"
	s := set(t, policy.Policy{
		AllowedDomains: []string{"*.internal.test"},
		AllowedCIDRs:   []string{cidr},
		DeniedDomains:  []string{"secret.internal.test"},
	})
	p := port(inside)
	tests := []struct {
		host     string
		allow    bool
		reason   policy.Reason
		resolved bool
	}{
		{"db.internal.test", true, policy.ReasonAllowedCIDRs, true},
		{"mixed.internal.test", true, policy.ReasonAllowedCIDRs, true},
		{"outside.internal.test", false, policy.ReasonPort, true},
		{"secret.internal.test", false, policy.ReasonDeniedDomain, false},
		{"unlisted.test", false, policy.ReasonPort, false}, // the DNS filter would not answer it
	}
	for _, tt := range tests {
		before := z.Queries.Load()
		res, err := newDialer(z).Dial(context.Background(), s, policy.Conn{Host: tt.host, Port: p})
		if tt.allow {
			if err != nil {
				t.Errorf("%s: %v", tt.host, err)
				continue
			}
			res.Conn.Close()
			if res.Target.IP.String() != publicIP {
				t.Errorf("%s: dialled %v, want only the address inside allowed_cidrs", tt.host, res.Target.IP)
			}
		} else if !errors.Is(err, ErrDenied) {
			t.Errorf("%s: %v, want a denial", tt.host, err)
		}
		if res.Decision.Allow != tt.allow || res.Decision.Reason != tt.reason {
			t.Errorf("%s: %+v, want allow=%v %s", tt.host, res.Decision, tt.allow, tt.reason)
		}
		if got := z.Queries.Load() > before; got != tt.resolved {
			t.Errorf("%s: looked up %v, want %v", tt.host, got, tt.resolved)
		}
	}
}
