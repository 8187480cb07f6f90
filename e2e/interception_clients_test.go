package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// privateOrigin serves the private index and git server of the clients test: its own
// address, so that what it receives is only this test's.
const privateOrigin = "127.0.0.32"

// privateSite is a private package index and git server that require HTTP basic
// credentials whose password is the secret's value, as a private index or a git host does
// with a token, and an API ("api." hosts) that takes any request. It records every
// request's host, path and Authorization header.
type privateSite struct {
	user, value string
	index       http.Handler
	git         http.Handler

	mu   sync.Mutex
	seen []seen
}

func (s *privateSite) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.seen = append(s.seen, seen{Host: r.Host, Method: r.Method, Path: r.URL.Path, Auth: r.Header.Get("Authorization")})
	s.mu.Unlock()
	if strings.HasPrefix(r.Host, "api.") { // an API that takes a bearer token: it only records
		fmt.Fprintf(w, "origin %s %s\n", r.Host, r.URL.Path)
		return
	}
	// Without the credentials, 401 with a challenge: git sends its credentials only after one.
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(s.user+":"+s.value))
	if r.Header.Get("Authorization") != want {
		w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
		http.Error(w, "credentials needed", http.StatusUnauthorized)
		return
	}
	if strings.HasPrefix(r.Host, "git.") {
		s.git.ServeHTTP(w, r)
		return
	}
	s.index.ServeHTTP(w, r)
}

func (s *privateSite) requests() []seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seen(nil), s.seen...)
}

// privateIndex is a simple index (PEP 503) of one package whose wheel is on the same host,
// behind the same credentials.
func privateIndex(pkg, version string) http.Handler {
	wheel, name := testnet.Wheel(pkg, version)
	sum := sha256.Sum256(wheel)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/simple/" + pkg + "/", "/simple/" + pkg:
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, "<!DOCTYPE html><html><body>\n<a href=\"/packages/%s#sha256=%s\">%s</a>\n</body></html>\n", name, hex.EncodeToString(sum[:]), name)
		case "/packages/" + name:
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(wheel)
		default:
			http.NotFound(w, r)
		}
	})
}

