package main

// egressctl suggest against a real egressd: denials made through the explicit proxy, the
// suggestion, --apply (refused without a terminal unless --yes; asked on a terminal), and the
// next connection passes.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
)

// suggestIP is where this test's echo server listens: inside --public-cidrs, used by no other test here.
const suggestIP = "127.0.0.42"

// refusedConnect sends CONNECT target through the session's proxy and asserts a 403; it
// returns the X-Egress-Reason.
func refusedConnect(t *testing.T, proxyURL, target string) string {
	t.Helper()
	u, err := url.Parse(proxyURL)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	pass, _ := u.User.Password()
	auth := base64.StdEncoding.EncodeToString([]byte(u.User.Username() + ":" + pass))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n", target, target, auth)
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("CONNECT %s: %s, want 403", target, resp.Status)
	}
	return resp.Header.Get("X-Egress-Reason")
}

// suggestSetup starts egressd with a fake DNS and an echo server that the names lead to, and
// a session whose policy denies everything; it returns egressctl, the session and the port.
func suggestSetup(t *testing.T) (*ctl, client.Session, string) {
	t.Helper()
	dns := testnet.StartDNS(t, "127.0.0.1")
	echo := egressdtest.Echo(t, suggestIP)
	_, port, _ := net.SplitHostPort(echo)
	for _, n := range []string{"git.example.test", "a.svc.example.test", "b.svc.example.test", "c.svc.example.test", "other.test"} {
		dns.Set(n, suggestIP)
	}
	in := egressdtest.Start(t, "--public-cidrs", "127.0.0.0/26", "--dns-upstream", dns.Addr)
	c := newCtl(t, in.URL, in.AdminKey)
	c.ok("vm", "create", "--id", "vm-learn")
	var s client.Session
	c.json(&s, "session", "create", "--vm", "vm-learn")
	c.ok("egress", "set", "--session", s.SessionID) // deny everything
	return c, s, port
}

