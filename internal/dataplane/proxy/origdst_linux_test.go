package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/testkit/testnet"
)

// netnsChild marks the copy of the test binary that runs inside its own network namespace.
const netnsChild = "EGRESSD_PROXY_TEST_NETNS_CHILD"

// TestOriginalDstKernel reads real SO_ORIGINAL_DST values after an nftables redirect, and
// runs the transparent proxy behind one. It runs the test binary again under "unshare
// --net": a network namespace that belongs to that process alone and vanishes with it.
// Nothing is changed in the machine's own namespace.
func TestOriginalDstKernel(t *testing.T) {
	if os.Getenv(netnsChild) != "1" {
		testnet.RequireRoot(t)
		unshare, err := exec.LookPath("unshare")
		_, nftErr := exec.LookPath("nft")
		_, ipErr := exec.LookPath("ip")
		testnet.Require(t, err == nil && nftErr == nil && ipErr == nil, "unshare, nft and ip (a throwaway network namespace with nftables)")
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, unshare, "--net", "--", os.Args[0],
			"-test.run=^TestOriginalDstKernel$", "-test.v", "-test.count=1", "-test.timeout=80s")
		cmd.Env = append(os.Environ(), netnsChild+"=1")
		out, err := cmd.CombinedOutput()
		t.Logf("in a new network namespace:\n%s", out)
		if err != nil {
			t.Fatalf("the test in a new network namespace failed: %v", err)
		}
		if !strings.Contains(string(out), "--- PASS: TestOriginalDstKernel") {
			t.Fatal("the test in a new network namespace did not pass")
		}
		return
	}

	// Inside the namespace. Refuse to change anything unless it is a fresh one.
	ifs, err := net.Interfaces()
	if err != nil || len(ifs) != 1 || ifs[0].Name != "lo" {
		t.Fatalf("not in a fresh network namespace (interfaces %v, %v): changing nothing", ifs, err)
	}
	run(t, "", "ip", "link", "set", "lo", "up")
	run(t, "", "ip", "-6", "addr", "add", "2001:db8::51/128", "dev", "lo")

	ln4 := listenOn(t, "tcp4", "127.0.0.1:0")
	ln6 := listenOn(t, "tcp6", "[::1]:0")
	lnDual := listenOn(t, "tcp", ":0") // dual stack: IPv4 arrives v4-mapped
	te := newTransparentEnv(t, apiOnly)
	cfg := te.tp.cfg
	cfg.OriginalDst = nil // the kernel's
	tp, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	lnT := listenOn(t, "tcp4", "127.0.0.1:0")
	go tp.ServeTransparent(lnT)

	port := func(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }
	run(t, fmt.Sprintf(`table inet egressd_proxy_test {
	chain out {
		type nat hook output priority -100;
		ip daddr 127.0.0.52 tcp dport 443 redirect to :%d
		ip daddr 127.0.0.53 tcp dport 80 redirect to :%d
		ip6 daddr 2001:db8::51 tcp dport 443 redirect to :%d
		ip daddr 127.0.0.51 tcp dport { 80, 443 } redirect to :%d
	}
}
`, port(ln4), port(lnDual), port(ln6), port(lnT)), "nft", "-f", "-")

	for _, tc := range []struct {
		name, dial string
		ln         net.Listener
		want       string
		err        error
	}{
		{"IPv4", "127.0.0.52:443", ln4, "127.0.0.52:443", nil},
		{"IPv4 on a dual-stack socket", "127.0.0.53:80", lnDual, "127.0.0.53:80", nil},
		{"IPv6", "[2001:db8::51]:443", ln6, "[2001:db8::51]:443", nil},
		{"not redirected", ln4.Addr().String(), ln4, "", errNotRedirected},
	} {
		c, err := net.DialTimeout("tcp", tc.dial, 3*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		ac, err := tc.ln.Accept()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, err := originalDst(ac.(*net.TCPConn))
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: %v %v, want %v", tc.name, got, err, tc.err)
			}
		} else if err != nil || got.String() != tc.want {
			t.Errorf("%s: %v %v, want %s", tc.name, got, err, tc.want)
		}
		c.Close()
		ac.Close()
	}

	// The proxy behind a real redirect: the client goes to 127.0.0.51, the proxy to the
	// address it resolved for the name.
	resp, err := te.tlsGet("127.0.0.51:443", "api.example.test", "/")
	if err != nil {
		t.Fatalf("HTTPS through the redirect: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello from api.example.test\n" {
		t.Errorf("HTTPS through the redirect: %q", body)
	}
	c, br := te.dialFrom("127.0.0.1", "127.0.0.51:80")
	hresp, hbody := te.roundTrip(c, br, "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
	if hresp.StatusCode != 200 || hbody != "hello from api.example.test\n" {
		t.Errorf("HTTP through the redirect: %s %q", hresp.Status, hbody)
	}
	hresp, _ = te.roundTrip(c, br, "GET / HTTP/1.1\r\nHost: secret.example.test\r\n\r\n")
	if hresp.StatusCode != 403 {
		t.Errorf("denied host through the redirect: %s", hresp.Status)
	}
	for _, port := range []int{443, 80} {
		r := te.sink.wait(t, "connect", func(r events.Record) bool {
			return r.Kind == events.KindConnect && r.Decision == "allow" && r.Port == port
		})
		vmRecord(t, r)
		if r.IP != webIP || r.Host != "api.example.test" {
			t.Errorf("record %+v", r)
		}
	}
	// A connection to the proxy's port itself was not redirected: closed, not served.
	c, br = te.dialFrom("127.0.0.1", lnT.Addr().String())
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
	if n, _ := br.Read(make([]byte, 1)); n != 0 {
		t.Error("a connection that was not redirected was served")
	}
}

func listenOn(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// run runs a command with stdin, inside the test's namespace (the child's own).
func run(t *testing.T, stdin string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
