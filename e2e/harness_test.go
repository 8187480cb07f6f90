package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

func TestMain(m *testing.M) {
	runBareRelayIfAsked() // BenchmarkFastPath's relay process, a re-exec of this binary
	egressdtest.Main(m)
}

// webIP is the fake public internet's one web server.
const webIP = "127.0.0.2"

// lab is one egressd with a fake internet and a session to send traffic as.
type lab struct {
	t      *testing.T
	in     *egressdtest.Instance
	api    *client.Client
	dns    *testnet.DNS
	web    *testnet.Web
	caFile string
	vm     string
	sess   client.Session // with ProxyURL
}

func newLab(t *testing.T, extraArgs ...string) *lab {
	t.Helper()
	testnet.RequireRoot(t)
	ca := testnet.NewCA(t)
	l := &lab{t: t, dns: testnet.StartDNS(t, "127.0.0.1"), caFile: ca.WriteFile(t, t.TempDir())}
	l.web = testnet.StartWeb(t, webIP, ca, testnet.PyPI("egressd-demo", "1.0"))
	for _, name := range []string{"api.example.test", "other.example.test", "secret.example.test",
		"xn--bcher-kva.example.test", "pypi.org", "files.pythonhosted.org", "registry.npm.test"} {
		l.dns.Set(name, webIP)
	}
	l.dns.Set("rebind.example.test", "127.0.0.100") // loopback outside --public-cidrs
	args := append([]string{"--public-cidrs", "127.0.0.0/26", "--dns-upstream", l.dns.Addr}, extraArgs...)
	l.in = egressdtest.Start(t, args...)
	var err error
	if l.api, err = client.New(l.in.URL, l.in.AdminKey); err != nil {
		t.Fatal(err)
	}
	l.vm = "vm-" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(l.vm) > 60 {
		l.vm = l.vm[:60]
	}
	if _, err := l.api.CreateVM(context.Background(), client.CreateVMRequest{VMID: l.vm}); err != nil {
		t.Fatal(err)
	}
	l.sess = l.newSession()
	return l
}

func (l *lab) newSession() client.Session {
	l.t.Helper()
	s, err := l.api.CreateSession(context.Background(), client.CreateSessionRequest{VMID: l.vm})
	if err != nil {
		l.t.Fatal(err)
	}
	if s.ProxyURL == "" {
		l.t.Fatal("session without proxy_url")
	}
	return *s
}

func (l *lab) setSession(p policy.Policy) {
	l.t.Helper()
	if _, err := l.api.SetSessionPolicy(context.Background(), l.sess.SessionID, p); err != nil {
		l.t.Fatal(err)
	}
}

// curl runs curl through the session's proxy; it returns stdout, stderr and the exit code.
func (l *lab) curl(proxyURL string, args ...string) (string, string, int) {
	l.t.Helper()
	testnet.Require(l.t, haveCmd("curl"), "curl")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"-sS", "--max-time", "20", "--proxy", proxyURL, "--cacert", l.caFile, "--noproxy", ""}, args...)
	cmd := exec.CommandContext(ctx, "curl", full...)
	cmd.Env = cleanProxyEnv()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		l.t.Fatalf("curl: %v", err)
	}
	return out.String(), errb.String(), code
}

// proxyConn opens a raw connection to the explicit proxy, for requests no client would send.
func (l *lab) proxyConn() (net.Conn, *bufio.Reader) {
	l.t.Helper()
	c, err := net.DialTimeout("tcp", l.in.ProxyAddr, 5*time.Second)
	if err != nil {
		l.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(15 * time.Second))
	l.t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// auth is the Proxy-Authorization header value of a proxy URL.
func auth(proxyURL string) string {
	u, _ := url.Parse(proxyURL)
	pw, _ := u.User.Password()
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pw))
}

// roundTrip writes a raw request and reads one response.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, raw string) *http.Response {
	t.Helper()
	if _, err := fmt.Fprint(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", strings.SplitN(raw, "\r\n", 2)[0], err)
	}
	return resp
}

func haveCmd(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

// cleanProxyEnv is the environment without proxy and CA-bundle variables, so that each client
// is told exactly which proxy to use and which CA to trust (a machine may set
// REQUESTS_CA_BUNDLE, which would override pip's --cert).
func cleanProxyEnv() []string {
	drop := map[string]bool{
		"http_proxy": true, "https_proxy": true, "all_proxy": true, "no_proxy": true,
		"requests_ca_bundle": true, "curl_ca_bundle": true, "ssl_cert_file": true, "ssl_cert_dir": true,
	}
	var env []string
	for _, kv := range os.Environ() {
		k := strings.ToLower(strings.SplitN(kv, "=", 2)[0])
		if drop[k] || strings.HasPrefix(k, "pip_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
