package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// allowed_tcp through the explicit fronts (DESIGN §2.6): CONNECT name:port of the HTTP proxy
// and the SOCKS5 listener, with real clients (OpenSSH's ssh, git, curl) run in the gateway
// namespace, where egressd's listeners are, and raw requests that no client would send.

// explicitSession makes a VM without a network and a session on it, for the explicit fronts.
func (l *tcpLab) explicitSession(name string) client.Session {
	l.t.Helper()
	ctx := context.Background()
	if _, err := l.api.CreateVM(ctx, client.CreateVMRequest{VMID: l.id(name)}); err != nil {
		l.t.Fatal(err)
	}
	s, err := l.api.CreateSession(ctx, client.CreateSessionRequest{VMID: l.id(name)})
	if err != nil {
		l.t.Fatal(err)
	}
	return *s
}

func (l *tcpLab) setSessionPolicy(s client.Session, p policy.Policy) {
	l.t.Helper()
	if _, err := l.api.SetSessionPolicy(context.Background(), s.SessionID, p); err != nil {
		l.t.Fatal(err)
	}
}

// httpConnect sends CONNECT target to the explicit proxy with the session's credentials and
// reads the answer; on 200 the connection carries the tunnel.
func (l *tcpLab) httpConnect(proxyURL, target string) (*http.Response, net.Conn, *bufio.Reader) {
	l.t.Helper()
	c, err := l.dialGW(l.in.ProxyAddr)
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(c)
	resp := roundTrip(l.t.(*testing.T), c, br, fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n", target, target, auth(proxyURL)))
	c.SetDeadline(time.Time{})
	return resp, c, br
}

// sshArgs are the options of an ssh that trusts any host key and never asks anything.
func sshArgs(proxyCommand string, more ...string) []string {
	return append([]string{"-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "ProxyCommand=" + proxyCommand}, more...)
}

// reachedByOpenSSH says whether s received an OpenSSH client's version line.
func reachedByOpenSSH(s *fakeSSH) bool {
	for _, b := range s.Banners() {
		if strings.HasPrefix(b, "SSH-2.0-OpenSSH") {
			return true
		}
	}
	return false
}

func TestAllowedTCPThroughHTTPProxy(t *testing.T) {
	l := newTCPLab(t)
	testnet.Require(t, haveCmd("ssh"), "ssh (openssh-client)")
	testnet.Require(t, haveCmd("socat"), "socat")
	sess := l.explicitSession("explicit")
	repo := l.startSSHD()
	l.setSessionPolicy(sess, policy.Policy{AllowedTCP: []string{"git.test:22", "realgit.test:22"}, DeniedDomains: []string{"denied.git.test"}})
	user, pass := sessionCreds(t, sess.ProxyURL)
	// socat speaks HTTP CONNECT with Basic credentials: ssh's ProxyCommand through the proxy.
	viaProxy := fmt.Sprintf("socat - PROXY:127.0.0.1:%%h:%%p,proxyport=%s,proxyauth=%s:%s",
		strings.Split(l.in.ProxyAddr, ":")[1], user, pass)

	t.Run("ssh by name", func(t *testing.T) {
		out, code := l.gwRun(30*time.Second, nil, "ssh", sshArgs(viaProxy, "git@git.test", "true")...)
		// 255: ssh's own failure (the server closed at key exchange), not a timeout (-2).
		if code != 255 {
			t.Fatalf("ssh against the fake server: exit %d, want 255:\n%s", code, out)
		}
		if !reachedByOpenSSH(l.git) {
			t.Fatalf("the fake SSH server saw no OpenSSH banner (saw %q); ssh said:\n%s", l.git.Banners(), out)
		}
	})
	t.Run("git over ssh by name", func(t *testing.T) {
		testnet.Require(t, haveCmd("git"), "git")
		before := len(l.git.Banners())
		ssh := "ssh " + strings.Join(sshArgs("'"+viaProxy+"'"), " ")
		out, code := l.gwRun(30*time.Second, []string{"GIT_SSH_COMMAND=" + ssh, "HOME=" + t.TempDir()},
			"git", "ls-remote", "ssh://git@git.test/egressd/demo.git")
		if code <= 0 {
			t.Fatalf("git ls-remote against the fake server: exit %d:\n%s", code, out)
		}
		if got := l.git.Banners()[before:]; len(got) == 0 || !strings.HasPrefix(got[0], "SSH-2.0-OpenSSH") {
			t.Fatalf("git's ssh did not reach the fake server (banners %q):\n%s", got, out)
		}
	})
	t.Run("git clone from a real sshd", func(t *testing.T) {
		dir := t.TempDir()
		out, code := l.gwRun(60*time.Second, []string{"GIT_SSH_COMMAND=" + repo.gitSSHCommand(viaProxy), "HOME=" + dir},
			"git", "clone", "-q", repo.URL, dir+"/clone")
		if code != 0 {
			t.Fatalf("git clone over ssh through the HTTP proxy: exit %d\n%s", code, out)
		}
		if b, err := os.ReadFile(dir + "/clone/README"); err != nil || string(b) != repo.File {
			t.Fatalf("cloned README: %q, %v", b, err)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		conns := l.git.conns.Load()
		for _, tc := range []struct{ target, reason string }{
			{"other.example.test:22", "port_not_allowed"}, // a name not listed, the same port
			{"gitmirror.test:22", "port_not_allowed"},     // not listed, though it shares git.test's address
			{"git.test:2222", "port_not_allowed"},         // the listed name, another port
			{gitAddr + ":22", "ip_literal"},               // its address
			{"[::ffff:" + gitAddr + "]:22", "ip_literal"}, // the same, IPv4-mapped
			{"denied.git.test:22", "denied_domain"},       // in denied_domains
			{"GIT.test.:2222", "port_not_allowed"},        // another spelling, another port
			{metaAddr + ":22", "hard_deny"},               // metadata by address
			{"git.test:0", ""},                            // no such port
			{"git.test:65536", ""},                        // no such port
		} {
			resp, _, _ := l.httpConnect(sess.ProxyURL, tc.target)
			if resp.StatusCode/100 == 2 {
				t.Errorf("CONNECT %s: %s, want a refusal", tc.target, resp.Status)
				continue
			}
			if tc.reason != "" && resp.Header.Get("X-Egress-Reason") != tc.reason {
				t.Errorf("CONNECT %s: %s reason %q, want %q", tc.target, resp.Status, resp.Header.Get("X-Egress-Reason"), tc.reason)
			}
		}
		if n := l.tcp22.Load(); n != 0 {
			t.Errorf("%d connections reached other.example.test:22", n)
		}
		if n := l.git.conns.Load() - conns; n != 0 {
			t.Errorf("%d refused CONNECTs reached git.test's server", n)
		}
	})
	t.Run("spellings of the listed name", func(t *testing.T) {
		for _, target := range []string{"GIT.TEST:22", "git.test.:22"} {
			resp, c, br := l.httpConnect(sess.ProxyURL, target)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("CONNECT %s: %s (%s)", target, resp.Status, resp.Header.Get("X-Egress-Reason"))
				continue
			}
			expectFakeSSH(t, c, br)
		}
	})
	t.Run("private and metadata answers", func(t *testing.T) {
		l.setSessionPolicy(sess, policy.Policy{AllowedTCP: []string{"rebind.example.test:22", "meta.example.test:22", "git.test:22"},
			DeniedDomains: []string{"git.test"}})
		for _, tc := range []struct{ target, reason string }{
			{"rebind.example.test:22", "not_public"},
			{"meta.example.test:22", "hard_deny"},
			{"git.test:22", "denied_domain"}, // denied_domains wins over allowed_tcp
		} {
			resp, _, _ := l.httpConnect(sess.ProxyURL, tc.target)
			if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Egress-Reason") != tc.reason {
				t.Errorf("CONNECT %s: %s reason %q, want 403 %s", tc.target, resp.Status, resp.Header.Get("X-Egress-Reason"), tc.reason)
			}
		}
		if n := l.private.conns.Load() + l.meta.conns.Load(); n != 0 {
			t.Errorf("%d connections reached the private or metadata server", n)
		}
	})
	t.Run("layers intersected", func(t *testing.T) {
		// The VM allows git.test:22 and db.test:5432, the session git.test:22 only: db.test
		// is refused; the VM's own policy cannot widen the session's.
		l.setSessionPolicy(sess, policy.Policy{AllowedTCP: []string{"git.test:22"}})
		if _, err := l.api.SetVMPolicy(context.Background(), l.id("explicit"), policy.Policy{AllowedTCP: []string{"git.test:22", "db.test:5432"}}); err != nil {
			t.Fatal(err)
		}
		defer l.api.DeleteVMPolicy(context.Background(), l.id("explicit"))
		if resp, _, _ := l.httpConnect(sess.ProxyURL, "db.test:5432"); resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Egress-Reason") != "port_not_allowed" {
			t.Errorf("CONNECT db.test:5432 that only the VM allows: %s %q", resp.Status, resp.Header.Get("X-Egress-Reason"))
		}
		if resp, c, br := l.httpConnect(sess.ProxyURL, "git.test:22"); resp.StatusCode != http.StatusOK {
			t.Errorf("CONNECT git.test:22 that both allow: %s", resp.Status)
		} else {
			expectFakeSSH(t, c, br)
		}
		// And the other way round: the VM narrower than the session.
		if _, err := l.api.SetVMPolicy(context.Background(), l.id("explicit"), policy.Policy{AllowedTCP: []string{"db.test:5432"}}); err != nil {
			t.Fatal(err)
		}
		if resp, _, _ := l.httpConnect(sess.ProxyURL, "git.test:22"); resp.StatusCode != http.StatusForbidden {
			t.Errorf("CONNECT git.test:22 that only the session allows: %s", resp.Status)
		}
	})
	t.Run("entry removed cuts the tunnel", func(t *testing.T) {
		l.setSessionPolicy(sess, policy.Policy{AllowedTCP: []string{"git.test:22", "db.test:5432"}})
		resp, c, br := l.httpConnect(sess.ProxyURL, "git.test:22")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT git.test:22: %s", resp.Status)
		}
		expectFakeSSH(t, c, br)
		l.setSessionPolicy(sess, policy.Policy{AllowedTCP: []string{"db.test:5432"}})
		expectCut(t, c, br)
	})
	t.Run("records", func(t *testing.T) {
		var connect, closed, denied bool
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !(connect && closed && denied); time.Sleep(100 * time.Millisecond) {
			events, err := l.api.Events(context.Background(), client.EventsFilter{SessionID: sess.SessionID, Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range events {
				switch {
				case e.Kind == "connect" && e.Decision == "allow" && e.Host == "git.test" && e.Port == 22:
					connect = connect || (e.Reason == string(policy.ReasonAllowedTCP) && e.Rule != "" && e.IP == gitAddr)
				case e.Kind == "close" && e.Host == "git.test" && e.Port == 22:
					closed = closed || (e.BytesUp > 0 && e.BytesDown > 0)
				case e.Decision == "deny" && e.Host == "gitmirror.test" && e.Port == 22:
					denied = denied || e.Reason == "port_not_allowed"
				}
			}
		}
		if !connect || !closed || !denied {
			t.Errorf("records: allowed connect to git.test:22 (reason allowed_tcp, its address) %v, its close with bytes %v, the denial of gitmirror.test:22 %v",
				connect, closed, denied)
		}
	})
}

// expectFakeSSH reads the fake SSH server's banner from a fresh tunnel, then checks that
// bytes cross both ways (the server echoes after the client's version line).
func expectFakeSSH(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	line, err := br.ReadString('\n')
	if err != nil || line != fakeSSHBanner {
		t.Fatalf("banner %q, %v", line, err)
	}
	fmt.Fprint(c, fakeSSHProbe+"\r\nping\n")
	if echo, err := br.ReadString('\n'); err != nil || echo != "ping\n" {
		t.Fatalf("echo through the tunnel: %q, %v", echo, err)
	}
}

// expectCut checks that an open tunnel is closed by egressd within 10 s: the test keeps
// writing into it, and reads EOF or an error (a reset).
func expectCut(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := fmt.Fprintf(c, "ping %d\n", i); err != nil {
			return
		}
		line, err := br.ReadString('\n')
		if err != nil && !isTimeout(err) {
			return // EOF or reset: cut
		}
		if err == nil && !strings.HasPrefix(line, "ping") {
			t.Fatalf("unexpected bytes in the tunnel: %q", line)
		}
	}
	t.Fatal("the tunnel is still open 10 s after the policy removed its entry")
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// readAllString reads what is left on c for up to d.
func readAllString(c net.Conn, r io.Reader, d time.Duration) string {
	c.SetReadDeadline(time.Now().Add(d))
	b, _ := io.ReadAll(r)
	return string(b)
}
