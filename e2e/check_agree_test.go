package e2e

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// Addresses of the agreement test (DESIGN §10: loopback only; 127.0.0.0/26 is "public").
const (
	agreePublic  = "127.0.0.41"  // a fake public web server
	agreePrivate = "127.0.0.101" // a web server outside --public-cidrs: never to be reached
	agreeInside  = "127.0.0.60"  // a database inside allowed_cidrs
)

// TestCheckAgreesWithGateway: what POST .../check with "resolve": true answers is what the
// proxy then does with the same destination, because both go through one planner and one
// resolver (DESIGN §4). It runs twice: with --dns-upstream (that server only), and without
// it, where egressd resolves the system's way, here from a hosts file and a resolv.conf
// mounted over /etc in a mount namespace of its own.
func TestCheckAgreesWithGateway(t *testing.T) {
	testnet.RequireRoot(t)
	testnet.Require(t, haveCmd("unshare") && haveCmd("mount"), "unshare and mount (util-linux)")
	ca := testnet.NewCA(t)
	public := testnet.StartWeb(t, agreePublic, ca, nil)
	private := testnet.StartWeb(t, agreePrivate, ca, nil)
	db, err := net.Listen("tcp", net.JoinHostPort(agreeInside, "5432"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	go func() {
		for {
			c, err := db.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	// Which source answers each name in the system's way; with --dns-upstream the one
	// server answers all of them.
	fromHosts := map[string]string{"ok.example.test": agreePublic, "hosts-only.example.test": agreePublic}
	fromDNS := map[string]string{
		"private.example.test": agreePrivate,
		"bad.example.test":     agreePublic,
		"other.example.test":   agreePublic,
		"db.internal.test":     agreeInside,
		"web.internal.test":    agreePublic,
	}

	t.Run("dns-upstream", func(t *testing.T) {
		dns := testnet.StartDNS(t, "127.0.0.1")
		for name, ip := range fromDNS {
			dns.Set(name, ip)
		}
		dns.Set("ok.example.test", agreePublic) // hosts-only.example.test: the upstream does not know it
		in := egressdtest.Start(t, "--public-cidrs", "127.0.0.0/26", "--dns-upstream", dns.Addr)
		agree(t, in, map[string]bool{"hosts-only.example.test": false})
	})
	t.Run("system", func(t *testing.T) {
		ip := fmt.Sprintf("127.53.%d.%d", rand.IntN(250)+1, rand.IntN(250)+1)
		dns := testnet.StartDNSOn(t, testnet.Loopback, ip, 53) // resolv.conf names no port
		for name, a := range fromDNS {
			dns.Set(name, a)
		}
		dir := t.TempDir()
		var hosts strings.Builder
		for name, a := range fromHosts {
			fmt.Fprintf(&hosts, "%s %s\n", a, name)
		}
		hostsFile, resolvConf := filepath.Join(dir, "hosts"), filepath.Join(dir, "resolv.conf")
		if err := os.WriteFile(hostsFile, []byte(hosts.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(resolvConf, []byte("nameserver "+ip+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		// A mount namespace of egressd's own: the machine's /etc is untouched.
		wrapper := []string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
			`mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && shift 2 && exec "$@"`,
			"sh", hostsFile, resolvConf}
		in := egressdtest.StartWrapped(t, wrapper, "--public-cidrs", "127.0.0.0/26")
		agree(t, in, map[string]bool{"hosts-only.example.test": true})
		for _, q := range dns.Queries() {
			if strings.HasPrefix(q, "ok.example.test ") || strings.HasPrefix(q, "hosts-only.example.test ") {
				t.Errorf("a name of the hosts file was asked of the nameserver: %s", q)
			}
		}
	})
	for _, h := range private.Hosts() {
		t.Errorf("the private server was reached (Host %s)", h)
	}
	if len(public.Hosts()) == 0 {
		t.Error("the public server saw no request: nothing was allowed")
	}
}

// agree sets one policy, then for each destination asks /check with resolve and sends the
// same destination through the session's proxy, and compares. hostsOnly says whether the
// name that only the hosts file knows resolves in this mode.
func agree(t *testing.T, in *egressdtest.Instance, resolves map[string]bool) {
	ctx := context.Background()
	api, err := client.New(in.URL, in.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.CreateVM(ctx, client.CreateVMRequest{VMID: "agree"}); err != nil {
		t.Fatal(err)
	}
	sess, err := api.CreateSession(ctx, client.CreateSessionRequest{VMID: "agree"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.SetSessionPolicy(ctx, sess.SessionID, policy.Policy{
		AllowHTTP:      true,
		AllowedDomains: []string{"ok.example.test", "hosts-only.example.test", "private.example.test", "nx.example.test", "bad.example.test", "*.internal.test"},
		DeniedDomains:  []string{"bad.example.test"},
		AllowedCIDRs:   []string{agreeInside + "/32"},
	}); err != nil {
		t.Fatal(err)
	}
	proxyURL, _ := url.Parse(sess.ProxyURL)

	tests := []struct {
		name  string
		check client.CheckRequest
		allow bool
	}{
		{"allowed name", client.CheckRequest{URL: "http://ok.example.test/"}, true},
		{"hosts file only", client.CheckRequest{URL: "http://hosts-only.example.test/"}, resolves["hosts-only.example.test"]},
		{"upper case", client.CheckRequest{URL: "http://OK.Example.TEST./"}, true},
		{"private address", client.CheckRequest{URL: "http://private.example.test/"}, false},
		{"denied name", client.CheckRequest{URL: "http://bad.example.test/"}, false},
		{"name not listed", client.CheckRequest{URL: "http://other.example.test/"}, false},
		{"no such name", client.CheckRequest{URL: "http://nx.example.test/"}, false},
		{"IP literal", client.CheckRequest{URL: "http://" + agreePublic + "/"}, false},
		{"name into allowed_cidrs, port 5432", client.CheckRequest{Host: "db.internal.test", Port: 5432}, true},
		{"name outside allowed_cidrs, port 5432", client.CheckRequest{Host: "web.internal.test", Port: 5432}, false},
	}
	for _, tt := range tests {
		tt.check.Resolve = true
		res, err := api.Check(ctx, sess.SessionID, tt.check)
		if err != nil {
			t.Fatalf("%s: check: %v", tt.name, err)
		}
		var passed bool
		var reason string
		if tt.check.URL != "" {
			passed, reason = viaProxyHTTP(t, proxyURL, tt.check.URL)
		} else {
			passed, reason = viaProxyConnect(t, in.ProxyAddr, proxyURL, net.JoinHostPort(tt.check.Host, fmt.Sprint(tt.check.Port)))
		}
		if (res.Decision == "allow") != tt.allow || passed != tt.allow {
			t.Errorf("%s: check %s (%s: %s), proxy passed=%v (%s); want allow=%v", tt.name, res.Decision, res.Reason, res.Rule, passed, reason, tt.allow)
		}
		// A denial by the policy is the same denial: the proxy's X-Egress-Reason is the code
		// /check gave. (A name that leads nowhere is a 502 at the proxy: nothing to dial.)
		if !tt.allow && reason != "" && reason != res.Reason {
			t.Errorf("%s: check says %s, the proxy %s", tt.name, res.Reason, reason)
		}
	}
}

// viaProxyHTTP sends GET rawURL through the proxy: whether the origin answered, and the
// X-Egress-Reason of a denial.
func viaProxyHTTP(t *testing.T, proxyURL *url.URL, rawURL string) (bool, string) {
	t.Helper()
	c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(rawURL)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK && resp.Header.Get("X-Egress-Decision") == "", resp.Header.Get("X-Egress-Reason")
}

// viaProxyConnect sends CONNECT target through the proxy: whether the tunnel opened, and the
// X-Egress-Reason of a denial.
func viaProxyConnect(t *testing.T, proxyAddr string, proxyURL *url.URL, target string) (bool, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n", target, target, auth(proxyURL.String()))
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	return resp.StatusCode == http.StatusOK, resp.Header.Get("X-Egress-Reason")
}
