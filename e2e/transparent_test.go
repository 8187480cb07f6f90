package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

func TestTransparentHTTPSAndHTTP(t *testing.T) { eachGWMode(t, testTransparentHTTPSAndHTTP) }

func testTransparentHTTPSAndHTTP(t *testing.T, m gwMode) {
	l := newGWLab(t, m.args...)
	vm := l.vm("web", &policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})

	// A client that knows nothing of proxies: DNS goes to the gateway (resolv.conf), TCP 443
	// is redirected to the transparent proxy, which reads the SNI and decides.
	out, code := l.curl(vm, "https://api.example.test/")
	if code != 0 || out != "hello from api.example.test\n" {
		t.Fatalf("HTTPS to an allowed name: exit %d, %q", code, out)
	}
	// HTTP is off: a 403 from the gateway.
	out, _ = l.curl(vm, "-o", "/dev/null", "-w", "%{http_code}", "http://api.example.test/")
	if out != "403" {
		t.Errorf("HTTP with allow_http off: %q, want 403", out)
	}
	// A name the policy does not allow does not even resolve.
	if out, code := l.curl(vm, "https://other.example.test/"); code == 0 {
		t.Errorf("HTTPS to a name not allowed: %q", out)
	}
	for _, q := range l.dns.Queries() {
		if strings.HasPrefix(q, "other.example.test") {
			t.Errorf("a refused name was forwarded upstream: %s", q)
		}
	}

	// Two creations of one VM at once: one wins, the other is a conflict, and the winner's
	// network is whole (the loser must not have shared, then deleted, its namespace).
	results := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			_, err := l.api.CreateVM(context.Background(), client.CreateVMRequest{VMID: l.id("dup"), EgressPolicy: &policy.Policy{AllowHTTPS: true},
				Network: &client.Network{Mode: "netns"}})
			results <- err
		}()
	}
	var conflicts, created int
	for i := 0; i < 2; i++ {
		switch err := <-results; {
		case err == nil:
			created++
		case client.IsConflict(err):
			conflicts++
		default:
			t.Errorf("concurrent create: %v", err)
		}
	}
	if created != 1 || conflicts != 1 {
		t.Errorf("concurrent creates of one VM: %d created, %d conflicts", created, conflicts)
	}
	if dup, err := l.api.GetVM(context.Background(), l.id("dup")); err != nil {
		t.Errorf("the winner: %v", err)
	} else {
		t.Cleanup(func() { l.api.DeleteVM(context.Background(), l.id("dup")) })
		if out, code := l.curl(dup, "https://api.example.test/"); code != 0 || out != "hello from api.example.test\n" {
			t.Errorf("the winner's network after a concurrent create: exit %d %q", code, out)
		}
	}

	// egressctl exec runs a command in the VM's network, with the VM's resolv.conf; it runs
	// where egressd runs (here, the test's gateway namespace) and passes on the exit status.
	ctl := func(args ...string) (string, int) {
		cmd := exec.Command(egressdtest.Binary(t, "egressctl"), append([]string{"exec", vm.VMID, "--"}, args...)...)
		cmd.Env = append(cleanProxyEnv(), "EGRESSD_URL="+l.in.URL, "EGRESSD_API_KEY="+l.in.AdminKey)
		var buf strings.Builder
		cmd.Stdout, cmd.Stderr = &buf, &buf
		err := netns.RunIn("/run/netns/"+l.gwNS, cmd)
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("egressctl exec: %v", err)
		}
		return buf.String(), code
	}
	if out, code := ctl("curl", "-sS", "--max-time", "10", "--cacert", l.caFile, "https://api.example.test/"); code != 0 || out != "hello from api.example.test\n" {
		t.Errorf("egressctl exec curl: exit %d, %q", code, out)
	}
	if _, code := ctl("curl", "-sS", "--max-time", "10", "--cacert", l.caFile, "https://other.example.test/"); code != 6 {
		t.Errorf("egressctl exec curl to a refused name: exit %d, want curl's 6 (could not resolve)", code)
	}
	// The command trusts egressd's interception CA besides the system's roots: the five CA
	// variables name one bundle that holds it, removed once the command ends.
	resp, err := l.in.HTTPClient.Get(l.in.URL + "/v1/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	out, code = ctl("sh", "-c", `for v in REQUESTS_CA_BUNDLE NODE_EXTRA_CA_CERTS CURL_CA_BUNDLE GIT_SSL_CAINFO; do
		eval "f=\$$v"; [ "$f" = "$SSL_CERT_FILE" ] || { echo "$v=$f"; exit 3; }; done; echo "$SSL_CERT_FILE"; cat "$SSL_CERT_FILE"`)
	bundle, rest, _ := strings.Cut(out, "\n")
	if code != 0 || !strings.Contains(rest, string(caPEM)) || strings.Count(rest, "BEGIN CERTIFICATE") < 2 {
		t.Errorf("egressctl exec: CA variables: exit %d\n%.400s", code, out)
	}
	if _, err := os.Stat(bundle); !os.IsNotExist(err) {
		t.Errorf("the CA bundle %s is left behind: %v", bundle, err)
	}
}

func TestTransparentRealClients(t *testing.T) { eachGWMode(t, testTransparentRealClients) }

func testTransparentRealClients(t *testing.T, m gwMode) {
	pm := filepath.Join(t.TempDir(), "pm.json")
	os.WriteFile(pm, []byte(`{"managers": {"npm": ["registry.npm.test"]}}`), 0o600)
	l := newGWLab(t, append([]string{"--package-managers-file", pm}, m.args...)...)
	vm := l.vm("clients", &policy.Policy{AllowPackageManagers: true, AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})

	t.Run("pip", func(t *testing.T) {
		testnet.Require(t, exec.Command("python3", "-m", "pip", "--version").Run() == nil, "pip")
		dir := t.TempDir()
		out, code := l.run(vm, 90*time.Second, "python3", "-m", "pip", "download", "--no-deps", "--no-cache-dir",
			"--disable-pip-version-check", "--retries", "0", "--timeout", "20",
			"--index-url", "https://pypi.org/simple/", "--cert", l.caFile, "-d", dir, "egressd-demo")
		if code != 0 {
			t.Fatalf("pip: exit %d\n%s", code, out)
		}
		if _, err := os.Stat(filepath.Join(dir, "egressd_demo-1.0-py3-none-any.whl")); err != nil {
			t.Fatalf("no wheel: %v\n%s", err, out)
		}
	})
	t.Run("npm", func(t *testing.T) {
		testnet.Require(t, haveCmd("npm"), "npm")
		home := t.TempDir()
		out, code := l.run(vm, 60*time.Second, "env", "HOME="+home, "npm_config_cache="+filepath.Join(home, "cache"), "NODE_EXTRA_CA_CERTS="+l.caFile,
			"npm", "view", "egressd-demo", "version", "--registry", "https://registry.npm.test/", "--cafile", l.caFile,
			"--no-update-notifier", "--fetch-retries", "0")
		if code != 0 || strings.TrimSpace(out) != "1.0.0" {
			t.Fatalf("npm view: exit %d, %q", code, out)
		}
	})
	t.Run("urllib", func(t *testing.T) {
		out, code := l.py(vm, `
import urllib.request, urllib.error
print(urllib.request.urlopen("https://api.example.test/", timeout=10).read().decode(), end="")
try:
    urllib.request.urlopen("https://other.example.test/", timeout=10); print("other allowed")
except urllib.error.URLError as e:
    print("other denied")
`)
		if code != 0 || out != "hello from api.example.test\nother denied\n" {
			t.Fatalf("urllib: exit %d, %q", code, out)
		}
	})
	t.Run("dig", func(t *testing.T) {
		testnet.Require(t, haveCmd("dig"), "dig")
		out, code := l.run(vm, 20*time.Second, "dig", "+short", "+time=2", "+tries=1", "api.example.test")
		if code != 0 || strings.TrimSpace(out) != webAddr {
			t.Errorf("dig an allowed name: exit %d, %q", code, out)
		}
		out, _ = l.run(vm, 20*time.Second, "dig", "+time=2", "+tries=1", "other.example.test")
		if !strings.Contains(out, "status: REFUSED") {
			t.Errorf("dig a name not allowed:\n%s", out)
		}
	})
}

func TestTransparentBypassAttemptsAreBlocked(t *testing.T) {
	eachGWMode(t, testTransparentBypassAttemptsAreBlocked)
}

func testTransparentBypassAttemptsAreBlocked(t *testing.T, m gwMode) {
	l := newGWLab(t, m.args...)
	vm := l.vm("bypass", &policy.Policy{AllowHTTPS: true, AllowHTTP: true,
		AllowedDomains: []string{"api.example.test", "rebind.example.test", "meta.example.test"}})
	dig := func(args ...string) string {
		out, _ := l.run(vm, 20*time.Second, "dig", append([]string{"+time=2", "+tries=1"}, args...)...)
		return out
	}
	testnet.Require(t, haveCmd("dig"), "dig")
	// The allowed names' address is answered: with the fast path, every TCP 443 to it is
	// routed to the verifier, so each attempt below meets the fast path, not the proxy.
	l.lookup(vm, "api.example.test")
	before := len(l.dns.Queries())

	t.Run("IP literal", func(t *testing.T) {
		l.refusedFast(t, m, 1, func() { // a ClientHello without a server name
			if out, code := l.curl(vm, "-k", "https://"+webAddr+"/"); code == 0 {
				t.Errorf("HTTPS to an IP literal: %q", out)
			}
		})
		if out, _ := l.curl(vm, "-o", "/dev/null", "-w", "%{http_code}", "http://"+webAddr+"/"); out != "403" {
			t.Errorf("HTTP to an IP literal: %q, want 403", out)
		}
	})
	t.Run("allowed SNI sent to another IP", func(t *testing.T) {
		out, code := l.curl(vm, "--resolve", "api.example.test:443:"+otherWeb, "https://api.example.test/")
		if len(l.otherWeb.Hosts()) != 0 {
			t.Errorf("the IP the client chose was contacted: %v", l.otherWeb.Hosts())
		}
		// egressd dials what it resolved itself, so the request lands on the real server.
		if code != 0 || out != "hello from api.example.test\n" {
			t.Errorf("exit %d, %q", code, out)
		}
	})
	t.Run("spoofed Host and a kept-alive switch", func(t *testing.T) {
		if out, _ := l.curl(vm, "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: other.example.test", "http://api.example.test/"); out != "403" {
			t.Errorf("spoofed Host: %q, want 403", out)
		}
		out, code := l.py(vm, fmt.Sprintf(`
import socket
s = socket.create_connection((%q, 80), timeout=5)
f = s.makefile("rb")
def get(host):
    s.sendall(("GET / HTTP/1.1\r\nHost: %%s\r\n\r\n" %% host).encode())
    status = f.readline().decode().split()[1]
    length = 0
    while True:
        line = f.readline().decode().strip()
        if not line: break
        if line.lower().startswith("content-length:"): length = int(line.split(":")[1])
    f.read(length)
    return status
print(get("api.example.test"), end=" ")
try:
    print(get("other.example.test"))
except Exception as e:
    print("cut")
`, webAddr))
		if code != 0 || !strings.HasPrefix(out, "200 ") || strings.Contains(out, "200 200") {
			t.Errorf("kept-alive switch: exit %d, %q", code, out)
		}
		for _, h := range l.web.Hosts() {
			if strings.HasPrefix(h, "other.example.test") {
				t.Errorf("the server saw a request for %s", h)
			}
		}
	})
	t.Run("DNS to another resolver", func(t *testing.T) {
		if out := dig("@"+dnsAddr, "other.example.test"); !strings.Contains(out, "status: REFUSED") {
			t.Errorf("UDP 53 to another resolver:\n%s", out)
		}
		if out := dig("+tcp", "@"+dnsAddr, "other.example.test"); !strings.Contains(out, "status: REFUSED") {
			t.Errorf("TCP 53 to another resolver:\n%s", out)
		}
		if out, _ := l.py(vm, tcpProbe(dnsAddr, 853)); !strings.HasPrefix(out, "closed") {
			t.Errorf("DoT 853: %q", out)
		}
	})
	t.Run("tunnelling queries", func(t *testing.T) {
		long := strings.Repeat("a", 63)
		for _, args := range [][]string{
			{"TXT", "api.example.test"},
			{"HTTPS", "api.example.test"},
			{"TYPE64", "api.example.test"}, // SVCB
			{long + ".exfil.test"},
			{"TXT", long + "." + long + ".exfil.test"},
		} {
			if out := dig(args...); !strings.Contains(out, "status: REFUSED") {
				t.Errorf("dig %v:\n%s", args, out)
			}
		}
		for _, q := range l.dns.Queries()[before:] {
			if strings.Contains(q, "exfil") || strings.Contains(q, "TXT") || strings.Contains(q, "HTTPS") || strings.Contains(q, "SVCB") || strings.Contains(q, "other.example.test") {
				t.Errorf("forwarded upstream: %s", q)
			}
		}
	})
	t.Run("QUIC, IPv6, ICMP, port 22", func(t *testing.T) {
		out, code := l.py(vm, fmt.Sprintf(`
import socket, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(5): u.sendto(b"quic-initial", (%q, 443))
try:
    s = socket.socket(socket.AF_INET6); s.settimeout(2); s.connect(("2001:db8::10", 443)); print("ipv6 open")
except Exception as e:
    print("ipv6 closed")
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); r.settimeout(2)
r.sendto(b"\x08\x00\xf7\xff\x00\x00\x00\x00", (%q, 0))
try:
    while True:
        data, addr = r.recvfrom(1024)
        if data[20] == 0: print("icmp reply"); break