func TestSuggestApplyEndToEnd(t *testing.T) {
	c, s, port := suggestSetup(t)
	for _, n := range []string{"git.example.test", "a.svc.example.test", "b.svc.example.test", "c.svc.example.test", "git.example.test"} {
		if reason := refusedConnect(t, s.ProxyURL, n+":"+port); reason != "port_not_allowed" {
			t.Fatalf("CONNECT %s: reason %q", n, reason)
		}
	}
	if reason := refusedConnect(t, s.ProxyURL, "169.254.169.254:80"); reason != "hard_deny" {
		t.Fatalf("metadata: reason %q", reason)
	}

	var sug client.Suggestion
	c.json(&sug, "suggest", "--session", s.SessionID)
	wild := client.SuggestedEntry{Entry: "*.example.test:" + port, Covers: 5,
		Names: []string{"a.svc.example.test", "b.svc.example.test", "c.svc.example.test", "git.example.test"}}
	if !sug.Changed || !reflect.DeepEqual(sug.AllowedTCP, []client.SuggestedEntry{wild}) || len(sug.Flags) != 0 || len(sug.AllowedDomains) != 0 {
		t.Fatalf("suggestion: %+v", sug)
	}
	if len(sug.NotAllowable) != 1 || sug.NotAllowable[0].Reason != "hard_deny" || sug.NotAllowable[0].IP != "169.254.169.254" {
		t.Fatalf("not allowable: %+v", sug.NotAllowable)
	}
	out := c.ok("suggest", "--session", s.SessionID)
	mustHaveLine(t, out, "allowed_tcp", "*.example.test:"+port, "(a.svc.example.test,", "b.svc.example.test,", "c.svc.example.test,", "git.example.test)", "5")
	if !hasLinePrefix(out, "hard_deny", "169.254.169.254:80", "1", "the", "address", "is", "always", "denied") {
		t.Fatalf("suggest text lacks the hard denial:\n%s", out)
	}

	// Without a terminal, --apply wants --yes, and changes nothing.
	c.fails(1, "add --yes", "suggest", "--session", s.SessionID, "--apply")
	c.fails(1, "--yes goes with --apply", "suggest", "--session", s.SessionID, "--yes")
	var p client.Policy
	c.json(&p, "egress", "get", "--session", s.SessionID)
	if len(p.AllowedTCP) != 0 {
		t.Fatalf("refused --apply changed the policy: %+v", p)
	}

	out = c.ok("suggest", "--session", s.SessionID, "--apply", "--yes")
	mustHaveLine(t, out, "+", "allowed_tcp", "*.example.test:"+port)
	if !strings.Contains(out, "Applied: the session "+s.SessionID+" policy is now revision") {
		t.Fatalf("apply output:\n%s", out)
	}
	c.json(&p, "egress", "get", "--session", s.SessionID)
	if !reflect.DeepEqual(p.AllowedTCP, []string{"*.example.test:" + port}) || p.AllowHTTPS || len(p.AllowedCIDRs) != 0 {
		t.Fatalf("applied policy: %+v", p)
	}

	// The VM layer's denials point at the VM's own suggestion.
	c.ok("egress", "set", "--vm", "vm-learn", "--cidr", "198.51.100.0/24")
	if reason := refusedConnect(t, s.ProxyURL, "git.example.test:"+port); reason != "port_not_allowed" {
		t.Fatalf("after the VM policy: reason %q", reason)
	}
	if out := c.ok("suggest", "--session", s.SessionID); !strings.Contains(out, "1 denials were the vm layer's: see egressctl suggest --vm vm-learn") {
		t.Fatalf("no pointer to the VM's suggestion:\n%s", out)
	}
	c.ok("egress", "clear", "--vm", "vm-learn")

	// The next connection passes; a name nothing denied is still refused.
	conn := egressdtest.Connect(t, s.ProxyURL, "git.example.test:"+port)
	conn.Close()
	if reason := refusedConnect(t, s.ProxyURL, "other.test:"+port); reason != "port_not_allowed" {
		t.Fatalf("other.test: reason %q", reason)
	}

	// Asked again, the old denials are allowed now; the new one is suggested.
	sug = client.Suggestion{} // decoding into the old value would keep its fields
	c.json(&sug, "suggest", "--session", s.SessionID)
	if sug.AlreadyAllowed != 5 || !reflect.DeepEqual(sug.AllowedTCP, []client.SuggestedEntry{{Entry: "other.test:" + port, Covers: 1}}) {
		t.Fatalf("second suggestion: %+v", sug)
	}
	// --since past everything: nothing to apply.
	out = c.ok("suggest", "--session", s.SessionID, "--since", "2999-01-01T00:00:00Z", "--apply", "--yes")
	if !strings.Contains(out, "No change to suggest.") || !strings.Contains(out, "Nothing to apply") {
		t.Fatalf("empty apply:\n%s", out)
	}
	// The VM's suggestion: the session's denials are not the VM's.
	out = c.ok("suggest", "--vm", "vm-learn")
	// (The VM layer's one denial is its no more: it has no policy now.)
	if !strings.Contains(out, "6 denials were the session layer's: see egressctl suggest --session") || !strings.Contains(out, "No change to suggest.") ||
		!strings.Contains(out, "1 denials are allowed by the policy as it is now.") {
		t.Fatalf("VM suggestion:\n%s", out)
	}
}

// openPTY opens a pseudo-terminal: the side the test types into, and the one egressctl reads.
func openPTY(t *testing.T) (typer, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no pseudo-terminal: %v", err)
		}
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// TestSuggestApplyAsksOnATerminal: on a terminal --apply asks; anything but y leaves the
// policy alone, y sets it.
func TestSuggestApplyAsksOnATerminal(t *testing.T) {
	c, s, port := suggestSetup(t)
	refusedConnect(t, s.ProxyURL, "git.example.test:"+port)
	for _, tc := range []struct {
		answer  string
		code    int
		applied bool
	}{{"\n", 1, false}, {"no\n", 1, false}, {"y\n", 0, true}} {
		typer, tty := openPTY(t)
		if _, err := typer.WriteString(tc.answer); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, c.bin, "suggest", "--session", s.SessionID, "--apply")
		cmd.Env = c.env
		cmd.Stdin = tty
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code || !strings.Contains(stderr.String(), "Set this policy on session "+s.SessionID+"? [y/N]") {
			t.Fatalf("answer %q: exit %d, want %d\n%s%s", tc.answer, code, tc.code, stdout.String(), stderr.String())
		}
		var p client.Policy
		c.json(&p, "egress", "get", "--session", s.SessionID)
		if applied := len(p.AllowedTCP) > 0; applied != tc.applied {
			t.Fatalf("answer %q: applied %v, want %v (%+v)", tc.answer, applied, tc.applied, p)
		}
	}
}

// hasLinePrefix reports whether text has a line whose first fields are want, spacing aside.
func hasLinePrefix(text string, want ...string) bool {
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) >= len(want) && reflect.DeepEqual(f[:len(want)], want) {
			return true
		}
	}
	return false
}
