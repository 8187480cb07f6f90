package console_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// webIP is this package's fake public web server: a loopback address no other test package
// uses, so that `go test ./...` can run packages at once.
const webIP = "127.0.0.77"

// secretValue must never reach the page.
const secretValue = "s3cr3t-console-value-4711"

// consoleLab is egressd with a fake internet, a VM, a session, a secret, and a browser.
type consoleLab struct {
	t    *testing.T
	in   *egressdtest.Instance
	api  *client.Client
	vm   string
	sess *client.Session
	b    *browser
}

func newConsoleLab(t *testing.T) *consoleLab {
	t.Helper()
	testnet.RequireRoot(t) // the fake web server listens on port 80
	chromiumPath(t)
	ca := testnet.NewCA(t)
	dns := testnet.StartDNS(t, "127.0.0.1")
	testnet.StartWeb(t, webIP, ca, nil)
	for _, name := range []string{"api.example.test", "other.example.test", "added.example.test",
		"learn1.example.test", "learn2.example.test"} {
		dns.Set(name, webIP)
	}
	in := egressdtest.Start(t, "--public-cidrs", webIP+"/32", "--dns-upstream", dns.Addr)
	api, err := client.New(in.URL, in.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l := &consoleLab{t: t, in: in, api: api, vm: "vm-console"}
	if _, err := api.CreateVM(ctx, client.CreateVMRequest{VMID: l.vm}); err != nil {
		t.Fatal(err)
	}
	if l.sess, err = api.CreateSession(ctx, client.CreateSessionRequest{VMID: l.vm}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.SetSessionPolicy(ctx, l.sess.SessionID, policy.Policy{AllowHTTP: true, AllowedDomains: []string{"other.example.test"}}); err != nil {
		t.Fatal(err)
	}
	// A second VM with a VM policy, so that the VMs page shows one.
	if _, err := api.CreateVM(ctx, client.CreateVMRequest{VMID: "vm-build"}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.SetVMPolicy(ctx, "vm-build", policy.Policy{AllowHTTPS: true, AllowPackageManagers: true, AllowedDomains: []string{"api.example.test"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.CreateSecret(ctx, client.CreateSecretRequest{Name: "github-token", Value: secretValue, Domains: []string{"api.example.test"}}); err != nil {
		t.Fatal(err)
	}
	l.b = newBrowser(t)
	return l
}

// get sends GET http://<host>/ through the session's proxy and returns the status.
func (l *consoleLab) get(host string) int {
	l.t.Helper()
	code, body, hdr := through(l.t, l.sess.ProxyURL, "http://"+host+"/")
	if code == http.StatusOK && body != "hello from "+host+"\n" {
		l.t.Fatalf("GET %s: 200 with %q", host, body)
	}
	if code == http.StatusForbidden && hdr.Get("X-Egress-Decision") != "deny" {
		l.t.Fatalf("GET %s: 403 without X-Egress-Decision: deny", host)
	}
	return code
}

// signIn types key into the sign-in form and submits it.
func (l *consoleLab) signIn(key string) {
	l.t.Helper()
	l.b.do("navigate", chromedp.Navigate(l.in.URL+"/ui/"))
	l.b.waitFor("#api-key", 15*time.Second)
	l.b.set("#api-key", "")
	l.b.do("type the key", chromedp.SendKeys(chromedp.CSS("#api-key"), key))
	l.b.click("#signin-button")
}

// endpointMissing reports whether this egressd has no route for method path (a part of
// issue 15 that is built on another branch and not merged here yet).
func (l *consoleLab) endpointMissing(method, path string) bool {
	l.t.Helper()
	req, _ := http.NewRequest(method, l.in.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+l.in.AdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode == http.StatusNotFound && strings.Contains(string(body), "no such endpoint")
}

// needs skips (laptop) or fails (CI) a step whose API is not in this build: the grants and
// the suggestions of issue 15 are built on their own branches. The page's own requests to
// the missing endpoint are 404s in the browser's log, expected then.
func (l *consoleLab) needs(t *testing.T, path, what string) {
	t.Helper()
	if !l.endpointMissing("GET", path) {
		return
	}
	l.b.expect(path[strings.LastIndex(path, "/"):] + ":")
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not in this build (GET %s: no such endpoint)", what, path)
	}
	t.Skipf("%s is not in this build (GET %s: no such endpoint)", what, path)
}

func TestConsoleInChromium(t *testing.T) {
	l := newConsoleLab(t)
	b := l.b

	// A wrong key is refused, and nothing is kept.
	b.expect("401") // the browser logs the refused status/ call
	l.signIn("egk_not-a-key-of-this-egressd")
	b.waitFor("#signin-status.error", 10*time.Second)
	if got := b.text("#signin-status"); !strings.Contains(got, "refused") {
		t.Errorf("a wrong key: status %q, want a refusal", got)
	}
	if kept := eval[string](b, `sessionStorage.getItem("egressd.apiKey") ?? ""`); kept != "" {
		t.Errorf("a refused key was kept in sessionStorage: %q", kept)
	}
	if present := eval[bool](b, `document.getElementById("vms-table") !== null`); present {
		t.Error("a refused key shows the VMs page")
	}
	b.set("#api-key", "")
	b.screenshot("signin")

	// The right key: the VMs page, with the VM and its session.
	l.signIn(l.in.AdminKey)
	b.waitFor("#vms-table", 10*time.Second)
	if got := b.text("#vms-table"); !strings.Contains(got, l.vm) || !strings.Contains(got, l.sess.SessionID) {
		t.Errorf("VMs page lacks the VM or its session:\n%s", got)
	}
	b.waitText(`.vm-policy[data-vm="vm-build"]`, "package managers", 10*time.Second)
	if got := b.text("#vms-table"); !strings.Contains(got, "vm-build") || !strings.Contains(got, "no VM policy") {
		t.Errorf("VMs page lacks the second VM's policy:\n%s", got)
	}
	if kept := eval[string](b, `sessionStorage.getItem("egressd.apiKey") ?? ""`); kept != l.in.AdminKey {
		t.Error("the key is not in sessionStorage after signing in")
	}
	if kept := eval[string](b, `localStorage.length + ":" + document.cookie`); kept != "0:" {
		t.Errorf("the key went somewhere besides sessionStorage: localStorage/cookie %q", kept)
	}
	b.screenshot("vms")

	// The live stream: an allowed request, then a denied one that must show up at once.
	b.do("events page", chromedp.Navigate(l.in.URL+"/ui/#/events"))
	b.waitFor("#stream", 10*time.Second)
	b.waitFor("#live .dot.on", 10*time.Second)
	if code := l.get("other.example.test"); code != http.StatusOK {
		t.Fatalf("allowed host: %d", code)
	}
	b.waitFor(`#stream-body tr[data-host="other.example.test"][data-decision="allow"]`, 10*time.Second)
	if code := l.get("api.example.test"); code != http.StatusForbidden {
		t.Fatalf("a host outside allowed_domains: %d, want 403", code)
	}
	took := b.waitFor(`#stream-body tr[data-host="api.example.test"][data-decision="deny"]`, 5*time.Second)
	t.Logf("the denial appeared in the live stream %s after the proxy answered", took.Round(time.Millisecond))
	// The filters: host and decision narrow what is shown, without a new stream.
	b.do("host filter", chromedp.SendKeys(chromedp.CSS("#f-host"), "other"))
	b.waitFor(`#stream-body tr[data-host="other.example.test"]`, 5*time.Second)
	if n := eval[int](b, `document.querySelectorAll('#stream-body tr[data-host="api.example.test"]').length`); n != 0 {
		t.Errorf("host filter 'other' still shows %d api.example.test rows", n)
	}
	b.set("#f-host", "")
	b.set("#f-decision", "deny")
	if n := eval[int](b, `document.querySelectorAll('#stream-body tr[data-decision="allow"]').length`); n != 0 {
		t.Errorf("decision filter 'denied' still shows %d allowed rows", n)
	}
	if n := eval[int](b, `document.querySelectorAll('#chart .minute[data-deny="0"][data-allow="0"]').length`); n == 30 {
		t.Error("the chart shows no decision in any minute")
	}
	b.set("#f-decision", "")
	b.screenshot("events")

	// Monitor mode: a would-be denial passes, and shows as one, in the stream and among the
	// session's denied hosts.
	t.Run("monitor mode", func(t *testing.T) {
		mon, err := l.api.CreateSession(context.Background(), client.CreateSessionRequest{VMID: l.vm})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.api.SetSessionPolicy(context.Background(), mon.SessionID, policy.Policy{Mode: policy.Monitor, AllowHTTP: true, AllowedDomains: []string{"other.example.test"}}); err != nil {
			t.Fatal(err)
		}
		b.do("events of the monitored session", chromedp.Navigate(l.in.URL+"/ui/#/events?session_id="+mon.SessionID))
		b.waitFor("#live .dot.on", 10*time.Second)
		if code, _, _ := through(t, mon.ProxyURL, "http://api.example.test/"); code != http.StatusOK {
			t.Fatalf("monitor mode: %d, want 200", code)
		}
		b.waitFor(`#stream-body tr[data-host="api.example.test"][data-decision="deny"] .badge-would`, 5*time.Second)
		if n := eval[int](b, `document.querySelectorAll('#stream-body tr[data-host="other.example.test"]').length`); n != 0 {
			t.Errorf("the session filter shows %d records of another session", n)
		}
		b.do("monitored session page", chromedp.Navigate(l.in.URL+"/ui/#/session/"+mon.SessionID))
		b.waitFor(`#denied-table tr[data-target="api.example.test:80"] .badge-would`, 10*time.Second)
	})

	// The session: the denied host grouped, with the layer that denied it.
	b.do("session page", chromedp.Navigate(l.in.URL+"/ui/#/session/"+l.sess.SessionID))
	b.waitFor("#effective-table", 10*time.Second)
	row := `#denied-table tr[data-target="api.example.test:80"]`
	b.waitFor(row, 10*time.Second)
	if got := b.text(row); !strings.Contains(got, "session") || !strings.Contains(got, "host_not_allowed") {
		t.Errorf("denied row: %q, want layer session and reason host_not_allowed", got)
	}
	if got := b.text("#effective-table"); !strings.Contains(got, "other.example.test") {
		t.Errorf("effective policy lacks allowed_domains entry: %q", got)
	}

	t.Run("add to policy", func(t *testing.T) {
		if code := l.get("added.example.test"); code != http.StatusForbidden {
			t.Fatalf("added.example.test before: %d, want 403", code)
		}
		r := `#denied-table tr[data-target="added.example.test:80"]`
		b.waitFor(r, 10*time.Second)
		b.click(r + " button.add")
		b.waitFor(r+" .confirm", 5*time.Second)
		if got := b.text(r + " .confirm"); !strings.Contains(got, "allowed_domains + added.example.test") {
			t.Errorf("confirmation says %q", got)
		}
		b.click(r + " button.confirm-add")
		b.waitText("#session-status", "Set the session policy", 10*time.Second)
		if !eventually(t, 8, func() bool { return l.get("added.example.test") == http.StatusOK }) {
			t.Fatal("added.example.test still denied after add to policy")
		}
		p, err := l.api.GetSessionPolicy(context.Background(), l.sess.SessionID)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(p.AllowedDomains, ",") != "added.example.test,other.example.test" || !p.AllowHTTP || p.AllowHTTPS {
			t.Errorf("session policy after add: domains %v http %v https %v", p.AllowedDomains, p.AllowHTTP, p.AllowHTTPS)
		}
	})

	t.Run("allow for 5 minutes", func(t *testing.T) {
		l.needs(t, "/v1/egress/session/"+l.sess.SessionID+"/grants", "the grants API (h/grants)")
		b.do("reload", chromedp.Reload())
		b.waitFor(row+" button.grant", 10*time.Second)
		if got := b.text(row + " button.grant"); got != "Allow for 5 minutes" {
			t.Errorf("grant button says %q", got)
		}
		b.click(row + " button.grant")
		b.waitText("#session-status", "Allowed api.example.test:80 on the session layer for 5 minutes", 10*time.Second)
		b.waitFor("#grants-table", 10*time.Second)
		if got := b.text("#grants-table"); !strings.Contains(got, "api.example.test") {
			t.Errorf("grants table: %q", got)
		}
		if code := l.get("api.example.test"); code != http.StatusOK {
			t.Fatalf("after allow for 5 minutes: %d, want 200", code)
		}
		b.waitFor(row+" .badge-allow", 10*time.Second) // "allowed since"
		b.screenshot("session")
	})

	t.Run("suggestion apply", func(t *testing.T) {
		l.needs(t, "/v1/egress/session/"+l.sess.SessionID+"/suggestion", "the suggestion API (h/suggest)")
		for _, h := range []string{"learn1.example.test", "learn2.example.test"} {
			if code := l.get(h); code != http.StatusForbidden {
				t.Fatalf("%s before: %d, want 403", h, code)
			}
		}
		b.click("#suggestion-refresh")
		b.waitFor("#suggestion-changes", 10*time.Second)
		if got := b.text("#suggestion-changes"); !strings.Contains(got, "learn1.example.test") || !strings.Contains(got, "learn2.example.test") {
			t.Errorf("suggestion: %q", got)
		}
		b.click("#suggestion-apply")
		b.waitText("#session-status", "Applied the suggestion", 10*time.Second)
		// The denied hosts follow the new policy: nothing left to add for the learned hosts.
		b.waitFor(`#denied-table tr[data-target="learn1.example.test:80"] button.add[disabled]`, 10*time.Second)
		for _, h := range []string{"learn1.example.test", "learn2.example.test"} {
			if code := l.get(h); code != http.StatusOK {
				t.Errorf("%s after apply: %d, want 200", h, code)
			}
		}
	})
	if !t.Failed() {
		b.screenshot("session")
	}

	// Secrets: names, domains and placeholders; never the value.
	b.do("secrets page", chromedp.Navigate(l.in.URL+"/ui/#/secrets"))
	b.waitFor("#secrets-table", 10*time.Second)
	if got := b.text("#secrets-table"); !strings.Contains(got, "github-token") || !strings.Contains(got, "api.example.test") {
		t.Errorf("secrets page: %q", got)
	}
	if html := eval[string](b, `document.documentElement.outerHTML`); strings.Contains(html, secretValue) {
		t.Error("a secret's value reached the page")
	}
	b.screenshot("secrets")

	b.do("nodes page", chromedp.Navigate(l.in.URL+"/ui/#/nodes"))
	b.waitFor("#nodes-table", 10*time.Second)
	b.screenshot("nodes")

	// A phone: the session page in one column, tables as cards.
	b.viewport(390, 844, true)
	b.do("session page", chromedp.Navigate(l.in.URL+"/ui/#/session/"+l.sess.SessionID))
	b.waitFor(row, 10*time.Second)
	if w := eval[int](b, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("on a 390 px phone the page is %d px wide (sideways scrolling)", w)
	}
	b.screenshot("session-phone")

	// Signing out forgets the key.
	b.viewport(1280, 900, false)
	b.click("#signout")
	b.waitFor("#api-key", 5*time.Second)
	if kept := eval[string](b, `sessionStorage.getItem("egressd.apiKey") ?? ""`); kept != "" {
		t.Error("sign-out left the key in sessionStorage")
	}

	// Another tenant's key sees none of this tenant's VMs, and no nodes (admin only).
	other, err := l.api.CreateAPIKey(context.Background(), client.CreateAPIKeyRequest{Tenant: "tenant-b"})
	if err != nil {
		t.Fatal(err)
	}
	l.signIn(other.Key)
	b.waitFor("#page-vms", 10*time.Second)
	b.waitText("#page-vms", "No VMs yet", 10*time.Second)
	b.expect("/v1/nodes:") // the 403 the nodes page gets, in the browser's log
	b.do("nodes page", chromedp.Navigate(l.in.URL+"/ui/#/nodes"))
	b.waitText("#page-nodes", "admin keys only", 10*time.Second)

	// Everything so far ran without an exception, a console error or a CSP violation.
	b.checkClean()

	// The CSP is in force in the real browser: a string cannot become HTML (Trusted Types)
	// nor code (no eval), and no other origin can be fetched.
	for _, tc := range []struct{ what, js string }{
		{"innerHTML", `(() => { try { document.createElement("div").innerHTML = "<img src=x>"; return "assigned"; } catch (e) { return e.name; } })()`},
	} {
		if got := eval[string](b, tc.js); got != "TypeError" && got != "EvalError" {
			t.Errorf("%s under the console's CSP: %q, want it refused", tc.what, got)
		}
	}
	// Code from a string, compiled by the page itself (DevTools' own evaluation is exempt
	// from the CSP, so eval is tried where the page would run it: a string timer).
	eval[string](b, `(() => { try { setTimeout("window.__ranFromString = true", 0); } catch (e) {} return ""; })()`)
	time.Sleep(300 * time.Millisecond)
	if ran := eval[bool](b, `window.__ranFromString === true`); ran {
		t.Error("a string timer ran under the console's CSP (eval is allowed)")
	}
	ctx, cancel := b.bounded(20 * time.Second)
	defer cancel()
	got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch("http://`+webIP+`/").then(() => "fetched", (e) => e.name)`, chromedp.EvalAwaitPromise))
	if err != nil || got == "fetched" {
		t.Errorf("fetching another origin from the console: %q %v, want a refusal", got, err)
	}
}
