package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/host/firewall"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// allowed_tcp in the transparent gateway (DESIGN §2.6): a sandbox that knows nothing of
// proxies asks the gateway's DNS filter for an allowed_tcp name, the addresses answered go
// into that VM's kernel set with the port, and the kernel forwards TCP to them.

// lookup resolves name inside the VM the way its programs do (resolv.conf names the
// gateway); it returns the address or "error <kind>".
func (l *tcpLab) lookup(vm *client.VM, name string) string {
	l.t.Helper()
	out, _ := l.py(vm, fmt.Sprintf(`
import socket
try:
    print(socket.gethostbyname(%q))
except Exception as e:
    print("error", type(e).__name__)
`, name))
	return strings.TrimSpace(out)
}

// dialVM opens a TCP connection from inside the VM with Go (for tunnels the test holds).
func dialVM(vm *client.VM, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return netns.DialIn(vm.Network.Path)(ctx, "tcp", addr)
}

// tcpSet is the listing of the VM's allowed_tcp set in the gateway's kernel.
func (l *tcpLab) tcpSet(vm *client.VM) string {
	l.t.Helper()
	out, code := l.gwRun(10*time.Second, nil, "nft", "list", "set", "inet", firewall.TableName, "tcp_"+vm.Network.Netns)
	if code != 0 {
		l.t.Fatalf("nft list set: exit %d\n%s", code, out)
	}
	return out
}

// egressctl runs egressctl against the lab's egressd, in the gateway namespace where its
// API listens; it returns the combined output and the exit code.
func (l *tcpLab) egressctl(args ...string) (string, int) {
	l.t.Helper()
	cmd := exec.Command(egressdtest.Binary(l.t, "egressctl"), args...)
	cmd.Env = append(cleanProxyEnv(), "EGRESSD_URL="+l.in.URL, "EGRESSD_API_KEY="+l.in.AdminKey)
	var buf strings.Builder
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := netns.RunIn("/run/netns/"+l.gwNS, cmd)
	if ee, ok := err.(*exec.ExitError); ok {
		return buf.String(), ee.ExitCode()
	} else if err != nil {
		l.t.Fatalf("egressctl: %v", err)
	}
	return buf.String(), 0
}

