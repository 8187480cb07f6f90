package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// allowed_tcp through the SOCKS5 listener (--socks-listen): the same decisions as CONNECT,
// with RFC 1929 credentials (session ID and token).

func TestAllowedTCPThroughSOCKS(t *testing.T) {
	l := newTCPLab(t, "--socks-listen", socksAddr)
	testnet.Require(t, haveCmd("ssh"), "ssh (openssh-client)")
	sess := l.explicitSession("socks")
	user, pass := sessionCreds(t, sess.ProxyURL)
	if want := "socks5h://" + user + ":" + pass + "@" + socksAddr; sess.SOCKSURL != want {
		t.Fatalf("the session's socks_url: %q, want %q", sess.SOCKSURL, want)
	}
	l.setSessionPolicy(sess, policy.Policy{AllowedTCP: []string{"git.test:22", "db.test:5432"}, AllowHTTPS: true,
		AllowedDomains: []string{"api.example.test"}})
	dial := l.dialGW
	open := func(target socksTarget) (net.Conn, byte, error) {
		return socksDial(dial, socksAddr, user, pass, target)
	}
	// ssh's ProxyCommand as docs/proxy.md gives it: egressctl socks-connect, which reads the
	// session's socks_url from EGRESSD_SOCKS_URL.
	socksEnv := []string{"EGRESSD_SOCKS_URL=" + sess.SOCKSURL}
	proxyCommand := egressdtest.Binary(t, "egressctl") + " socks-connect %h %p"

	t.Run("ssh by name", func(t *testing.T) {
		out, code := l.gwRun(30*time.Second, socksEnv, "ssh", sshArgs(proxyCommand, "git@git.test", "true")...)
		if code != 255 || !reachedByOpenSSH(l.git) {
			t.Fatalf("ssh through SOCKS5: exit %d (want 255, the fake server's close), banners %q\n%s", code, l.git.Banners(), out)
		}
	})
	t.Run("git clone from a real sshd", func(t *testing.T) {
		repo := l.startSSHD()
		l.setSessionPolicy(sess, policy.Policy{AllowedTCP: []string{"git.test:22", "db.test:5432", "realgit.test:22"}, AllowHTTPS: true,
			AllowedDomains: []string{"api.example.test"}})
		dir := t.TempDir()
		out, code := l.gwRun(60*time.Second, append(socksEnv, "GIT_SSH_COMMAND="+repo.gitSSHCommand(proxyCommand), "HOME="+dir),
			"git", "clone", "-q", repo.URL, dir+"/clone")
		if code != 0 {
			t.Fatalf("git clone over ssh through SOCKS5: exit %d\n%s", code, out)
		}
		if b, err := os.ReadFile(dir + "/clone/README"); err != nil || string(b) != repo.File {
			t.Fatalf("cloned README: %q, %v", b, err)
		}
	})
	t.Run("psql through a socat forward", func(t *testing.T) {
		testnet.Require(t, haveCmd("psql") && haveCmd("socat"), "psql and socat")
		// docs/proxy.md's way for clients without SOCKS: a local forward, one connection per
		// accept, each one through egressctl socks-connect.
		port := "15432"
		fwd := exec.Command("ip", "netns", "exec", l.gwNS, "socat", "TCP-LISTEN:"+port+",bind=127.0.0.1,reuseaddr,fork",
			"EXEC:'"+egressdtest.Binary(t, "egressctl")+" socks-connect db.test 5432'")
		fwd.Env = append(cleanProxyEnv(), socksEnv...)
		if err := fwd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { fwd.Process.Kill(); fwd.Wait() }()
		var out string
		var code int
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			out, code = l.gwRun(30*time.Second, nil, "psql", "host=127.0.0.1 port="+port+" user=e2e dbname=demo connect_timeout=5", "-c", "select 1")
			if !strings.Contains(out, "Connection refused") { // socat not listening yet
				break
			}
		}
		if code == 0 || !strings.Contains(out, fakePGMessage+" user=e2e database=demo") {
			t.Fatalf("psql through SOCKS5: exit %d, want the fake server's FATAL:\n%s", code, out)
		}
	})
	t.Run("curl --socks5-hostname", func(t *testing.T) {
		for _, args := range [][]string{
			{"--socks5-hostname", socksAddr, "--proxy-user", user + ":" + pass},
			{"-x", "socks5h://" + user + ":" + pass + "@" + socksAddr},
		} {
			out, code := l.gwRun(30*time.Second, nil, "curl", append([]string{"-sS", "--max-time", "10", "--cacert", l.caFile},
				append(args, "https://api.example.test/")...)...)
			if code != 0 || out != "hello from api.example.test\n" {
				t.Errorf("curl %v: exit %d %q", args[:1], code, out)
			}
			// A name the policy does not allow: curl reports the SOCKS refusal (exit 97).
			out, code = l.gwRun(30*time.Second, nil, "curl", append([]string{"-sS", "--max-time", "10", "--cacert", l.caFile},
				append(args, "https://other.example.test/")...)...)
			if code == 0 {
				t.Errorf("curl %v to a name not allowed: %q", args[:1], out)
			}
		}
		for _, h := range l.web.Hosts() {
			if strings.HasPrefix(h, "other.example.test") {
				t.Errorf("the web server saw %s", h)
			}
		}
	})
	t.Run("raw tunnel by name", func(t *testing.T) {
		c, _, err := open(socksName("git.test", 22))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		expectFakeSSH(t, c, bufio.NewReader(c))
	})
	t.Run("credentials", func(t *testing.T) {
		for _, tc := range []struct{ user, pass string }{
			{user, pass + "x"}, {user, ""}, {"", pass}, {"s_nonexistent", pass}, {strings.ToUpper(user), pass},
		} {
			c, err := dial(socksAddr)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := socksHandshake(c, tc.user, tc.pass, socksConnect, socksName("git.test", 22))
			c.Close()
			if err == nil && rep != socksAuthFailed {
				t.Errorf("user %q, password of %d bytes: reply %#x, want a failed authentication", tc.user, len(tc.pass), rep)
			}
		}
		// No user/password method offered: 0xFF.
		c, err := dial(socksAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte{5, 1, 0})
		var sel [2]byte
		if _, err := c.Read(sel[:]); err == nil && sel[1] != 0xff {
			t.Errorf("greeting with only 'no authentication': selected %#x", sel[1])
		}
	})
	t.Run("refusals", func(t *testing.T) {
		l.setSessionPolicy(sess, policy.Policy{AllowedTCP: []string{"git.test:22", "rebind.example.test:22", "meta.example.test:22",
			"denied.git.test:22"}, DeniedDomains: []string{"denied.git.test"}})
		gitConns := l.git.conns.Load()
		for _, tc := range []struct {
			target socksTarget
			// malformed: a request the listener may close without a reply, instead of
			// answering a refusal.
			malformed bool
		}{
			{target: socksName("other.example.test", 22)},  // a name not listed, the same port
			{target: socksName("gitmirror.test", 22)},      // not listed, though it shares git.test's address
			{target: socksName("git.test", 2222)},          // the listed name, another port
			{target: socksName("rebind.example.test", 22)}, // listed, answers a private address
			{target: socksName("meta.example.test", 22)},   // listed, answers the metadata address
			{target: socksName("denied.git.test", 22)},     // listed and denied: denied_domains wins
			{target: socksName("DENIED.Git.Test.", 22)},    // the same, another spelling
			{target: socksIP(gitAddr, 22)},                 // an IP literal outside allowed_cidrs
			{target: socksIP("::ffff:"+gitAddr, 22)},       // the same, IPv4-mapped
			{target: socksName(gitAddr, 22)},               // the same, as a name
			{target: socksIP(privateAddr, 22)},             // private, outside allowed_cidrs
			{target: socksIP(metaAddr, 22)},                // metadata
			{target: socksName("git.test", 0), malformed: true},
			{target: socksName("git.test\x00.evil.test", 22), malformed: true},
			{target: socksName("git.test:22", 22), malformed: true},
			{target: socksName("*.test", 22), malformed: true},
			{target: socksName("git test", 22), malformed: true},
		} {
			c, rep, err := open(tc.target)
			if err == nil {
				c.Close()
				t.Errorf("CONNECT %q: succeeded", tc.target)
				continue
			}
			if rep == socksSucceeded && !(tc.malformed && !errors.Is(err, errSocksRefused)) {
				t.Errorf("CONNECT %q: %v", tc.target, err)
			}
		}
		for _, cmd := range []byte{socksBind, socksUDPAssociate} {
			for _, target := range []socksTarget{socksName("git.test", 22), socksIP(gitAddr, 22), socksIP(privateAddr, 5432)} {
				c, err := dial(socksAddr)
				if err != nil {
					t.Fatal(err)
				}
				rep, err := socksHandshake(c, user, pass, cmd, target)
				c.Close()
				if err != nil || rep != socksCmdUnsupported {
					t.Errorf("command %d to %s: reply %#x, %v; want %#x (command not supported)", cmd, target, rep, err, socksCmdUnsupported)
				}
			}
		}
		if n := l.git.conns.Load() - gitConns; n != 0 {
			t.Errorf("%d refused requests reached git.test's server", n)
		}
		if n := l.private.conns.Load() + l.meta.conns.Load() + l.tcp22.Load(); n != 0 {
			t.Errorf("%d connections reached the private, metadata or unlisted server", n)
		}
	})
	t.Run("UDP ASSOCIATE and BIND for 0.0.0.0:0", func(t *testing.T) {
		// RFC 1928 §7: a client that does not know the address it will send from asks
		// UDP ASSOCIATE for 0.0.0.0 port 0, the most common form: "command not supported".
		for _, cmd := range []byte{socksUDPAssociate, socksBind} {
			c, err := dial(socksAddr)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := socksHandshake(c, user, pass, cmd, socksIP("0.0.0.0", 0))
			c.Close()
			if err != nil || rep != socksCmdUnsupported {
				t.Errorf("command %d for 0.0.0.0:0: reply %#x, %v; want %#x (command not supported)", cmd, rep, err, socksCmdUnsupported)
			}
		}
	})
	t.Run("IP literal inside allowed_cidrs", func(t *testing.T) {
		l.setSessionPolicy(sess, policy.Policy{AllowedCIDRs: []string{"198.51.100.0/24"}})
		c, _, err := open(socksIP(privateAddr, 22))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		expectFakeSSH(t, c, bufio.NewReader(c))
	})
	t.Run("entry removed cuts the tunnel", func(t *testing.T) {
		l.setSessionPolicy(sess, policy.Policy{AllowedTCP: []string{"git.test:22", "db.test:5432"}})
		c, _, err := open(socksName("git.test", 22))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		expectFakeSSH(t, c, br)
		l.setSessionPolicy(sess, policy.Policy{AllowedTCP: []string{"db.test:5432"}})
		expectCut(t, c, br)
		// And the next request is refused.
		if c, rep, err := open(socksName("git.test", 22)); err == nil || rep != socksNotAllowed {
			if c != nil {
				c.Close()
			}
			t.Errorf("CONNECT git.test:22 after the entry was removed: reply %#x, %v", rep, err)
		}
	})
	t.Run("records", func(t *testing.T) {
		events, err := l.api.Events(context.Background(), client.EventsFilter{SessionID: sess.SessionID, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var allowed, denied bool
		for _, e := range events {
			if e.Kind == "connect" && e.Decision == "allow" && e.Host == "git.test" && e.Port == 22 && e.Reason == string(policy.ReasonAllowedTCP) && e.Rule != "" {
				allowed = true
			}
			if e.Decision == "deny" && e.Host == "gitmirror.test" && e.Port == 22 && e.Reason != "" {
				denied = true
			}
		}
		if !allowed || !denied {
			t.Errorf("records of SOCKS5 requests: allowed git.test:22 %v, denied gitmirror.test:22 %v\n%s", allowed, denied, fmt.Sprint(events))
		}
	})
}
