package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
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

// originIP is the fake API origin of the interception tests, apart from webIP so that what
// it receives is only these tests'.
const originIP = "127.0.0.31" // its own: no other test serves on it

// seen is one request as the fake origin received it.
type seen struct {
	Host, Method, Path, Auth string
}

// ixLab is one egressd (the real binary) that intercepts, with a fake origin that records
// the headers it gets, a client that records every API answer, and egressd's CA on disk.
type ixLab struct {
	t       *testing.T
	in      *egressdtest.Instance
	api     *client.Client
	answers *bytes.Buffer // every API answer's body
	audit   string
	ixCA    string // egressd's CA, from GET /v1/ca.pem
	ixPool  *x509.CertPool
	vm      string
	sess    client.Session

	mu   sync.Mutex
	seen []seen
}

// recorder keeps every API answer's body, for the test that greps them for a secret.
type recorder struct {
	mu  sync.Mutex
	buf *bytes.Buffer
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.buf.Write(body)
	r.buf.WriteByte('\n')
	r.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

func newIXLab(t *testing.T) *ixLab {
	t.Helper()
	testnet.RequireRoot(t)
	ca := testnet.NewCA(t)
	dir := t.TempDir()
	l := &ixLab{t: t, answers: &bytes.Buffer{}, audit: filepath.Join(dir, "audit.jsonl")}
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.seen = append(l.seen, seen{Host: r.Host, Method: r.Method, Path: r.URL.Path, Auth: r.Header.Get("Authorization")})
		l.mu.Unlock()
		if r.URL.Path == "/v1/slow" {
			slowBody(w)
			return
		}
		io.WriteString(w, "origin "+r.Host+" "+r.Method+" "+r.URL.Path+"\n")
	})
	testnet.StartWeb(t, originIP, ca, origin)
	dns := testnet.StartDNS(t, "127.0.0.1")
	for _, name := range []string{"api.secret.test", "other.secret.test", "cut.secret.test", "rule.secret.test", "plain.secret.test"} {
		dns.Set(name, originIP)
	}
	l.in = egressdtest.Start(t, "--public-cidrs", "127.0.0.0/26", "--dns-upstream", dns.Addr,
		"--upstream-ca-file", ca.WriteFile(t, dir), "--audit-log", l.audit)
	var err error
	l.api, err = client.New(l.in.URL, l.in.AdminKey, client.WithHTTPClient(&http.Client{Transport: &recorder{buf: l.answers}}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pem, err := l.api.CAPEM(ctx)
	if err != nil {
		t.Fatalf("GET /v1/ca.pem: %v", err)
	}
	l.ixCA = filepath.Join(dir, "egressd-ca.pem")
	if err := os.WriteFile(l.ixCA, pem, 0o644); err != nil {
		t.Fatal(err)
	}
	l.ixPool = x509.NewCertPool()
	if !l.ixPool.AppendCertsFromPEM(pem) {
		t.Fatal("ca.pem holds no certificate")
	}
	l.vm = "vm-ix-" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(l.vm) > 60 {
		l.vm = l.vm[:60]
	}
	if _, err := l.api.CreateVM(ctx, client.CreateVMRequest{VMID: l.vm}); err != nil {
		t.Fatal(err)
	}
	s, err := l.api.CreateSession(ctx, client.CreateSessionRequest{VMID: l.vm})
	if err != nil {
		t.Fatal(err)
	}
	l.sess = *s
	return l
}

func (l *ixLab) setPolicy(p policy.Policy) {
	l.t.Helper()
	if _, err := l.api.SetSessionPolicy(context.Background(), l.sess.SessionID, p); err != nil {
		l.t.Fatal(err)
	}
}

func (l *ixLab) origin() []seen {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]seen(nil), l.seen...)
}