except Exception:
    print("icmp none")
`, webAddr, webAddr))
		if code != 0 || !strings.Contains(out, "ipv6 closed") || !strings.Contains(out, "icmp none") {
			t.Errorf("exit %d, %q", code, out)
		}
		if out, _ := l.py(vm, tcpProbe(webAddr, 22)); !strings.HasPrefix(out, "closed") {
			t.Errorf("port 22: %q", out)
		}
		time.Sleep(300 * time.Millisecond)
		if n := l.udp443.Load(); n != 0 {
			t.Errorf("%d QUIC datagrams reached the internet", n)
		}
		if n := l.tcp22.Load(); n != 0 {
			t.Errorf("%d connections reached port 22", n)
		}
	})
	t.Run("metadata and rebinding", func(t *testing.T) {
		if out, code := l.curl(vm, "http://"+metaAddr+"/latest/meta-data/"); code == 0 && !strings.Contains(out, "denied") {
			t.Errorf("metadata by address: %q", out)
		}
		if out := dig("+short", "meta.example.test"); strings.TrimSpace(out) != "" {
			t.Errorf("a metadata answer was given: %q", out)
		}
		if out := dig("+short", "rebind.example.test"); strings.TrimSpace(out) != "" {
			t.Errorf("a private answer was given: %q", out)
		}
		if out, code := l.curl(vm, "--resolve", "rebind.example.test:80:"+privateAddr, "http://rebind.example.test/"); code == 0 && !strings.Contains(out, "denied") {
			t.Errorf("HTTP to a name whose address is private: %q", out)
		}
		if out, _ := l.py(vm, tcpProbe(privateAddr, 5432)); !strings.HasPrefix(out, "closed") {
			t.Errorf("the private network without allowed_cidrs: %q", out)
		}
	})
	t.Run("the gateway itself", func(t *testing.T) {
		// The API and the explicit proxy are dropped; the transparent listeners accept only
		// what the firewall redirected, so a direct connection gets nothing.
		for _, port := range []int{8470, 8471, 22} {
			if out, _ := l.py(vm, tcpProbe(vm.Network.Gateway, port)); !strings.HasPrefix(out, "closed") {
				t.Errorf("gateway port %d: %q", port, out)
			}
		}
		out, _ := l.py(vm, fmt.Sprintf(`