// gitServer makes a repository with one commit under a temporary root and serves it over
// git's smart HTTP protocol (git http-backend as a CGI program). It returns the handler and
// the commit's ID.
func gitServer(t *testing.T) (http.Handler, string) {
	t.Helper()
	root := t.TempDir()
	work := filepath.Join(root, "work")
	env := append(cleanProxyEnv(), "HOME="+root, "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.test", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.test")
	git := func(dir string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	git(work, "init", "-q", "-b", "main")
	if err := os.WriteFile(filepath.Join(work, "README"), []byte("a private repository\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git(work, "add", "README")
	git(work, "commit", "-q", "-m", "first")
	head := git(work, "rev-parse", "HEAD")
	git(root, "clone", "-q", "--bare", work, filepath.Join(root, "demo.git"))
	execPath := git(root, "--exec-path")
	return &cgi.Handler{
		Path: filepath.Join(execPath, "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + root},
	}, head
}

// TestInterceptionClientsExplicitProxy: pip and git, through the real binary's explicit
// proxy, given only the placeholder as the password of the URL's credentials, reach a
// private index and git server with the secret's value (the engine replaces the
// placeholder inside "Authorization: Basic"); the same credentials toward an allowed host
// outside the secret's domains are refused, and that host never sees the value.
func TestInterceptionClientsExplicitProxy(t *testing.T) {
	testnet.RequireRoot(t)
	testnet.Require(t, haveCmd("git"), "git")
	testnet.Require(t, haveCmd("python3") && exec.Command("python3", "-m", "pip", "--version").Run() == nil, "pip")
	const value = "ghp-private-value-0123456789abcdefXYZ"
	ca := testnet.NewCA(t)
	dir := t.TempDir()
	gitH, head := gitServer(t)
	site := &privateSite{user: "__token__", value: value, index: privateIndex("egressd-demo", "1.0"), git: gitH}
	testnet.StartWeb(t, privateOrigin, ca, site)
	dns := testnet.StartDNS(t, "127.0.0.1")
	for _, name := range []string{"pypi.private.test", "git.private.test", "elsewhere.private.test"} {
		dns.Set(name, privateOrigin)
	}
	in := egressdtest.Start(t, "--public-cidrs", "127.0.0.0/26", "--dns-upstream", dns.Addr,
		"--upstream-ca-file", ca.WriteFile(t, dir))
	api, err := client.New(in.URL, in.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sec, err := api.CreateSecret(ctx, client.CreateSecretRequest{Name: "private_token", Value: value,
		Domains: []string{"pypi.private.test", "git.private.test"}})
	if err != nil {
		t.Fatal(err)
	}
	pem, err := api.CAPEM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ixCA := filepath.Join(dir, "egressd-ca.pem")
	if err := os.WriteFile(ixCA, pem, 0o644); err != nil {
		t.Fatal(err)
	}
	const vmID = "vm-ix-clients"
	if _, err := api.CreateVM(ctx, client.CreateVMRequest{VMID: vmID}); err != nil {
		t.Fatal(err)
	}
	sess, err := api.CreateSession(ctx, client.CreateSessionRequest{VMID: vmID})
	if err != nil {
		t.Fatal(err)
	}
	// elsewhere.private.test is allowed and intercepted (a rule), so that the placeholder
	// sent there is seen and refused.
	if _, err := api.SetSessionPolicy(ctx, sess.SessionID, policy.Policy{AllowHTTPS: true,
		HTTPRules: []policy.HTTPRule{{Domain: "elsewhere.private.test"}}}); err != nil {
		t.Fatal(err)
	}
	creds := "__token__:" + sec.Placeholder + "@"
	wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("__token__:"+value))

	// run runs a client with a bounded time and no proxy or CA settings of the machine's.
	run := func(timeout time.Duration, env []string, name string, args ...string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(cleanProxyEnv(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	pip := func(host string) (string, error) {
		d := t.TempDir()
		out, err := run(60*time.Second, []string{"PIP_CONFIG_FILE=" + os.DevNull, "PIP_NO_INPUT=1"},
			"python3", "-m", "pip", "install", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
			"--retries", "0", "--timeout", "15", "--target", d,
			"--index-url", "https://"+creds+host+"/simple/", "--proxy", sess.ProxyURL, "--cert", ixCA, "egressd-demo")
		if err == nil {
			if _, serr := os.Stat(filepath.Join(d, "egressd_demo", "__init__.py")); serr != nil {
				return out, fmt.Errorf("pip succeeded but installed nothing: %v", serr)
			}
		}
		return out, err
	}
	home := t.TempDir()
	clone := func(host string) (string, string, error) {
		d := filepath.Join(t.TempDir(), "demo")
		out, err := run(30*time.Second, []string{"HOME=" + home, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
			"GIT_ASKPASS=/bin/false", "GIT_SSL_CAINFO=" + ixCA},
			"git", "-c", "http.proxy="+sess.ProxyURL, "-c", "credential.helper=",
			"clone", "-q", "https://"+creds+host+"/demo.git", d)
		return out, d, err
	}
	// leaked returns the requests that reached host with the value in their credentials.
	leaked := func(host string) []seen {
		var bad []seen
		for _, s := range site.requests() {
			if s.Host == host && s.Auth == wantAuth {
				bad = append(bad, s)
			}
		}
		return bad
	}

	t.Run("pip", func(t *testing.T) {
		if out, err := pip("pypi.private.test"); err != nil {
			t.Fatalf("pip install: %v\n%s", err, out)
		}
		if got := leaked("pypi.private.test"); len(got) < 2 { // the index page and the wheel
			t.Fatalf("the index got the value in %d requests: %+v", len(got), site.requests())
		}
	})
	t.Run("git clone", func(t *testing.T) {
		out, d, err := clone("git.private.test")
		if err != nil {
			t.Fatalf("git clone: %v\n%s", err, out)
		}
		got, err := run(10*time.Second, []string{"HOME=" + home, "GIT_CONFIG_NOSYSTEM=1"}, "git", "-C", d, "rev-parse", "HEAD")
		if err != nil || strings.TrimSpace(got) != head {
			t.Fatalf("cloned HEAD %q (%v), want %s", got, err, head)
		}
		if got := leaked("git.private.test"); len(got) == 0 {
			t.Fatalf("the git server never got the value: %+v", site.requests())
		}
	})
	t.Run("placeholder toward another host", func(t *testing.T) {
		if out, err := pip("elsewhere.private.test"); err == nil {
			t.Errorf("pip toward another host succeeded\n%s", out)
		}
		if out, _, err := clone("elsewhere.private.test"); err == nil {
			t.Errorf("git clone toward another host succeeded\n%s", out)
		}
		if got := leaked("elsewhere.private.test"); len(got) != 0 {
			t.Fatalf("the other host got the value: %+v", got)
		}
		for _, s := range site.requests() {
			if s.Host == "elsewhere.private.test" && s.Auth != "" {
				t.Fatalf("the other host got credentials: %+v", s)
			}
		}
		evs, err := api.Events(ctx, client.EventsFilter{VMID: vmID, Kind: client.EventRequest, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		refused := 0
		for _, e := range evs {
			if e.Host == "elsewhere.private.test" && e.Reason == string(policy.ReasonSecretNotForHost) {
				refused++
			}
		}
		if refused < 2 {
			t.Errorf("%d secret_not_for_host events for the other host, want pip's and git's: %+v", refused, evs)
		}
	})
	if strings.Contains(in.Log(), value) {
		t.Error("the log holds the value")
	}
}

// privateNSOrigin is privateSite's address in the namespace lab's fake internet.
const privateNSOrigin = "203.0.113.21"

// TestInterceptionClientsTransparent: in the namespace lab, inside a sandbox that knows
// nothing of proxies and trusts egressd's CA, Node's fetch (a bearer header), pip install and
// git clone (basic credentials in the URL) with only the placeholder reach the private
// origin with the secret's value; Node's fetch with the placeholder toward another allowed
// host is refused and that host never sees a request.
func TestInterceptionClientsTransparent(t *testing.T) {
	l := newGWLab(t)
	testnet.Require(t, haveCmd("node"), "node (Debian package nodejs)")
	testnet.Require(t, haveCmd("git"), "git")
	testnet.Require(t, haveCmd("python3") && exec.Command("python3", "-m", "pip", "--version").Run() == nil, "pip")
	const value = "npm-private-value-0123456789abcdefQRS"
	ipCmd(t, "-n", l.inetNS, "addr", "add", privateNSOrigin+"/32", "dev", "lo")
	gitH, head := gitServer(t)
	site := &privateSite{user: "__token__", value: value, index: privateIndex("egressd-demo", "1.0"), git: gitH}
	testnet.StartWebOn(t, testnet.In("/run/netns/"+l.inetNS), privateNSOrigin, l.ca, site)
	for _, name := range []string{"api.private.test", "pypi.private.test", "git.private.test", "elsewhere.private.test"} {
		l.dns.Set(name, privateNSOrigin)
	}
	ctx := context.Background()
	sec, err := l.api.CreateSecret(ctx, client.CreateSecretRequest{Name: "ns_private", Value: value,
		Domains: []string{"api.private.test", "pypi.private.test", "git.private.test"}})
	if err != nil {
		t.Fatal(err)
	}
	pem, err := l.api.CAPEM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ixCA := filepath.Join(dir, "egressd-ca.pem")
	if err := os.WriteFile(ixCA, pem, 0o644); err != nil {
		t.Fatal(err)
	}
	vm := l.vm("ixc", &policy.Policy{AllowHTTPS: true,
		AllowedDomains: []string{"api.private.test", "pypi.private.test", "git.private.test", "elsewhere.private.test"},
		HTTPRules:      []policy.HTTPRule{{Domain: "elsewhere.private.test"}}})
	// in runs a command in the sandbox with the given environment on top of the lab's.
	in := func(timeout time.Duration, env []string, args ...string) (string, int) {
		t.Helper()
		return l.run(vm, timeout, "env", append(env, args...)...)
	}
	// fetch runs Node's fetch with the placeholder in a bearer header and prints the status.
	const fetchJS = `
const [url, ph] = process.argv.slice(1);
fetch(url, {headers: {authorization: "Bearer " + ph}, signal: AbortSignal.timeout(10000)})
  .then(async r => { await r.text(); console.log("status " + r.status); },
        e => { console.log("error", e, e.cause); process.exit(3); });
`
	fetch := func(url string) string {
		t.Helper()
		out, code := in(20*time.Second, []string{"NODE_EXTRA_CA_CERTS=" + ixCA}, "node", "-e", fetchJS, url, sec.Placeholder)
		if code != 0 {
			t.Fatalf("node fetch %s: exit %d\n%s", url, code, out)
		}
		return strings.TrimSpace(out)
	}
	count := func(host, auth string) (n int) {
		for _, s := range site.requests() {
			if s.Host == host && (auth == "" || s.Auth == auth) {
				n++
			}
		}
		return n
	}
	creds := "__token__:" + sec.Placeholder + "@"
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("__token__:"+value))

	t.Run("node fetch", func(t *testing.T) {
		if got := fetch("https://api.private.test/v1/node"); got != "status 200" {
			t.Fatalf("got %q", got)
		}
		if n := count("api.private.test", "Bearer "+value); n != 1 {
			t.Fatalf("the origin got the value %d times: %+v", n, site.requests())
		}
	})
	t.Run("pip", func(t *testing.T) {
		d := t.TempDir()
		// The lab's CURL_CA_BUNDLE (its fake internet's CA) would win over --cert (requests
		// reads it): here the sandbox trusts egressd's CA.
		out, code := in(60*time.Second, []string{"PIP_CONFIG_FILE=" + os.DevNull, "PIP_NO_INPUT=1", "CURL_CA_BUNDLE=" + ixCA, "SSL_CERT_FILE=" + ixCA},
			"python3", "-m", "pip", "install", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
			"--retries", "0", "--timeout", "15", "--target", d,
			"--index-url", "https://"+creds+"pypi.private.test/simple/", "--cert", ixCA, "egressd-demo")
		if code != 0 {
			t.Fatalf("pip install: exit %d\n%s", code, out)
		}
		if _, err := os.Stat(filepath.Join(d, "egressd_demo", "__init__.py")); err != nil {
			t.Fatalf("pip installed nothing: %v\n%s", err, out)
		}
		if n := count("pypi.private.test", basic); n < 2 {
			t.Fatalf("the index got the value %d times: %+v", n, site.requests())
		}
	})
	t.Run("git clone", func(t *testing.T) {
		home := t.TempDir()
		d := filepath.Join(home, "demo")
		env := []string{"HOME=" + home, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=/bin/false", "GIT_SSL_CAINFO=" + ixCA}
		if out, code := in(30*time.Second, env, "git", "-c", "credential.helper=", "clone", "-q", "https://"+creds+"git.private.test/demo.git", d); code != 0 {
			t.Fatalf("git clone: exit %d\n%s", code, out)
		}
		if out, code := in(10*time.Second, env, "git", "-C", d, "rev-parse", "HEAD"); code != 0 || strings.TrimSpace(out) != head {
			t.Fatalf("cloned HEAD %q (exit %d), want %s", out, code, head)
		}
		if n := count("git.private.test", basic); n == 0 {
			t.Fatalf("the git server never got the value: %+v", site.requests())
		}
	})
	t.Run("placeholder toward another host", func(t *testing.T) {
		if got := fetch("https://elsewhere.private.test/v1/node"); got != "status 403" {
			t.Fatalf("got %q", got)
		}
		if n := count("elsewhere.private.test", ""); n != 0 {
			t.Fatalf("the other host got %d requests: %+v", n, site.requests())
		}
	})
	if strings.Contains(l.in.Log(), value) {
		t.Error("the log holds the value")
	}
}
