package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// TestFastPathRealClients: real clients inside a sandbox that knows nothing of proxies
// reach allowed HTTPS names in both gateway modes. With --fast-path every connection they
// make to a name the fast path may take is verified from its packets and forwarded by the
// kernel: the verified counter rises by at least the client's connections, and the connect
// records say "via":"fast_path". That includes ClientHellos far over one packet: Python with
// many long ALPN protocols (over 1,500 bytes) and Go's crypto/tls with its post-quantum key
// share and a longer ALPN list (over 4 KiB). An intercepted name on the same address keeps
// going through the proxy (the sandbox sees egressd's certificate) and is never counted.
func TestFastPathRealClients(t *testing.T) { eachGWMode(t, testFastPathRealClients) }

func testFastPathRealClients(t *testing.T, m gwMode) {
	pm := filepath.Join(t.TempDir(), "pm.json")
	os.WriteFile(pm, []byte(`{"managers": {"npm": ["registry.npm.test"]}}`), 0o600)
	l := newGWLab(t, append([]string{"--package-managers-file", pm}, m.args...)...)
	l.dns.Set("ix.example.test", webAddr) // an intercepted name on the fast names' address
	vm := l.vm("fast", &policy.Policy{AllowPackageManagers: true, AllowHTTPS: true,
		AllowedDomains: []string{"api.example.test", "h2.example.test", "ix.example.test"},
		HTTPRules:      []policy.HTTPRule{{Domain: "ix.example.test"}}})
	testnet.Require(t, haveCmd("curl"), "curl")
	testnet.Require(t, haveCmd("python3"), "python3")
	const hello = "hello from api.example.test\n"

	// curl speaks HTTP/2 only to an origin that offers it: h2.example.test does.
	l.serveH2(h2Web)
	l.dns.Set("h2.example.test", h2Web)
	for v, want := range map[string]string{"--http1.1": "1.1", "--http2": "2"} {
		t.Run("curl "+v, func(t *testing.T) {
			l.carried(t, m, vm, 1, func() {
				out, code := l.curl(vm, v, "-w", "%{http_version} %{num_connects}", "https://h2.example.test/")
				if code != 0 || out != "hello from h2.example.test\n"+want+" 1" {
					t.Fatalf("exit %d, %q, want HTTP/%s over one connection", code, out, want)
				}
			}, "h2.example.test")
		})
	}
	t.Run("pip install", func(t *testing.T) {
		testnet.Require(t, exec.Command("python3", "-m", "pip", "--version").Run() == nil, "pip")
		dir := t.TempDir()
		// The index and the wheel are two hosts: two connections at least.
		l.carried(t, m, vm, 2, func() {
			out, code := l.run(vm, 90*time.Second, "env", "PIP_CONFIG_FILE="+os.DevNull, "PIP_NO_INPUT=1",
				"python3", "-m", "pip", "install", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
				"--retries", "0", "--timeout", "20", "--target", dir,
				"--index-url", "https://pypi.org/simple/", "--cert", l.caFile, "egressd-demo")
			if code != 0 {
				t.Fatalf("pip install: exit %d\n%s", code, out)
			}
		}, "pypi.org", "files.pythonhosted.org")
		if _, err := os.Stat(filepath.Join(dir, "egressd_demo", "__init__.py")); err != nil {
			t.Fatalf("pip installed nothing: %v", err)
		}
	})
	t.Run("npm install", func(t *testing.T) {
		testnet.Require(t, haveCmd("npm"), "npm")
		home, dir := t.TempDir(), t.TempDir()
		l.carried(t, m, vm, 1, func() {
			out, code := l.run(vm, 90*time.Second, "env", "HOME="+home, "npm_config_cache="+filepath.Join(home, "cache"), "NODE_EXTRA_CA_CERTS="+l.caFile,
				"npm", "install", "egressd-demo", "--prefix", dir, "--registry", "https://registry.npm.test/", "--cafile", l.caFile,
				"--no-update-notifier", "--no-audit", "--no-fund", "--fetch-retries", "0")
			if code != 0 {
				t.Fatalf("npm install: exit %d\n%s", code, out)
			}
		}, "registry.npm.test")
		if b, err := os.ReadFile(filepath.Join(dir, "node_modules", "egressd-demo", "index.js")); err != nil || !bytes.Contains(b, []byte("fake registry")) {
			t.Fatalf("npm installed nothing: %v %q", err, b)
		}
	})
	t.Run("node fetch", func(t *testing.T) {
		testnet.Require(t, haveCmd("node"), "node")
		l.carried(t, m, vm, 1, func() {
			out, code := l.run(vm, 30*time.Second, "env", "NODE_EXTRA_CA_CERTS="+l.caFile, "node", "-e",
				`fetch("https://api.example.test/").then(r => r.text()).then(b => process.stdout.write(b), e => { console.error(e); process.exit(3) })`)
			if code != 0 || out != hello {
				t.Fatalf("node fetch: exit %d, %q", code, out)
			}
		}, "api.example.test")
	})
	t.Run("Python urllib, a ClientHello over 1500 bytes", func(t *testing.T) {
		l.carried(t, m, vm, 1, func() {
			out, code := l.py(vm, `
import ssl, urllib.request
ctx = ssl.create_default_context()
ctx.set_alpn_protocols(["x-egressd-%02d-" % i + "p" * 180 for i in range(8)] + ["http/1.1"])
sent = ssl.MemoryBIO()
probe = ctx.wrap_bio(ssl.MemoryBIO(), sent, server_hostname="api.example.test")
try:
    probe.do_handshake()
except ssl.SSLWantReadError:
    pass
print(len(sent.read()))
print(urllib.request.urlopen("https://api.example.test/", timeout=10, context=ctx).read().decode(), end="")
`)
			size, body, _ := strings.Cut(out, "\n")
			n, _ := strconv.Atoi(size)
			if code != 0 || body != hello || n <= 1500 {
				t.Fatalf("exit %d, %q (a ClientHello of %d bytes, want over 1500)", code, out, n)
			}
			t.Logf("Python's ClientHello: %d bytes", n)
		}, "api.example.test")
	})
	t.Run("Go crypto/tls, a post-quantum ClientHello over 4 KiB", func(t *testing.T) {
		var alpn []string
		for i := 0; i < 16; i++ {
			alpn = append(alpn, fmt.Sprintf("x-egressd-%02d-%s", i, strings.Repeat("q", 190)))
		}
		cfg := &tls.Config{RootCAs: l.ca.Pool, NextProtos: append(alpn, "http/1.1")}
		probe := cfg.Clone()
		probe.ServerName = "api.example.test"
		ch := testnet.ClientHello(t, probe)
		// X25519MLKEM768 (group 0x11ec) with its 1,216-byte key share.
		if len(ch) <= 4096 || !bytes.Contains(ch, []byte{0x11, 0xec, 0x04, 0xc0}) {
			t.Fatalf("the ClientHello is %d bytes, post-quantum key share %v", len(ch), bytes.Contains(ch, []byte{0x11, 0xec, 0x04, 0xc0}))
		}
		t.Logf("Go's ClientHello: %d bytes", len(ch))
		hc := l.vmHTTPClient(vm, cfg)
		defer hc.CloseIdleConnections()
		l.carried(t, m, vm, 1, func() {
			resp, err := hc.Get("https://api.example.test/")
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(b) != hello {
				t.Fatalf("GET: %s %q", resp.Status, b)
			}
		}, "api.example.test")
	})
	t.Run("an intercepted name on a fast name's address", func(t *testing.T) {
		pem, err := l.api.CAPEM(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ixCA := filepath.Join(t.TempDir(), "egressd-ca.pem")
		os.WriteFile(ixCA, pem, 0o644)
		l.lookup(vm, "api.example.test", "ix.example.test")
		l.notCarried(t, vm, "ix.example.test", func() {
			// Only egressd's CA is trusted: the answer must come from the interception.
			out, code := l.run(vm, 20*time.Second, "curl", "-sS", "--connect-timeout", "3", "--max-time", "10", "--cacert", ixCA, "https://ix.example.test/")
			if code != 0 || out != "hello from ix.example.test\n" {
				t.Errorf("curl through the interception: exit %d, %q", code, out)
			}
		})
		evs, err := l.api.Events(context.Background(), client.EventsFilter{VMID: vm.VMID, Kind: client.EventRequest})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Host == "ix.example.test" && e.Decision == "allow" {
				return
			}
		}
		t.Errorf("no intercepted request record for ix.example.test among %+v", evs)
	})
}

// h2Web is the address of serveH2's origin.
const h2Web = "203.0.113.30"

// serveH2 serves testnet.Handler over HTTPS on addr:443 in the lab's internet, offering
// HTTP/2 by ALPN (the lab's other servers speak HTTP/1.1 only).
func (l *gwLab) serveH2(addr string) {
	l.t.Helper()
	ipCmd(l.t, "-n", l.inetNS, "addr", "add", addr+"/32", "dev", "lo")
	ln, err := testnet.In("/run/netns/"+l.inetNS).Listen("tcp", addr+":443")
	if err != nil {
		l.t.Fatal(err)
	}
	cfg := l.ca.ServerConfig()
	cfg.NextProtos = []string{"h2", "http/1.1"}
	// With no TLSConfig of its own, Serve sets HTTP/2 up for a listener that wraps TLS.
	srv := &http.Server{Handler: testnet.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(tls.NewListener(ln, cfg))
	l.t.Cleanup(func() { srv.Close() })
}
