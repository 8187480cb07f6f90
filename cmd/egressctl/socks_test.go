package main

// egressctl socks-connect against a real egressd with --socks-listen: the session's
// socks_url, a connection by name, a refusal, wrong credentials, and ssh using it as its
// ProxyCommand.

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// sshLikeIP is the fake SSH server's address: inside --public-cidrs, used by no other test here.
const sshLikeIP = "127.0.0.37"

// fakeSSH serves a banner, as an SSH server does first, then echoes; it returns its port.
func fakeSSH(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", sshLikeIP+":0")
	if err != nil {
		t.Fatal(err)
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
				c.SetDeadline(time.Now().Add(20 * time.Second))
				io.WriteString(c, "SSH-2.0-egressd-test\r\n")
				io.Copy(c, c)
			}()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

func TestSOCKSConnect(t *testing.T) {
	dns := testnet.StartDNS(t, "127.0.0.1")
	dns.Set("git.example.test", sshLikeIP)
	dns.Set("denied.example.test", sshLikeIP)
	port := fakeSSH(t)
	socksAddr := egressdtest.FreePort(t)
	in := egressdtest.Start(t, "--public-cidrs", "127.0.0.0/26", "--dns-upstream", dns.Addr, "--socks-listen", socksAddr)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.New(in.URL, in.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := c.CreateVM(ctx, client.CreateVMRequest{})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := c.CreateSession(ctx, client.CreateSessionRequest{VMID: vm.VMID})
	if err != nil {
		t.Fatal(err)
	}
	creds := strings.TrimSuffix(strings.TrimPrefix(sess.ProxyURL, "http://"), "@"+in.ProxyAddr)
	if want := "socks5h://" + creds + "@" + socksAddr; sess.SOCKSURL != want || !strings.HasPrefix(creds, sess.SessionID+":") {
		t.Fatalf("socks_url %q, want %q", sess.SOCKSURL, want)
	}
	if _, err := c.SetSessionPolicy(ctx, sess.SessionID, policy.Policy{
		AllowedTCP:    []string{"git.example.test:" + port, "denied.example.test:" + port},
		DeniedDomains: []string{"denied.example.test"},
	}); err != nil {
		t.Fatal(err)
	}

	bin := egressdtest.Binary(t, "egressctl")
	dir := t.TempDir()
	run := func(stdin string, env []string, args ...string) (string, string, error) {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}, env...)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return out.String(), errOut.String(), err
	}
	env := []string{"EGRESSD_SOCKS_URL=" + sess.SOCKSURL}

	out, errOut, err := run("ping\n", env, "socks-connect", "git.example.test", port)
	if err != nil || out != "SSH-2.0-egressd-test\r\nping\n" {
		t.Errorf("socks-connect git.example.test: %q, %v\n%s", out, err, errOut)
	}
	// --socks-url instead of the environment.
	out, errOut, err = run("", nil, "socks-connect", "--socks-url", sess.SOCKSURL, "GIT.example.test.", port)
	if err != nil || out != "SSH-2.0-egressd-test\r\n" {
		t.Errorf("socks-connect --socks-url: %q, %v\n%s", out, err, errOut)
	}

	for _, tc := range []struct {
		name   string
		env    []string
		args   []string
		stderr string
	}{
		{"denied domain", env, []string{"denied.example.test", port}, "egressd refused denied.example.test:" + port + ": connection not allowed by ruleset"},
		{"port nothing allows", env, []string{"git.example.test", "1"}, "egressd refused"},
		{"wrong token", []string{"EGRESSD_SOCKS_URL=socks5h://" + sess.SessionID + ":wrong@" + socksAddr}, []string{"git.example.test", port}, "refused the session's credentials"},
		{"no URL", nil, []string{"git.example.test", port}, "EGRESSD_SOCKS_URL"},
		{"an http URL", []string{"EGRESSD_SOCKS_URL=" + sess.ProxyURL}, []string{"git.example.test", port}, "socks5h://"},
		{"bad port", env, []string{"git.example.test", "0"}, "PORT"},
	} {
		out, errOut, err := run("", tc.env, append([]string{"socks-connect"}, tc.args...)...)
		if err == nil || out != "" || !strings.Contains(errOut, tc.stderr) {
			t.Errorf("%s: %v, stdout %q, stderr %q; want a failure saying %q", tc.name, err, out, errOut, tc.stderr)
		}
	}
	evs, err := c.Events(ctx, client.EventsFilter{SessionID: sess.SessionID, Kind: "connect"})
	if err != nil {
		t.Fatal(err)
	}
	var denied, allowed bool
	for _, e := range evs {
		denied = denied || e.Host == "denied.example.test" && e.Decision == "deny" && e.Reason == string(policy.ReasonDeniedDomain)
		allowed = allowed || e.Host == "git.example.test" && e.Decision == "allow" && e.IP == sshLikeIP && e.Reason == string(policy.ReasonAllowedTCP)
	}
	if !denied || !allowed {
		t.Errorf("events lack the allowed or the denied connection: %+v", evs)
	}

	// A local forward for clients without SOCKS (psql in docs/proxy.md): socat runs
	// socks-connect for the connection it accepts.
	socat, err := exec.LookPath("socat")
	testnet.Require(t, err == nil, "socat")
	fwd := egressdtest.FreePort(t)
	fcmd := exec.Command(socat, "TCP-LISTEN:"+strings.TrimPrefix(fwd, "127.0.0.1:")+",bind=127.0.0.1,reuseaddr",
		"EXEC:"+bin+" socks-connect git.example.test "+port)
	fcmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "EGRESSD_SOCKS_URL=" + sess.SOCKSURL}
	if err := fcmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fcmd.Process.Kill(); fcmd.Wait() })
	var fc net.Conn
	for i := 0; i < 100; i++ { // socat takes a moment to listen
		if fc, err = net.DialTimeout("tcp", fwd, time.Second); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("the socat forward: %v", err)
	}
	fc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(fc, "through socat\n")
	got := make([]byte, len("SSH-2.0-egressd-test\r\nthrough socat\n"))
	if _, err := io.ReadFull(fc, got); err != nil || string(got) != "SSH-2.0-egressd-test\r\nthrough socat\n" {
		t.Errorf("through the socat forward: %q %v", got, err)
	}
	fc.Close()

	// ssh with socks-connect as its ProxyCommand reaches the server's banner through egressd.
	ssh, err := exec.LookPath("ssh")
	testnet.Require(t, err == nil, "ssh")
	binDir := filepath.Join(dir, "bin")
	os.Mkdir(binDir, 0o755)
	if err := os.Symlink(bin, filepath.Join(binDir, "egressctl")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, ssh, "-v", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "ProxyCommand=egressctl socks-connect %h %p", "-p", port, "git.example.test", "true")
	cmd.Env = []string{"PATH=" + binDir + ":" + os.Getenv("PATH"), "HOME=" + dir, "EGRESSD_SOCKS_URL=" + sess.SOCKSURL}
	sshOut, _ := cmd.CombinedOutput()
	if !strings.Contains(string(sshOut), "remote software version egressd-test") {
		t.Errorf("ssh did not reach the server through socks-connect:\n%s", sshOut)
	}

	// git over ssh, as docs/proxy.md has it: GIT_SSH_COMMAND with the ProxyCommand.
	git, err := exec.LookPath("git")
	testnet.Require(t, err == nil, "git")
	cmd = exec.CommandContext(ctx, git, "ls-remote", "ssh://git@git.example.test:"+port+"/org/repo.git")
	cmd.Env = append(cmd.Env, "PATH="+binDir+":"+os.Getenv("PATH"), "HOME="+dir, "EGRESSD_SOCKS_URL="+sess.SOCKSURL,
		"GIT_SSH_COMMAND=ssh -v -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ProxyCommand='egressctl socks-connect %h %p'")
	gitOut, _ := cmd.CombinedOutput()
	if !strings.Contains(string(gitOut), "remote software version egressd-test") {
		t.Errorf("git over ssh did not reach the server through socks-connect:\n%s", gitOut)
	}
}

