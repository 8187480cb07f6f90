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

// namesPolicy opens the fake web server's address by allowed_cidrs and denies one name.
var namesPolicy = policy.Policy{
	AllowHTTPS: true, AllowHTTP: true,
	AllowedDomains: []string{"api.example.test", "other.example.test"},
	DeniedDomains:  []string{"secret.example.test"},
	AllowedCIDRs:   []string{webIP + "/32"},
}

// waitEvent returns the first of the session's events that match accepts.
func (l *lab) waitEvent(what string, match func(client.Event) bool) client.Event {
	l.t.Helper()
	var list []client.Event
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var err error
		if list, err = l.api.Events(context.Background(), client.EventsFilter{SessionID: l.sess.SessionID}); err != nil {
			l.t.Fatal(err)
		}
		for _, e := range list {
			if match(e) {
				return e
			}
		}
	}
	l.t.Fatalf("no event %s among %+v", what, list)
	return client.Event{}
}

// A name is judged wherever it is seen (DESIGN §4), as curl sends it: the TLS server name
// after a CONNECT to an address that allowed_cidrs opens, the Host inside a CONNECT to port
// 80, and the Host of a plain request to an address.
func TestNamesJudgedWhereSeen(t *testing.T) {
	l := newLab(t)
	l.setSession(namesPolicy)

	// curl --connect-to makes the CONNECT go to the address while TLS names the host.
	for _, host := range []string{"secret.example.test", "SECRET.Example.TEST"} {
		out, errOut, code := l.curl(l.sess.ProxyURL, "--connect-to", host+":443:"+webIP+":443", "https://"+host+"/")
		if code == 0 {
			t.Errorf("TLS naming %s through CONNECT %s:443 got through: %q", host, webIP, out)
		} else if !strings.Contains(errOut, "SSL") && !strings.Contains(errOut, "TLS") && !strings.Contains(errOut, "reset") && !strings.Contains(errOut, "closed") {
			t.Logf("curl: %s", errOut)
		}
	}
	e := l.waitEvent("deny secret by SNI", func(e client.Event) bool { return e.Kind == "connect" && e.Decision == "deny" })
	if e.Host != "secret.example.test" || e.IP != webIP || e.Reason != string(policy.ReasonDeniedDomain) {
		t.Errorf("the denial's event: host %q ip %q reason %q", e.Host, e.IP, e.Reason)
	}
	out, errOut, code := l.curl(l.sess.ProxyURL, "--connect-to", "api.example.test:443:"+webIP+":443", "https://api.example.test/")
	if code != 0 || out != "hello from api.example.test\n" {
		t.Errorf("an allowed name through CONNECT to the address: exit %d %q %s", code, out, errOut)
	}

	// curl -p tunnels plain HTTP through CONNECT host:80: each request is read and decided.
	for _, tc := range []struct{ target, host, reason string }{
		{"http://api.example.test/", "other.example.test", string(policy.ReasonHostMismatch)},
		{"http://api.example.test/", "secret.example.test", string(policy.ReasonDeniedDomain)},
		{"http://" + webIP + "/", "secret.example.test", string(policy.ReasonDeniedDomain)},
	} {
		for _, tunnel := range []string{"-p", "--no-proxytunnel"} {
			out, _, _ := l.curl(l.sess.ProxyURL, tunnel, "-D", "-", "-o", "/dev/null", "-H", "Host: "+tc.host, tc.target)
			if !strings.Contains(out, " 403") || !strings.Contains(out, "X-Egress-Reason: "+tc.reason) {
				t.Errorf("curl %s %s with Host %s:\n%s", tunnel, tc.target, tc.host, out)
			}
		}
	}
	if out, errOut, code := l.curl(l.sess.ProxyURL, "-p", "http://api.example.test/"); code != 0 || out != "hello from api.example.test\n" {
		t.Errorf("curl -p to an allowed host: exit %d %q %s", code, out, errOut)
	}
	for _, h := range l.web.Hosts() {
		if strings.Contains(strings.ToLower(h), "secret") || strings.Contains(h, "other") {
			t.Errorf("the server got a request for %s", h)
		}
	}
}

// Plain HTTP through the proxy arrives byte for byte from an origin that writes the header
// and the body apart, in uneven pieces; pip checks its wheel's digest against an index
// served over plain HTTP.
func TestPlainHTTPBodiesArriveWhole(t *testing.T) {
	l := newLab(t)
	l.setSession(policy.Policy{AllowHTTP: true, AllowHTTPS: true, AllowPackageManagers: true, AllowedDomains: []string{"api.example.test"}})
	for i, framing := range []string{testnet.FramingLength, testnet.FramingChunked, testnet.FramingClose} {
		n, seed := 1500000+i, uint64(40+i)
		for _, tunnel := range []string{"--no-proxytunnel", "-p"} {
			out, errOut, code := l.curl(l.sess.ProxyURL, tunnel, fmt.Sprintf("http://api.example.test/pieces?n=%d&seed=%d&framing=%s", n, seed, framing))
			if want := testnet.Digest(testnet.PiecesBody(n, seed)); code != 0 || testnet.Digest([]byte(out)) != want {
				t.Errorf("%s %s: exit %d, %d bytes, digest %s, want %d bytes %s %s", framing, tunnel, code, len(out), testnet.Digest([]byte(out)), n, want, errOut)
			}
		}
	}

	testnet.Require(t, haveCmd("python3") && exec.Command("python3", "-m", "pip", "--version").Run() == nil, "pip")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", "-m", "pip", "download", "--no-deps", "--no-cache-dir",
		"--disable-pip-version-check", "--retries", "0", "--timeout", "20",
		"--index-url", "http://pypi.org/simple/", "--trusted-host", "pypi.org", "--trusted-host", "files.pythonhosted.org",
		"--proxy", l.sess.ProxyURL, "-d", dir, "egressd-demo")
	cmd.Env = append(cleanProxyEnv(), "PIP_CONFIG_FILE="+os.DevNull, "PIP_NO_INPUT=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pip over plain HTTP: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "egressd_demo-1.0-py3-none-any.whl")); err != nil {
		t.Errorf("no wheel: %v", err)
	}
}
