package console_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
)

func TestMain(m *testing.M) { egressdtest.Main(m) }

// chromiumPath finds Debian's chromium (installed by .ci/run); a laptop without it skips,
// CI fails.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testnet.Require(t, false, "chromium (apt-get install chromium)")
	return ""
}

// browser is one headless Chromium with a fresh profile, and what its pages complained of.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string // exceptions, console errors, CSP violations
	allowed  []string // substrings of expected problems (a refused key's 401)
	shots    map[string][]byte
}

// violationHook records CSP violations in the page itself. It is injected by the DevTools
// protocol before any script of the page runs, so the page's own CSP does not apply to it.
const violationHook = `window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + (e.blockedURI || "") + " " + (e.sourceFile || "") + ":" + e.lineNumber);
});`

func newBrowser(t *testing.T) *browser {
	t.Helper()
	exe := chromiumPath(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("no-default-browser-check", true),
		// The machine's proxy variables must not send the browser anywhere but egressd.
		chromedp.Flag("no-proxy-server", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Env("HTTP_PROXY=", "HTTPS_PROXY=", "http_proxy=", "https_proxy=", "ALL_PROXY=", "all_proxy="),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx}
	t.Cleanup(func() {
		cancelCtx() // closes the browser and waits for it
		cancelAlloc()
	})
	// A bounded start: a Chromium that cannot start fails the test instead of hanging it.
	// The browser's life is bound to ctx (no timeout), the first command's to start.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	start, cancelStart := context.WithTimeout(ctx, 30*time.Second)
	defer cancelStart()
	if _, err := chromedp.Call(start, log.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("chromium: Log.enable: %v", err)
	}
	if _, err := chromedp.Call(start, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: violationHook}); err != nil {
		t.Fatalf("chromium: injecting the CSP violation hook: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException || m.Source == "security" {
				b.problem(fmt.Sprintf("%s %s: %s (%s:%d)", m.Type, m.Source, m.Text, m.URL, m.Line+1))
			}
		}
	}()
	return b
}

func (b *browser) problem(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = append(b.problems, s)
}

// expect lets a problem through: an error the test provokes on purpose.
func (b *browser) expect(substr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.allowed = append(b.allowed, substr)
}

// checkClean fails the test if a page threw, logged an error or broke its CSP.
func (b *browser) checkClean() {
	b.t.Helper()
	violations := eval[[]string](b, `window.__violations || []`)
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, v := range violations {
		b.t.Errorf("CSP violation: %s", v)
	}
next:
	for _, p := range b.problems {
		for _, ok := range b.allowed {
			if strings.Contains(p, ok) {
				continue next
			}
		}
		b.t.Errorf("page problem: %s", p)
	}
}

func (b *browser) bounded(limit time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, limit)
}

// dump is the page's main element, for a failure message.
func (b *browser) dump() string {
	ctx, cancel := b.bounded(5 * time.Second)
	defer cancel()
	html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("main")))
	return html
}

// do runs steps with a deadline (every wait in these tests is bounded).
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := b.bounded(20 * time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v\npage:\n%s", what, err, b.dump())
	}
}

// click clicks the first element that sel matches, once it is visible.
// A page may redraw a list between the wait and the click (a record arrived), which
// detaches the node found: the click is tried again, a bounded number of times.
func (b *browser) click(sel string) {
	b.t.Helper()
	var err error
	for range 3 {
		ctx, cancel := b.bounded(10 * time.Second)
		err = chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
		cancel()
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Fatalf("click %s: %v\npage:\n%s", sel, err, b.dump())
}

// waitFor waits up to limit for a selector to be visible and returns how long it took.
func (b *browser) waitFor(sel string, limit time.Duration) time.Duration {
	b.t.Helper()
	start := time.Now()
	ctx, cancel := b.bounded(limit)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
		b.t.Fatalf("%s did not appear within %s: %v\npage:\n%s", sel, limit, err, b.dump())
	}
	return time.Since(start)
}