// Without --socks-listen a session has no socks_url.
func TestNoSOCKSURLWithoutListener(t *testing.T) {
	in := egressdtest.Start(t)
	c, err := client.New(in.URL, in.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	vm, err := c.CreateVM(ctx, client.CreateVMRequest{})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := c.CreateSession(ctx, client.CreateSessionRequest{VMID: vm.VMID})
	if err != nil {
		t.Fatal(err)
	}
	if sess.SOCKSURL != "" || sess.ProxyURL == "" {
		t.Errorf("proxy_url %q, socks_url %q", sess.ProxyURL, sess.SOCKSURL)
	}
}

func TestParseSOCKSURL(t *testing.T) {
	for _, tc := range []struct {
		in, server, user, pass string
		ok                     bool
	}{
		{"socks5h://ses_a:tok@127.0.0.1:8472", "127.0.0.1:8472", "ses_a", "tok", true},
		{"socks5://ses_a:tok@[::1]:8472", "[::1]:8472", "ses_a", "tok", true},
		{"http://ses_a:tok@127.0.0.1:8471", "", "", "", false},
		{"socks5h://127.0.0.1:8472", "", "", "", false},
		{"socks5h://ses_a@127.0.0.1:8472", "", "", "", false},
		{"socks5h://ses_a:@127.0.0.1:8472", "", "", "", false},
		{"socks5h://ses_a:tok@127.0.0.1", "", "", "", false},
		{"::", "", "", "", false},
	} {
		server, user, pass, err := parseSOCKSURL(tc.in)
		if (err == nil) != tc.ok || server != tc.server || user != tc.user || pass != tc.pass {
			t.Errorf("%q: %q %q %q %v", tc.in, server, user, pass, err)
		}
	}
}