func TestAllowedTCPTransparent(t *testing.T) {
	l := newTCPLab(t)
	testnet.Require(t, haveCmd("ssh"), "ssh (openssh-client)")
	testnet.Require(t, haveCmd("nft"), "nft")
	p := policy.Policy{AllowedTCP: []string{"git.test:22", "db.test:5432", "rebind.example.test:22", "meta.example.test:22", "realgit.test:22"}}
	a := l.vm("tcp-a", &p)
	b := l.vm("tcp-b", &p) // the same policy: only its own lookups open anything for it
	repo := l.startSSHD()

	t.Run("ssh by name", func(t *testing.T) {
		out, code := l.run(a, 30*time.Second, "ssh", sshArgs("none", "git@git.test", "true")...)
		if code != 255 || !reachedByOpenSSH(l.git) {
			t.Fatalf("ssh from the sandbox: exit %d (want 255, the fake server's close), banners %q\n%s", code, l.git.Banners(), out)
		}
	})
	t.Run("git clone from a real sshd", func(t *testing.T) {
		testnet.Require(t, haveCmd("git"), "git")
		dir := t.TempDir()
		out, code := l.run(a, 60*time.Second, "env", "HOME="+dir, "GIT_SSH_COMMAND="+repo.gitSSHCommand(""),
			"git", "clone", "-q", repo.URL, dir+"/clone")
		if code != 0 {
			t.Fatalf("git clone over ssh from the sandbox: exit %d\n%s", code, out)
		}
		if got, err := os.ReadFile(dir + "/clone/README"); err != nil || string(got) != repo.File {
			t.Fatalf("cloned README: %q, %v", got, err)
		}
	})
	t.Run("psql by name", func(t *testing.T) {
		testnet.Require(t, haveCmd("psql"), "psql (postgresql-client)")
		out, code := l.run(a, 30*time.Second, "psql", "host=db.test port=5432 user=e2e dbname=demo connect_timeout=5", "-c", "select 1")
		if code == 0 || !strings.Contains(out, fakePGMessage+" user=e2e database=demo") {
			t.Fatalf("psql: exit %d, want the fake server's FATAL:\n%s", code, out)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		gitConns := l.git.conns.Load()
		// Names not listed are not answered, whatever the port.
		for _, name := range []string{"other.example.test", "gitmirror.test", "api.example.test"} {
			if got := l.lookup(a, name); !strings.HasPrefix(got, "error") {
				t.Errorf("lookup of %s, not listed: %q", name, got)
			}
		}
		// Listed names whose answers are private or metadata: nothing given, nothing opened.
		for _, name := range []string{"rebind.example.test", "meta.example.test"} {
			if got := l.lookup(a, name); !strings.HasPrefix(got, "error") {
				t.Errorf("lookup of %s (a non-public answer): %q", name, got)
			}
		}
		// Each probe waits out its 3 s connect timeout (a dropped SYN): all at once.
		var wg sync.WaitGroup
		for _, p := range []struct {
			vm   *client.VM
			addr string
		}{
			{a, webAddr + ":22"},     // other.example.test's address, the same port
			{a, gitAddr + ":2222"},   // an answered address, another port
			{a, privateAddr + ":22"}, // the private answer's address
			{a, metaAddr + ":22"},
			{b, gitAddr + ":22"}, // the second VM asked nothing: its neighbour's lookup is not its own
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if c, err := dialVM(p.vm, p.addr); err == nil {
					c.Close()
					t.Errorf("%s: connected from VM %s", p.addr, p.vm.VMID)
				}
			}()
		}
		wg.Wait()
		if n := l.tcp22.Load() + l.private.conns.Load() + l.meta.conns.Load(); n != 0 {
			t.Errorf("%d connections reached servers the policy does not open", n)
		}
		if n := l.git.conns.Load() - gitConns; n != 0 {
			t.Errorf("%d refused connections reached git.test's server", n)
		}
		// Once b looks the name up itself, it is open to b too.
		if got := l.lookup(b, "git.test"); got != gitAddr {
			t.Fatalf("lookup of git.test from VM b: %q", got)
		}
		c, err := dialVM(b, gitAddr+":22")
		if err != nil {
			t.Fatalf("VM b after its own lookup: %v", err)
		}
		c.Close()
	})
	t.Run("the grain is the address", func(t *testing.T) {
		// Documented (docs/policy.md): another name on an answered address and port is
		// reachable too; here, the address itself.
		if got := l.lookup(a, "git.test"); got != gitAddr {
			t.Fatalf("lookup of git.test: %q", got)
		}
		c, err := dialVM(a, gitAddr+":22")
		if err != nil {
			t.Fatalf("the answered address by number: %v", err)
		}
		c.Close()
	})
	t.Run("an open connection outlives its set element", func(t *testing.T) {
		if got := l.lookup(a, "git.test"); got != gitAddr {
			t.Fatalf("lookup of git.test: %q", got)
		}
		// The fake DNS answers with TTL 30: the element lives max(30 s, 60 s) + 60 s.
		set := l.tcpSet(a)
		m := regexp.MustCompile(regexp.QuoteMeta(gitAddr) + ` \. 22 timeout (\S+)`).FindStringSubmatch(set)
		if m == nil || m[1] != "2m" {
			t.Fatalf("the element of git.test:22 in the VM's set: %v, want timeout 2m:\n%s", m, set)
		}
		c, err := dialVM(a, gitAddr+":22")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		expectFakeSSH(t, c, br)
		// Let the kernel expire it: the same element put back with a 1 s timeout (waiting
		// out the real two minutes would make the test slow), then gone by the kernel's own
		// timer.
		setName := "tcp_" + a.Network.Netns
		for _, args := range [][]string{
			{"delete", "element", "inet", firewall.TableName, setName, "{ " + gitAddr + " . 22 }"},
			{"add", "element", "inet", firewall.TableName, setName, "{ " + gitAddr + " . 22 timeout 1s }"},
		} {
			if out, code := l.gwRun(10*time.Second, nil, "nft", args...); code != 0 {
				t.Fatalf("nft %v: %d %s", args, code, out)
			}
		}
		for deadline := time.Now().Add(10 * time.Second); strings.Contains(l.tcpSet(a), gitAddr+" . 22"); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the element did not expire:\n%s", l.tcpSet(a))
			}
		}
		for i := 0; i < 3; i++ {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "still %d\n", i)
			if line, err := br.ReadString('\n'); err != nil || line != fmt.Sprintf("still %d\n", i) {
				t.Fatalf("the open connection after its element expired: %q, %v", line, err)
			}
		}
		// A new connection to it without a new answer is dropped.
		if c2, err := dialVM(a, gitAddr+":22"); err == nil {
			c2.Close()
			t.Errorf("a new connection after the element expired")
		}
	})
	t.Run("a session's narrower policy holds the VM's network", func(t *testing.T) {
		// Sessions share their VM's network: its traffic is held to the VM policy AND every
		// open session's (DESIGN §2.4). A session that allows only db.test:5432 closes
		// git.test:22 for the whole VM, open connections included, until it ends.
		if got := l.lookup(a, "git.test"); got != gitAddr {
			t.Fatalf("lookup of git.test: %q", got)
		}
		c, err := dialVM(a, gitAddr+":22")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		expectFakeSSH(t, c, br)
		ctx := context.Background()
		s, err := l.api.CreateSession(ctx, client.CreateSessionRequest{VMID: a.VMID})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.api.SetSessionPolicy(ctx, s.SessionID, policy.Policy{AllowedTCP: []string{"db.test:5432"}}); err != nil {
			t.Fatal(err)
		}
		expectCut(t, c, br)
		if got := l.lookup(a, "git.test"); !strings.HasPrefix(got, "error") {
			t.Errorf("lookup of git.test with the session open: %q", got)
		}
		if got := l.lookup(a, "db.test"); got != dbAddr {
			t.Errorf("lookup of db.test, which both layers allow: %q", got)
		}
		if err := l.api.DeleteSession(ctx, s.SessionID); err != nil {
			t.Fatal(err)
		}
		if got := l.lookup(a, "git.test"); got != gitAddr {
			t.Errorf("lookup of git.test after the session ended: %q", got)
		}
	})
	t.Run("entry removed cuts an open connection", func(t *testing.T) {
		if got := l.lookup(a, "git.test"); got != gitAddr {
			t.Fatalf("lookup of git.test: %q", got)
		}
		c, err := dialVM(a, gitAddr+":22")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		expectFakeSSH(t, c, br)
		// Through the CLI, as an operator would: setting the VM policy replaces it whole.
		if out, code := l.egressctl("egress", "set", "--vm", a.VMID, "--tcp", "db.test:5432"); code != 0 {
			t.Fatalf("egressctl egress set --tcp: exit %d\n%s", code, out)
		}
		expectCut(t, c, br)
		if c2, err := dialVM(a, gitAddr+":22"); err == nil {
			c2.Close()
			t.Errorf("a new connection to git.test:22 after its entry was removed")
		}
		if got := l.lookup(a, "git.test"); !strings.HasPrefix(got, "error") {
			t.Errorf("lookup of git.test after its entry was removed: %q", got)
		}
		if set := l.tcpSet(a); strings.Contains(set, gitAddr+" . 22") {
			t.Errorf("the element stays in the set:\n%s", set)
		}
	})
}

