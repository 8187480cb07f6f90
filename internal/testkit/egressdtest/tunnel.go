package egressdtest

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/policy"
)

// Echo listens on a free port of ip (a loopback address: DESIGN §10) and writes back every
// byte each connection sends, until the test ends. It returns the address. A session whose
// policy has ip in allowed_cidrs reaches it through egressd when --public-cidrs covers ip
// (egressd denies loopback otherwise).
func Echo(t testing.TB, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("egressdtest: echo: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// TunnelArgs are the flags of egressd that OpenTunnel needs, followed by more: the loopback
// range of its Echo servers treated as public, so that allowed_cidrs can open it.
func TunnelArgs(more ...string) []string {
	return append([]string{"--public-cidrs", "127.0.0.0/26"}, more...)
}

// tunnelIP is where OpenTunnel's Echo servers listen: inside TunnelArgs' range, away from
// 127.0.0.1, where egressd's own ports are (hard denied whatever a policy says).
const tunnelIP = "127.0.0.2"

// OpenTunnel opens an allowed connection through egressd, one that stays open until the test
// closes it: it starts a session on the VM vmID of c's tenant, lets the session reach an Echo
// server by allowed_cidrs, and connects to it through egressd's proxy (Connect). egressd must
// run with TunnelArgs.
func OpenTunnel(t testing.TB, c *client.Client, vmID string) net.Conn {
	t.Helper()
	ctx := context.Background()
	s, err := c.CreateSession(ctx, client.CreateSessionRequest{VMID: vmID})
	if err != nil {
		t.Fatalf("egressdtest: session for a tunnel: %v", err)
	}
	if _, err := c.SetSessionPolicy(ctx, s.SessionID, policy.Policy{AllowedCIDRs: []string{tunnelIP + "/32"}}); err != nil {
		t.Fatalf("egressdtest: policy for a tunnel: %v", err)
	}
	return Connect(t, s.ProxyURL, Echo(t, tunnelIP))
}

// Connect opens a tunnel to target through the explicit proxy that proxyURL (a session's
// proxy_url) names, with the session's credentials, and checks that it carries bytes both
// ways to an Echo server. A refusal (407, 403) is tried again for up to 5 s, for a session or
// policy written a moment before, which the gateway's view may not hold yet; the test fails
// if the proxy still refuses then. The tunnel is closed when the test ends, if it is still
// open.
func Connect(t testing.TB, proxyURL, target string) net.Conn {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := connect(proxyURL, target)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		var refused *refusal
		if !errors.As(err, &refused) || time.Now().After(deadline) {
			t.Fatalf("egressdtest: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// refusal is a proxy's answer other than 200 to a CONNECT.
type refusal struct {
	target, status, reason string
}

func (r *refusal) Error() string {
	return fmt.Sprintf("CONNECT %s: %s (%s)", r.target, r.status, r.reason)
}

func connect(proxyURL, target string) (_ net.Conn, err error) {
	u, err := url.Parse(proxyURL)
	if err != nil || u.User == nil {
		return nil, fmt.Errorf("%q is not a session's proxy URL", proxyURL)
	}
	c, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dial the proxy: %w", err)
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	pass, _ := u.User.Password()
	auth := base64.StdEncoding.EncodeToString([]byte(u.User.Username() + ":" + pass))
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n", target, target, auth)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, fmt.Errorf("CONNECT %s: %w", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &refusal{target: target, status: resp.Status, reason: resp.Header.Get("X-Egress-Reason")}
	}
	const ping = "ping\n"
	if _, err := io.WriteString(c, ping); err != nil {
		return nil, fmt.Errorf("write into the tunnel: %w", err)
	}
	got := make([]byte, len(ping))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != ping {
		return nil, fmt.Errorf("the tunnel to %s echoed %q, %v", target, got, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