// waitText waits up to limit for the text of sel to contain want.
func (b *browser) waitText(sel, want string, limit time.Duration) {
	b.t.Helper()
	js := `(document.querySelector(` + jsonString(sel) + `)?.textContent ?? "").includes(` + jsonString(want) + `)`
	deadline := time.Now().Add(limit)
	for {
		if eval[bool](b, js) {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s did not say %q within %s\npage:\n%s", sel, want, limit, b.dump())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// text is the visible text of the first element sel matches.
func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := b.bounded(20 * time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v\npage:\n%s", sel, err, b.dump())
	}
	return s
}

func eval[T any](b *browser, js string) T {
	b.t.Helper()
	ctx, cancel := b.bounded(20 * time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		b.t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

// screenshotsTo says where the browser test writes its screenshots: the test's own temporary
// directory by default (named in the log), so that a test run leaves the work tree as it
// was; "docs" writes docs/console/<name>.png, the pictures docs/console.md shows:
//
//	go test ./internal/controlplane/console -run Chromium -screenshots docs
var screenshotsTo = flag.String("screenshots", "", `where the browser test writes screenshots: "docs" for docs/console (the committed pictures), else a temporary directory`)

// screenshot takes the page as <name>.png (see screenshotsTo). They are written when the test
// ends, and only if it passed, so that a failing run does not replace the pictures with a
// broken page.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := b.bounded(20 * time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.shots == nil {
		b.shots = map[string][]byte{}
		dir := b.t.TempDir()
		if *screenshotsTo == "docs" {
			dir = filepath.Join(repoRoot(b.t), "docs", "console")
		}
		b.t.Cleanup(func() {
			if b.t.Failed() {
				b.t.Logf("screenshots not written to %s: the test failed", dir)
				return
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.t.Error(err)
				return
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			for name, png := range b.shots {
				if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
					b.t.Error(err)
				}
			}
			b.t.Logf("%d screenshots written to %s", len(b.shots), dir)
		})
	}
	b.shots[name] = png
}

// viewport sets the page's size; mobile also emulates a touch screen.
func (b *browser) viewport(w, h int64, mobile bool) {
	b.t.Helper()
	if mobile {
		b.do("phone viewport", chromedp.EmulateViewport(w, h, chromedp.EmulateMobile, chromedp.EmulateTouch))
	} else {
		b.do("viewport", chromedp.EmulateViewport(w, h))
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// through sends one plain HTTP GET through egressd's explicit proxy as the sandbox would.
func through(t *testing.T, proxyURL, target string) (int, string, http.Header) {
	t.Helper()
	u, err := url.Parse(proxyURL)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}}
	resp, err := c.Get(target)
	if err != nil {
		t.Fatalf("GET %s through the proxy: %v", target, err)
	}
	defer resp.Body.Close()
	var body strings.Builder
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	body.Write(buf[:n])
	return resp.StatusCode, body.String(), resp.Header
}

// eventually retries f (a request through the proxy) until it reports done, at most n times
// a quarter second apart: a grant or policy write is enforced when answered, so the first
// try passes, but a page's button answers the browser, not the test.
func eventually(t *testing.T, n int, f func() bool) bool {
	t.Helper()
	for i := 0; i < n; i++ {
		if f() {
			return true
		}
		time.Sleep(250 * time.Millisecond)
	}
	return false
}

// set gives a form field a value as typing would (input and change events).
func (b *browser) set(sel, value string) {
	b.t.Helper()
	js := `(() => { const el = document.querySelector(` + jsonString(sel) + `); el.value = ` + jsonString(value) +
		`; el.dispatchEvent(new Event("input", {bubbles: true})); el.dispatchEvent(new Event("change", {bubbles: true})); return true; })()`
	if !eval[bool](b, js) {
		b.t.Fatalf("set %s", sel)
	}
}

// jsonString quotes s for a script.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
