package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// sniProbe is a Python snippet that does a TLS handshake with addr:443 naming sni, and
// prints "open" or the error.
func sniProbe(addr, sni string) string {
	return fmt.Sprintf(`
import socket, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = socket.create_connection((%q, 443), timeout=5)
try:
    ctx.wrap_socket(s, server_hostname=%q).do_handshake(); print("open")
except Exception as e:
    print("closed", type(e).__name__)
`, addr, sni)
}

// A name is judged wherever the gateway sees it, whatever address the sandbox sends it to:
// a public one, or one that allowed_cidrs opens (which the kernel used to route without
// looking). An allowed address stays reachable, by address and by names the policy does
// not deny.
func TestTransparentNamesAtAddresses(t *testing.T) { eachGWMode(t, testTransparentNamesAtAddresses) }

func testTransparentNamesAtAddresses(t *testing.T, m gwMode) {
	l := newGWLab(t, m.args...)
	testnet.Require(t, haveCmd("python3"), "python3")
	vm := l.vm("names", &policy.Policy{AllowHTTPS: true, AllowHTTP: true,
		AllowedDomains: []string{"api.example.test", "other.example.test"},
		DeniedDomains:  []string{"secret.example.test"},
		AllowedCIDRs:   []string{"198.51.100.0/24"}})
	// The allowed names' address is answered: with the fast path, TLS to it is verified
	// from the packets, so a denied name sent there meets the verifier.
	l.lookup(vm, "api.example.test", "other.example.test")

	refused := l.fastFlows("refused")
	for _, addr := range []string{webAddr, privateAddr} {
		for _, sni := range []string{"secret.example.test", "SECRET.Example.TEST"} {
			if out, _ := l.py(vm, sniProbe(addr, sni)); !strings.HasPrefix(out, "closed") {
				t.Errorf("TLS naming %s sent to %s: %q", sni, addr, out)
			}
		}
		if out, code := l.curl(vm, "-k", "--resolve", "secret.example.test:443:"+addr, "https://secret.example.test/"); code == 0 {
			t.Errorf("curl https://secret.example.test/ sent to %s: %q", addr, out)
		}
		for _, host := range []string{"secret.example.test", "SECRET.example.test."} {
			out, _ := l.curl(vm, "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: "+host, "http://"+addr+"/")
			if out != "403" {
				t.Errorf("HTTP to %s with Host %s: %q, want 403", addr, host, out)
			}
		}
	}
	// The three TLS attempts at the answered address were the fast path's to refuse.
	if n := l.fastFlows("refused") - refused; m.fast() && n < 3 {
		t.Errorf("the fast path refused %d flows, want at least 3", n)
	}
	events, err := l.api.Events(context.Background(), client.EventsFilter{VMID: l.id("names"), Decision: "deny"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range events {
		if e.Kind == "connect" && e.Host == "secret.example.test" && e.IP == privateAddr && e.Reason == string(policy.ReasonDeniedDomain) {
			found = true
		}
	}
	if !found {
		t.Errorf("no denial of secret.example.test at %s among %+v", privateAddr, events)
	}

	// The allowed address: by address, by a name it does not deny, any other port.
	if out, code := l.curl(vm, "-k", "https://"+privateAddr+"/"); code != 0 || out != "hello from "+privateAddr+"\n" {
		t.Errorf("HTTPS to an allowed address: exit %d %q", code, out)
	}
	if out, code := l.curl(vm, "-k", "--resolve", "internal.example.test:443:"+privateAddr, "https://internal.example.test/"); code != 0 || out != "hello from internal.example.test\n" {
		t.Errorf("HTTPS by a name at an allowed address: exit %d %q", code, out)
	}
	if out, code := l.curl(vm, "-H", "Host: internal.example.test", "http://"+privateAddr+"/"); code != 0 || out != "hello from internal.example.test\n" {
		t.Errorf("HTTP by a name at an allowed address: exit %d %q", code, out)
	}
	if out, _ := l.py(vm, tcpProbe(privateAddr, 5432)); !strings.HasPrefix(out, "open") {
		t.Errorf("another port of the allowed range: %q", out)
	}
	// A kept-alive switch to a denied name on the allowed address is decided anew.
	out, code := l.py(vm, fmt.Sprintf(`
import http.client
c = http.client.HTTPConnection(%q, 80, timeout=5)
for host in ["internal.example.test", "secret.example.test"]:
    c.request("GET", "/", headers={"Host": host}); r = c.getresponse(); r.read(); print(r.status, end=" ")
`, privateAddr))
	if code != 0 || out != "200 403 " {
		t.Errorf("kept-alive switch to a denied Host: exit %d %q", code, out)
	}
}

// Plain HTTP through the transparent proxy's port 80 arrives byte for byte from an origin
// that writes in uneven pieces, and pip installs from an index served over plain HTTP.
func TestTransparentHTTPBodiesArriveWhole(t *testing.T) {
	eachGWMode(t, testTransparentHTTPBodiesArriveWhole)
}

func testTransparentHTTPBodiesArriveWhole(t *testing.T, m gwMode) {
	l := newGWLab(t, m.args...)
	vm := l.vm("bodies", &policy.Policy{AllowHTTP: true, AllowPackageManagers: true, AllowedDomains: []string{"api.example.test"}})
	for i, framing := range []string{testnet.FramingLength, testnet.FramingChunked, testnet.FramingClose} {
		n, seed := 1200000+i, uint64(60+i)
		out, code := l.curl(vm, fmt.Sprintf("http://api.example.test/pieces?n=%d&seed=%d&framing=%s", n, seed, framing))
		if want := testnet.Digest(testnet.PiecesBody(n, seed)); code != 0 || testnet.Digest([]byte(out)) != want {
			t.Errorf("%s: exit %d, %d bytes, digest %s, want %d bytes %s", framing, code, len(out), testnet.Digest([]byte(out)), n, want)
		}
	}

	testnet.Require(t, exec.Command("python3", "-m", "pip", "--version").Run() == nil, "pip")
	dir := t.TempDir()
	out, code := l.run(vm, 90*time.Second, "python3", "-m", "pip", "download", "--no-deps", "--no-cache-dir",
		"--disable-pip-version-check", "--retries", "0", "--timeout", "20",
		"--index-url", "http://pypi.org/simple/", "--trusted-host", "pypi.org", "--trusted-host", "files.pythonhosted.org",
		"-d", dir, "egressd-demo")
	if code != 0 {
		t.Fatalf("pip over plain HTTP: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "egressd_demo-1.0-py3-none-any.whl")); err != nil {
		t.Errorf("no wheel: %v\n%s", err, out)
	}
}
