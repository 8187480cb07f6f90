package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

func TestCurlHTTPAndHTTPS(t *testing.T) {
	l := newLab(t)
	l.setSession(policy.Policy{AllowHTTPS: true, AllowHTTP: true, AllowedDomains: []string{"api.example.test"}})

	out, errOut, code := l.curl(l.sess.ProxyURL, "https://api.example.test/")
	if code != 0 || out != "hello from api.example.test\n" {
		t.Fatalf("HTTPS through the proxy: exit %d, %q %s", code, out, errOut)
	}
	out, errOut, code = l.curl(l.sess.ProxyURL, "http://api.example.test/")
	if code != 0 || out != "hello from api.example.test\n" {
		t.Fatalf("HTTP through the proxy: exit %d, %q %s", code, out, errOut)
	}

	// A denied host: plain HTTP gets the 403 with its headers and a line a person can act on.
	out, _, _ = l.curl(l.sess.ProxyURL, "-D", "-", "http://other.example.test/")
	for _, want := range []string{"HTTP/1.1 403", "X-Egress-Decision: deny", "X-Egress-Reason: host_not_allowed", "other.example.test"} {
		if !strings.Contains(out, want) {
			t.Errorf("denied HTTP answer lacks %q:\n%s", want, out)
		}
	}
	// HTTPS: the CONNECT is refused with 403, and curl says so.
	_, errOut, code = l.curl(l.sess.ProxyURL, "https://other.example.test/")
	if code == 0 || !strings.Contains(errOut, "403") {
		t.Errorf("denied CONNECT: exit %d, %s", code, errOut)
	}
	if hosts := strings.Join(l.web.Hosts(), ","); strings.Contains(hosts, "other.example.test") {
		t.Errorf("a denied host reached the server: %s", hosts)
	}
}

func TestPythonURLLib(t *testing.T) {
	l := newLab(t)
	testnet.Require(t, haveCmd("python3"), "python3")
	l.setSession(policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"*.example.test"}})
	script := `
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen("https://api.example.test/", timeout=20).read().decode(), end="")
except Exception as e:
    print("first failed:", e); sys.exit(1)
try:
    urllib.request.urlopen("https://pypi.org/simple/", timeout=20)
    print("second allowed"); sys.exit(1)
except urllib.error.URLError as e:
    print("denied:", e.reason)
`
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", "-c", script)
	cmd.Env = append(cleanProxyEnv(), "HTTPS_PROXY="+l.sess.ProxyURL, "HTTP_PROXY="+l.sess.ProxyURL, "SSL_CERT_FILE="+l.caFile, "NO_PROXY=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("urllib: %v\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "hello from api.example.test\n") || !strings.Contains(string(out), "denied:") || !strings.Contains(string(out), "403") {
		t.Errorf("urllib output:\n%s", out)
	}
}

func TestPipFromFakePyPI(t *testing.T) {
	l := newLab(t)
	testnet.Require(t, haveCmd("python3") && exec.Command("python3", "-m", "pip", "--version").Run() == nil, "pip")
	pip := func() (string, error) {
		dir := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "python3", "-m", "pip", "download", "--no-deps", "--no-cache-dir",
			"--disable-pip-version-check", "--retries", "0", "--timeout", "20",
			"--index-url", "https://pypi.org/simple/", "--proxy", l.sess.ProxyURL, "--cert", l.caFile,
			"-d", dir, "egressd-demo")
		cmd.Env = append(cleanProxyEnv(), "PIP_CONFIG_FILE="+os.DevNull, "PIP_NO_INPUT=1")
		out, err := cmd.CombinedOutput()
		if err == nil {
			if _, serr := os.Stat(filepath.Join(dir, "egressd_demo-1.0-py3-none-any.whl")); serr != nil {
				return string(out), fmt.Errorf("pip succeeded but no wheel: %v", serr)
			}
		}
		return string(out), err
	}
	// The package-manager preset alone (no web flag): pip crosses pypi.org and
	// files.pythonhosted.org, both in the preset.
	l.setSession(policy.Policy{AllowPackageManagers: true})
	if out, err := pip(); err != nil {
		t.Fatalf("pip with allow_package_managers: %v\n%s", err, out)
	}
	// Without it, the same download is refused.
	l.setSession(policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})
	if out, err := pip(); err == nil {
		t.Fatalf("pip succeeded without allow_package_managers:\n%s", out)
	}
}

