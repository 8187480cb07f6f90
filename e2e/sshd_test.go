package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/testnet"
)

// A real OpenSSH server in the fake internet (Debian's openssh-server, installed by .ci/run),
// serving one bare git repository, so that `git clone` over SSH can be shown end to end.
// It runs as root inside the lab's internet namespace, with its own configuration, host key
// and authorized key in a temporary directory, and lets in only that key.

const realGitAddr = "203.0.113.23"

// sshdRepo is what a test needs to clone from the real SSH server.
type sshdRepo struct {
	Key  string // the client's private key
	URL  string // ssh://root@realgit.test/<path>.git
	File string // the content of README in the repository
}

// startSSHD starts sshd on realGitAddr:22 in the lab's internet, names it realgit.test and
// returns the repository; sshd is stopped when the test ends.
func (l *tcpLab) startSSHD() sshdRepo {
	t := l.t
	t.Helper()
	testnet.Require(t, haveCmd("sshd") || fileExists("/usr/sbin/sshd"), "sshd (openssh-server)")
	testnet.Require(t, haveCmd("ssh-keygen") && haveCmd("git"), "ssh-keygen and git")
	dir := t.TempDir()
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(cleanProxyEnv(), "HOME="+dir, "GIT_AUTHOR_NAME=e2e", "GIT_AUTHOR_EMAIL=e2e@example.test",
			"GIT_COMMITTER_NAME=e2e", "GIT_COMMITTER_EMAIL=e2e@example.test")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	hostKey, clientKey := filepath.Join(dir, "host_ed25519"), filepath.Join(dir, "client_ed25519")
	run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey)
	run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", clientKey)
	pub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, pub, 0o600); err != nil {
		t.Fatal(err)
	}

	// A bare repository with one commit.
	work, bare := filepath.Join(dir, "work"), filepath.Join(dir, "demo.git")
	content := "egressd e2e over ssh " + l.suffix + "\n"
	run("git", "init", "-q", "-b", "main", work)
	if err := os.WriteFile(filepath.Join(work, "README"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	run("git", "-C", work, "add", "README")
	run("git", "-C", work, "commit", "-q", "-m", "demo")
	run("git", "clone", "-q", "--bare", work, bare)

	cfg := filepath.Join(dir, "sshd_config")
	conf := fmt.Sprintf(`ListenAddress %s:22
HostKey %s
AuthorizedKeysFile %s
PidFile none
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers root
`, realGitAddr, hostKey, authorized)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd's privilege separation directory; Debian's package makes it at boot only. Made
	// here if missing, and removed again once this sshd has stopped.
	if !fileExists("/run/sshd") {
		if err := os.Mkdir("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove("/run/sshd") })
	}
	ipCmd(t, "-n", l.inetNS, "addr", "add", realGitAddr+"/32", "dev", "lo")
	sshd := "/usr/sbin/sshd"
	if p, err := exec.LookPath("sshd"); err == nil {
		sshd = p
	}
	cmd := exec.Command(sshd, "-D", "-e", "-f", cfg)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := netns.StartIn("/run/netns/"+l.inetNS, cmd); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("sshd log:\n%s", log.String())
		}
	})
	// Wait until it listens (bounded).
	inet := "/run/netns/" + l.inetNS
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := netns.DialIn(inet)(t.Context(), "tcp", realGitAddr+":22")
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("sshd exited at start:\n%s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd does not listen after 10 s: %v\n%s", err, log.String())
		}
	}
	l.dns.Set("realgit.test", realGitAddr)
	return sshdRepo{Key: clientKey, URL: "ssh://root@realgit.test" + bare, File: content}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// gitSSHCommand is GIT_SSH_COMMAND for a clone with the repository's key, through
// proxyCommand ("" for none: the transparent gateway).
func (r sshdRepo) gitSSHCommand(proxyCommand string) string {
	args := []string{"ssh", "-F", "/dev/null", "-i", r.Key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10"}
	if proxyCommand != "" {
		args = append(args, "-o", "'ProxyCommand="+proxyCommand+"'")
	}
	return strings.Join(args, " ")
}