// TestAllowedTCPTransparentRecords: what the kernel forwards and drops is recorded
// (DESIGN §6): one record with bytes per allowed_tcp connection, a denied attempt, and in
// monitor mode a would-be denial that passes.
func TestAllowedTCPTransparentRecords(t *testing.T) {
	l := newTCPLab(t)
	testnet.Require(t, haveCmd("conntrack"), "conntrack (conntrack-tools)")
	enforce := l.vm("rec-enforce", &policy.Policy{AllowedTCP: []string{"bulk.test:9000"}})
	monitor := l.vm("rec-monitor", &policy.Policy{Mode: policy.Monitor, AllowedTCP: []string{"bulk.test:9000"}})
	ctx := context.Background()
	// A connection's record comes when conntrack moves it to TIME_WAIT or CLOSE; one whose
	// update was missed comes with its DESTROY event, at the end of the closing state it is
	// left in. The lab's gateway namespace shortens those states to 1 s, so that even then
	// the test need not wait minutes.
	for _, s := range []string{"time_wait", "close", "close_wait", "last_ack", "fin_wait"} {
		if out, code := l.gwRun(10*time.Second, nil, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_"+s+"=1"); code != 0 {
			t.Fatalf("sysctl in the gateway namespace: %d %s", code, out)
		}
	}

	// One allowed_tcp connection carrying a known number of bytes.
	const size = 300_000
	if got := l.lookup(enforce, "bulk.test"); got != bulkAddr {
		t.Fatalf("lookup of bulk.test: %q", got)
	}
	c, err := dialVM(enforce, bulkAddr+":9000")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := bulkGet(c, size); err != nil || n != size {
		t.Fatalf("bulk: %d bytes, %v", n, err)
	}
	c.Close()
	// A denied attempt: an address no answer opened.
	if c, err := dialVM(enforce, webAddr+":22"); err == nil {
		c.Close()
		t.Fatalf("enforce: %s:22 connected", webAddr)
	}
	// Monitor: the same attempt passes and is a would-be denial.
	before := l.tcp22.Load()
	if c, err := dialVM(monitor, webAddr+":22"); err != nil {
		t.Fatalf("monitor: %s:22: %v", webAddr, err)
	} else {
		c.Close()
	}
	for deadline := time.Now().Add(5 * time.Second); l.tcp22.Load() == before && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond) // the server counts after its accept
	}
	if l.tcp22.Load() == before {
		t.Errorf("monitor: the connection did not reach the server")
	}

	var closes, denies, wouldDeny []client.Event
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		// The kernel deletes an expired conntrack entry (and sends its DESTROY event) when
		// its garbage collector passes, up to a minute later, or when a dump walks past
		// it: list the table to have it now.
		l.gwRun(10*time.Second, nil, "conntrack", "-L", "-p", "tcp")
		closes, denies, wouldDeny = nil, nil, nil
		for _, vm := range []*client.VM{enforce, monitor} {
			list, err := l.api.Events(ctx, client.EventsFilter{VMID: vm.VMID, Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range list {
				switch {
				case vm == enforce && e.Kind == "close" && e.IP == bulkAddr && e.Port == 9000:
					closes = append(closes, e)
				case vm == enforce && e.Decision == "deny" && e.IP == webAddr && e.Port == 22:
					denies = append(denies, e)
				case vm == monitor && e.WouldDeny && e.IP == webAddr && e.Port == 22:
					wouldDeny = append(wouldDeny, e)
				}
			}
		}
		if len(closes) > 0 && len(denies) > 0 && len(wouldDeny) > 0 {
			break
		}
	}
	if len(closes) != 1 {
		t.Errorf("close records of the allowed_tcp connection: %d, want 1: %+v", len(closes), closes)
	} else if e := closes[0]; e.BytesDown < size || e.BytesUp < 8 || e.Host != "bulk.test" {
		t.Errorf("close record: host %q, %d bytes up, %d down (want >= 8 and >= %d): %+v", e.Host, e.BytesUp, e.BytesDown, size, e)
	}
	if len(denies) == 0 {
		t.Errorf("no record of the denied attempt to %s:22", webAddr)
	} else if e := denies[0]; e.Transport != "tcp" || e.Reason == "" {
		t.Errorf("denied attempt record: %+v", e)
	}
	if len(wouldDeny) == 0 {
		t.Errorf("no would-be denial recorded in monitor mode for %s:22", webAddr)
	} else if e := wouldDeny[0]; e.Decision != "allow" {
		t.Errorf("monitor record: %+v", e)
	}
}