func TestBypassAttemptsAreBlocked(t *testing.T) {
	l := newLab(t)
	l.setSession(policy.Policy{
		AllowHTTPS: true, AllowHTTP: true,
		AllowedDomains: []string{"api.example.test", "rebind.example.test", "*.example.test"},
		DeniedDomains:  []string{"secret.example.test", "bücher.example.test"},
	})
	connect := func(target, extra string) *http.Response {
		c, br := l.proxyConn()
		return roundTrip(t, c, br, fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n%s\r\n", target, target, auth(l.sess.ProxyURL), extra))
	}
	for _, target := range []string{
		"127.0.0.2:443",            // an IP literal
		"[::ffff:127.0.0.2]:443",   // the same, IPv4-mapped
		"api.example.test:22",      // an allowed host, another port
		"rebind.example.test:443",  // an allowed name whose answer is not public
		"secret.example.test:443",  // denied
		"SECRET.Example.TEST.:443", // denied, other spelling
		"xn--bcher-kva.example.test:443",
		"user@api.example.test:443",
		"127.0.0.1:" + strings.Split(l.in.APIAddr, ":")[1], // egressd's own API
	} {
		resp := connect(target, "")
		if resp.StatusCode/100 == 2 {
			t.Errorf("CONNECT %s: %s, want a refusal", target, resp.Status)
		}
		if resp.StatusCode == http.StatusForbidden && resp.Header.Get("X-Egress-Decision") != "deny" {
			t.Errorf("CONNECT %s: 403 without X-Egress-Decision", target)
		}
	}
	// IDN and trailing-dot forms through curl, as a user would type them.
	for _, u := range []string{"https://bücher.example.test/", "http://SECRET.example.test./", "http://user@secret.example.test/"} {
		out, errOut, code := l.curl(l.sess.ProxyURL, "-o", "/dev/null", "-w", "%{http_code} %{http_connect}", u)
		if code == 0 && !strings.Contains(out, "403") {
			t.Errorf("%s: %q %s", u, out, errOut)
		}
	}

	// SNI different from the CONNECT host: the tunnel is cut before the server sees a request.
	c, br := l.proxyConn()
	resp := roundTrip(t, c, br, fmt.Sprintf("CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\nProxy-Authorization: %s\r\n\r\n", auth(l.sess.ProxyURL)))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT to an allowed host: %s", resp.Status)
	}
	tc := tls.Client(c, &tls.Config{ServerName: "secret.example.test", InsecureSkipVerify: true})
	if err := tc.Handshake(); err == nil {
		t.Error("TLS with an SNI other than the CONNECT host was relayed")
	}

	// A Host that contradicts the absolute URL.
	c, br = l.proxyConn()
	resp = roundTrip(t, c, br, fmt.Sprintf("GET http://api.example.test/ HTTP/1.1\r\nHost: secret.example.test\r\nProxy-Authorization: %s\r\n\r\n", auth(l.sess.ProxyURL)))
	if resp.StatusCode/100 == 2 {
		t.Errorf("Host contradicting the URL: %s", resp.Status)
	}

	// A second request to another host on a kept-alive connection is decided on its own.
	c, br = l.proxyConn()
	resp = roundTrip(t, c, br, fmt.Sprintf("GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\nProxy-Authorization: %s\r\n\r\n", auth(l.sess.ProxyURL)))
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "hello from api.example.test\n" {
		t.Fatalf("first request: %s %q", resp.Status, body)
	}
	resp = roundTrip(t, c, br, fmt.Sprintf("GET http://secret.example.test/ HTTP/1.1\r\nHost: secret.example.test\r\nProxy-Authorization: %s\r\n\r\n", auth(l.sess.ProxyURL)))
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("second request to a denied host on the same connection: %s", resp.Status)
	}

	// Another session's credentials: right ID with another token, or the reverse.
	other := l.newSession()
	for _, mixed := range []string{
		strings.Replace(l.sess.ProxyURL, strings.Split(strings.TrimPrefix(l.sess.ProxyURL, "http://"), ":")[0], other.SessionID, 1),
		"http://" + l.sess.SessionID + ":wrong-token@" + l.in.ProxyAddr,
		"http://" + l.in.ProxyAddr,
	} {
		c, br := l.proxyConn()
		hdr := ""
		if strings.Contains(mixed, "@") {
			hdr = "Proxy-Authorization: " + auth(mixed) + "\r\n"
		}
		resp := roundTrip(t, c, br, "GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\n"+hdr+"\r\n")
		if resp.StatusCode != http.StatusProxyAuthRequired {
			t.Errorf("credentials %s: %s, want 407", mixed, resp.Status)
		}
	}
	for _, h := range l.web.Hosts() {
		if strings.Contains(strings.ToLower(h), "secret") || strings.Contains(h, "bcher") {
			t.Errorf("a denied host reached the server: %s", h)
		}
	}
}

func TestPolicyChangeCutsTransferAndSessionEndRevokes(t *testing.T) {
	l := newLab(t)
	l.setSession(policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})

	// A transfer that would last 10 s.
	type result struct {
		out     string
		code    int
		elapsed time.Duration
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		out, _, code := l.curl(l.sess.ProxyURL, "https://api.example.test/slow?n=500")
		done <- result{out, code, time.Since(start)}
	}()
	time.Sleep(700 * time.Millisecond)
	tightened := time.Now()
	l.setSession(policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"other.example.test"}})
	select {
	case r := <-done:
		if r.code == 0 || len(r.out) >= 500*1024 {
			t.Errorf("the transfer completed (%d bytes, exit %d) after the policy denied it", len(r.out), r.code)
		}
		if cut := time.Since(tightened); cut > 2*time.Second {
			t.Errorf("the transfer was cut %v after the policy changed", cut)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("the transfer was not cut by the new policy")
	}
	// The new policy applies to the very next request.
	if out, _, code := l.curl(l.sess.ProxyURL, "https://other.example.test/"); code != 0 || !strings.Contains(out, "other.example.test") {
		t.Errorf("the next request after a change: exit %d %q", code, out)
	}
	// An ended session's credentials stop working.
	if err := l.api.DeleteSession(context.Background(), l.sess.SessionID); err != nil {
		t.Fatal(err)
	}
	out, _, _ := l.curl(l.sess.ProxyURL, "-o", "/dev/null", "-w", "%{http_code}", "http://other.example.test/")
	if out != "407" {
		t.Errorf("ended session: HTTP %s, want 407", out)
	}
}

func TestMonitorModeLetsTrafficThrough(t *testing.T) {
	l := newLab(t)
	l.setSession(policy.Policy{Mode: policy.Monitor, AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})
	out, errOut, code := l.curl(l.sess.ProxyURL, "https://other.example.test/")
	if code != 0 || !strings.Contains(out, "other.example.test") {
		t.Fatalf("monitor mode blocked a request: exit %d %q %s", code, out, errOut)
	}
	// The hard denials hold in monitor mode too.
	_, _, code = l.curl(l.sess.ProxyURL, "https://rebind.example.test/")
	if code == 0 {
		t.Error("monitor mode let a connection reach a loopback address")
	}
}