import socket
try:
    s = socket.create_connection((%q, 15001), timeout=3)
    s.sendall(b"GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
    print("answer:", s.recv(100))
except Exception as e:
    print("closed", type(e).__name__)
`, vm.Network.Gateway))
		if strings.Contains(out, "200") || strings.Contains(out, "hello") {
			t.Errorf("a direct connection to the transparent proxy was served: %q", out)
		}
	})
	t.Run("spoofed source address", func(t *testing.T) {
		l.run(vm, 10*time.Second, "ip", "addr", "add", "100.96.200.9/32", "dev", "eth0")
		if out, code := l.curl(vm, "--interface", "100.96.200.9", "https://api.example.test/"); code == 0 {
			t.Errorf("a spoofed source got through: %q", out)
		}
	})
	t.Run("root in the sandbox flushes its own nftables", func(t *testing.T) {
		testnet.Require(t, haveCmd("nft"), "nft")
		if out, code := l.run(vm, 10*time.Second, "nft", "flush", "ruleset"); code != 0 {
			t.Fatalf("nft flush in the sandbox: %d %s", code, out)
		}
		if out, code := l.curl(vm, "-k", "https://"+webAddr+"/"); code == 0 {
			t.Errorf("after flushing the sandbox's own rules, an IP literal got through: %q", out)
		}
		if out, code := l.curl(vm, "https://api.example.test/"); code != 0 {
			t.Errorf("allowed traffic stopped: %d %q", code, out)
		}
	})
}

func TestTransparentCIDRsPolicyChangesAndFailClosed(t *testing.T) {
	eachGWMode(t, testTransparentCIDRsPolicyChangesAndFailClosed)
}

func testTransparentCIDRsPolicyChangesAndFailClosed(t *testing.T, m gwMode) {
	l := newGWLab(t, m.args...)
	vm := l.vm("live", &policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}, AllowedCIDRs: []string{"198.51.100.0/24"}})

	// allowed_cidrs: any port, forwarded by the kernel.
	if out, _ := l.py(vm, tcpProbe(privateAddr, 5432)); !strings.HasPrefix(out, "open") {
		t.Fatalf("allowed_cidrs: %q", out)
	}
	l.setVM("live", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})
	if out, _ := l.py(vm, tcpProbe(privateAddr, 5432)); !strings.HasPrefix(out, "closed") {
		t.Errorf("allowed_cidrs removed, the next connection: %q", out)
	}

	// A policy tightened while a download runs cuts it.
	done := make(chan int, 1)
	start := time.Now()
	go func() {
		_, code := l.run(vm, 30*time.Second, "curl", "-sS", "-o", "/dev/null", "--cacert", l.caFile, "https://api.example.test/slow?n=500")
		done <- code
	}()
	time.Sleep(800 * time.Millisecond)
	l.setVM("live", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"other.example.test"}})
	tightened := time.Now()
	select {
	case code := <-done:
		if code == 0 {
			t.Error("the download completed after the policy denied it")
		}
		if d := time.Since(tightened); d > 2*time.Second {
			t.Errorf("cut %v after the change", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the download was not cut (started %v ago)", time.Since(start))
	}
	if m.fast() && l.fastConnects(vm, "api.example.test") == 0 {
		t.Error("the cut download did not take the fast path")
	}
	// The very next connection follows the new policy.
	if out, code := l.curl(vm, "https://api.example.test/"); code == 0 {
		t.Errorf("the old name still works: %q", out)
	}
	if out, code := l.curl(vm, "https://other.example.test/"); code != 0 {
		t.Errorf("the new name: exit %d %q", code, out)
	}

	// kill -9: the rules stay, nothing is served, the sandbox reaches nothing.
	l.in.Kill()
	if out, code := l.curl(vm, "https://other.example.test/"); code == 0 {
		t.Errorf("with egressd killed, a request got through: %q", out)
	}
	// The address was answered before: with the fast path, nothing verifies its ClientHello.
	if out, code := l.curl(vm, "--resolve", "other.example.test:443:"+webAddr, "https://other.example.test/"); code == 0 {
		t.Errorf("with egressd killed, a request to an answered address got through: %q", out)
	}
	if out, _ := l.py(vm, tcpProbe(webAddr, 443)); !strings.HasPrefix(out, "closed") {
		t.Errorf("with egressd killed, TCP 443 reached the internet: %q", out)
	}
	// Restart: the namespace is re-adopted and enforcement resumes.
	l.in.Restart()
	var out string
	var code int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if out, code = l.curl(vm, "https://other.example.test/"); code == 0 {
			break
		}
	}
	if code != 0 || out != "hello from other.example.test\n" {
		t.Errorf("after restart: exit %d %q", code, out)
	}
	if out, code := l.curl(vm, "https://api.example.test/"); code == 0 {
		t.Errorf("after restart, a denied name: %q", out)
	}
}