// curl runs curl through HTTPS_PROXY, trusting egressd's CA only; it returns the status
// line's code (curl -w), the body and the headers.
func (l *ixLab) curl(args ...string) (code, body, headers string) {
	l.t.Helper()
	testnet.Require(l.t, haveCmd("curl"), "curl")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hdr := filepath.Join(l.t.TempDir(), "headers")
	full := append([]string{"-sS", "--max-time", "20", "--cacert", l.ixCA, "-D", hdr, "-w", "\n%{http_code} %{http_version}"}, args...)
	cmd := exec.CommandContext(ctx, "curl", full...)
	cmd.Env = append(cleanProxyEnv(), "HTTPS_PROXY="+l.sess.ProxyURL, "http_proxy="+l.sess.ProxyURL, "NO_PROXY=") // curl reads only the lower-case http_proxy
	out, err := cmd.Output()
	if err != nil {
		l.t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	h, _ := os.ReadFile(hdr)
	s := string(out)
	i := strings.LastIndexByte(s, '\n')
	return s[i+1:], s[:i], string(h)
}

// TestInterceptionExplicitProxy: through the real binary and its explicit proxy, clients that
// hold only a placeholder reach the origin with the secret's value, only toward the secret's
// domain; method and path rules decide each request; rotation applies to the next request;
// removing the secret or the rule cuts the open connection; and the value is nowhere in the
// events, the audit file, the log or the API's answers.
func TestInterceptionExplicitProxy(t *testing.T) {
	l := newIXLab(t)
	ctx := context.Background()
	const value1, value2 = "sk-live-value-one-0123456789abcdef", "sk-live-value-two-fedcba9876543210"
	sec, err := l.api.CreateSecret(ctx, client.CreateSecretRequest{Name: "api_key", Value: value1, Domains: []string{"api.secret.test"}})
	if err != nil {
		t.Fatal(err)
	}
	ph := sec.Placeholder
	if !strings.HasPrefix(ph, "egressd-secret-api_key-") {
		t.Fatalf("placeholder %q", ph)
	}
	l.setPolicy(policy.Policy{
		AllowHTTPS: true, AllowHTTP: true,
		HTTPRules: []policy.HTTPRule{
			{Domain: "api.secret.test", Methods: []string{"GET"}, Paths: []string{"/v1/"}},
			{Domain: "other.secret.test"}, // intercepted, so that a placeholder toward it is seen
			{Domain: "rule.secret.test"},
		},
	})
	bearer := "Authorization: Bearer " + ph

	t.Run("curl HTTP/1.1", func(t *testing.T) {
		code, body, _ := l.curl("--http1.1", "-H", bearer, "https://api.secret.test/v1/models?q=1")
		if code != "200 1.1" || !strings.Contains(body, "origin api.secret.test GET /v1/models") {
			t.Fatalf("got %q %q", code, body)
		}
		if got := l.origin(); len(got) == 0 || got[len(got)-1].Auth != "Bearer "+value1 {
			t.Fatalf("the origin got %+v, want the value", got)
		}
	})
	t.Run("curl HTTP/2", func(t *testing.T) {
		code, body, _ := l.curl("--http2", "-H", bearer, "https://api.secret.test/v1/h2")
		if code != "200 2" || !strings.Contains(body, "GET /v1/h2") {
			t.Fatalf("got %q %q", code, body)
		}
		if got := l.origin(); got[len(got)-1].Auth != "Bearer "+value1 {
			t.Fatalf("the origin got %+v, want the value", got[len(got)-1])
		}
	})
	t.Run("placeholder toward another host", func(t *testing.T) {
		before := len(l.origin())
		code, _, hdr := l.curl("-H", bearer, "https://other.secret.test/v1/models")
		if code != "403 1.1" && code != "403 2" || !strings.Contains(strings.ToLower(hdr), "x-egress-reason: secret_not_for_host") {
			t.Fatalf("got %q\n%s", code, hdr)
		}
		if got := l.origin(); len(got) != before {
			t.Fatalf("the origin got %+v", got[before:])
		}
	})
	t.Run("method and path rules", func(t *testing.T) {
		code, _, hdr := l.curl("-X", "POST", "https://api.secret.test/v1/models")
		if !strings.HasPrefix(code, "403") || !strings.Contains(strings.ToLower(hdr), "x-egress-reason: method_not_allowed") {
			t.Errorf("POST: %q\n%s", code, hdr)
		}
		code, _, hdr = l.curl("https://api.secret.test/admin")
		if !strings.HasPrefix(code, "403") || !strings.Contains(strings.ToLower(hdr), "x-egress-reason: path_not_allowed") {
			t.Errorf("GET /admin: %q\n%s", code, hdr)
		}
		code, _, _ = l.curl("https://api.secret.test/v1/../v1/ok")
		if !strings.HasPrefix(code, "200") {
			t.Errorf("GET /v1/ok: %q", code)
		}
	})
	t.Run("another Host on the connection", func(t *testing.T) {
		code, _, _ := l.curl("--http1.1", "-H", "Host: other.secret.test", "https://api.secret.test/v1/x")
		if !strings.HasPrefix(code, "421") {
			t.Errorf("got %q, want 421", code)
		}
	})
	t.Run("placeholder over plain HTTP", func(t *testing.T) {
		before := len(l.origin())
		code, _, hdr := l.curl("-H", bearer, "http://plain.secret.test/x")
		if !strings.HasPrefix(code, "403") || !strings.Contains(strings.ToLower(hdr), "x-egress-reason: secret_over_http") {
			t.Errorf("got %q\n%s", code, hdr)
		}
		if got := l.origin(); len(got) != before {
			t.Fatalf("the origin got %+v", got[before:])
		}
	})
	t.Run("Python urllib", func(t *testing.T) {
		testnet.Require(t, haveCmd("python3"), "python3")
		script := `
import os, ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"https": sys.argv[2]}), urllib.request.HTTPSHandler(context=ctx))
req = urllib.request.Request("https://api.secret.test/v1/py", headers={"Authorization": "Bearer " + os.environ["API_KEY"]})
print(opener.open(req, timeout=20).read().decode(), end="")
`
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, "python3", "-c", script, l.ixCA, l.sess.ProxyURL)
		cmd.Env = append(cleanProxyEnv(), "API_KEY="+ph)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "GET /v1/py") {
			t.Fatalf("python: %v\n%s", err, out)
		}
		if got := l.origin(); got[len(got)-1].Auth != "Bearer "+value1 {
			t.Fatalf("the origin got %+v", got[len(got)-1])
		}
	})
	t.Run("rotation applies to the next request", func(t *testing.T) {
		if _, err := l.api.RotateSecret(ctx, "api_key", value2); err != nil {
			t.Fatal(err)
		}
		code, _, _ := l.curl("-H", bearer, "https://api.secret.test/v1/rotated")
		if !strings.HasPrefix(code, "200") {
			t.Fatalf("got %q", code)
		}
		if got := l.origin(); got[len(got)-1].Auth != "Bearer "+value2 {
			t.Fatalf("the origin got %q, want the new value", got[len(got)-1].Auth)
		}
	})
	t.Run("deleting the secret cuts the connection", func(t *testing.T) {
		if _, err := l.api.CreateSecret(ctx, client.CreateSecretRequest{Name: "cutter", Value: "cut-value-0123456789", Domains: []string{"cut.secret.test"}}); err != nil {
			t.Fatal(err)
		}
		l.cutDuringSlow(t, "https://cut.secret.test/v1/slow", func() {
			if err := l.api.DeleteSecret(ctx, "cutter"); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("removing the rule cuts the connection", func(t *testing.T) {
		l.cutDuringSlow(t, "https://rule.secret.test/v1/slow", func() {
			l.setPolicy(policy.Policy{AllowHTTPS: true, AllowHTTP: true, HTTPRules: []policy.HTTPRule{
				{Domain: "api.secret.test", Methods: []string{"GET"}, Paths: []string{"/v1/"}},
				{Domain: "other.secret.test"},
			}})
		})
	})

	// Every record of the run: the requests are there with method, path, status and the
	// secret's name; the value is in none of them, nor in the audit file, the log or any
	// answer of the API.
	evs, err := l.api.Events(ctx, client.EventsFilter{SessionID: l.sess.SessionID, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, e := range evs {
		if e.Kind == client.EventRequest && e.Method == "GET" && e.Path == "/v1/models" && e.Status == 200 &&
			len(e.Secrets) == 1 && e.Secrets[0] == "api_key" && e.Host == "api.secret.test" {
			found = true
		}
		if strings.Contains(e.Path, "q=1") {
			t.Errorf("an event has the query: %+v", e)
		}
	}
	if !found {
		t.Errorf("no request event with method, path, status and the secret's name among %d", len(evs))
	}
	raw, _ := json.Marshal(evs)
	audit, err := os.ReadFile(l.audit)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(audit, []byte(`"secret_not_for_host"`)) {
		t.Error("the audit file has no secret_not_for_host record")
	}
	// The event ring in the data dir (kept across restarts) has them too, names only.
	var ring []byte
	for deadline := time.Now().Add(10 * time.Second); !bytes.Contains(ring, []byte(`"secret_not_for_host"`)); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the event ring has no secret_not_for_host record")
		}
		ring = nil
		segs, _ := filepath.Glob(filepath.Join(l.in.DataDir, "events", "*.seg"))
		for _, p := range segs {
			b, _ := os.ReadFile(p)
			ring = append(ring, b...)
		}
	}
	if !bytes.Contains(ring, []byte(`"api_key"`)) {
		t.Error("the event ring does not name the secret applied")
	}
	l.api.ListSecrets(ctx)
	for _, v := range []string{value1, value2, "cut-value-0123456789"} {
		for what, b := range map[string][]byte{"events": raw, "audit file": audit, "event ring": ring, "log": []byte(l.in.Log()), "API answers": l.answers.Bytes()} {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("the %s hold a secret's value", what)
			}
		}
	}
}

// cutDuringSlow starts a long download through an intercepted connection, runs change
// while it flows, and requires the download to be cut well before it would have ended.
func (l *ixLab) cutDuringSlow(t *testing.T, rawURL string, change func()) {
	t.Helper()
	proxyURL, _ := url.Parse(l.sess.ProxyURL)
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), TLSClientConfig: &tls.Config{RootCAs: l.ixPool}}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", rawURL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatalf("first bytes: %v", err)
	}
	start := time.Now()
	change()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && n+4096 >= 300*1024 {
		t.Fatalf("the download ran to its end (%d bytes in %s): not cut", n, time.Since(start))
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("cut after %s", took)
	}
}
