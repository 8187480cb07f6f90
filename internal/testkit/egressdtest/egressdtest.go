// Package egressdtest runs the real egressd and egressctl binaries for end-to-end tests:
// it builds them once per test process, starts egressd on free loopback ports with a
// throwaway data directory, waits until it answers, and stops it when the test ends.
//
// A test package that uses it calls Main from its TestMain, so that the binaries built for
// the run are deleted afterwards:
//
//	func TestMain(m *testing.M) { egressdtest.Main(m) }
package egressdtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/host/netns"
)

var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]string{}
	keyFile  string // SecretsKeyFile's, in buildDir
)

// Main runs the tests and removes the binaries they built (and the secrets key file).
func Main(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// Binary builds ./cmd/<name> of this module once per test process and returns its path.
func Binary(t testing.TB, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[name]; ok {
		return p
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("egressdtest: %v", err)
	}
	if err := ensureBuildDir(); err != nil {
		t.Fatalf("egressdtest: %v", err)
	}
	out := filepath.Join(buildDir, name)
	cmd := exec.Command("go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("egressdtest: go build ./cmd/%s: %v\n%s", name, err, b)
	}
	built[name] = out
	return out
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the egressd module")
	}
	return filepath.Dir(mod), nil
}

// SecretsKeyFile returns the secrets key file that every egressd of this test process is
// started with (--secrets-key-file; made once, mode 0600, removed by Main). One key for all
// of them is what a fleet needs: nodes on one store refuse to start with different keys. A
// test of egressd's own default (a key made in the data directory) passes
// "--secrets-key-file=" among its arguments, which overrides this one.
func SecretsKeyFile(t testing.TB) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if keyFile != "" {
		return keyFile
	}
	if err := ensureBuildDir(); err != nil {
		t.Fatalf("egressdtest: %v", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatalf("egressdtest: %v", err)
	}
	p := filepath.Join(buildDir, "secrets.key")
	if err := os.WriteFile(p, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatalf("egressdtest: %v", err)
	}
	keyFile = p
	return p
}

func ensureBuildDir() error {
	if buildDir != "" {
		return nil
	}
	var err error
	buildDir, err = os.MkdirTemp("", "egressdtest-bin-")
	return err
}

// FreePort returns a loopback TCP address that was free a moment ago.
func FreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("egressdtest: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Instance is one running egressd.
type Instance struct {
	URL       string // the API's base URL, http://127.0.0.1:port
	APIAddr   string
	ProxyAddr string
	AdminKey  string // read from <DataDir>/admin.key ("" when egressd wrote none)
	DataDir   string
	Args      []string // the extra arguments it was started with

	// Netns is the network namespace egressd runs in ("" for the test's own); HTTPClient
	// reaches its API from the test either way.
	Netns      string
	HTTPClient *http.Client
	// Wrapper, when set, is a command that runs egressd: egressd's path and arguments are
	// appended to it, and the wrapper must exec egressd (keep its PID), as
	// `unshare --mount sh -c '...; exec "$0" "$@"'` does.
	Wrapper []string

	t       testing.TB
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	started bool          // it has answered /healthz once: its ports are its own
	log     *bytes.Buffer
	mu      sync.Mutex
}

// Start runs egressd with a new data directory and free ports, plus extraArgs, and waits
// until /healthz answers. It is stopped when the test ends; its log is printed if the test
// failed.
func Start(t testing.TB, extraArgs ...string) *Instance {
	t.Helper()
	return StartIn(t, "", extraArgs...)
}

// StartWrapped is Start with egressd run by wrapper (see Instance.Wrapper).
func StartWrapped(t testing.TB, wrapper []string, extraArgs ...string) *Instance {
	t.Helper()
	return startInstance(t, "", wrapper, extraArgs)
}

// StartIn is Start with egressd inside the network namespace at nsPath (a test's gateway
// namespace): only its network namespace is switched, so the namespaces it makes for
// sandboxes are visible to the test. Its API listens on 127.0.0.1:8470 of that namespace,
// the proxy on 127.0.0.1:8471, and HTTPClient dials them there.
func StartIn(t testing.TB, nsPath string, extraArgs ...string) *Instance {
	t.Helper()
	return startInstance(t, nsPath, nil, extraArgs)
}

func startInstance(t testing.TB, nsPath string, wrapper, extraArgs []string) *Instance {
	t.Helper()
	in := &Instance{
		t:          t,
		Netns:      nsPath,
		Wrapper:    wrapper,
		DataDir:    filepath.Join(t.TempDir(), "data"),
		Args:       extraArgs,
		HTTPClient: &http.Client{Timeout: 30 * time.Second},
	}
	if nsPath == "" {
		in.APIAddr, in.ProxyAddr = FreePort(t), FreePort(t)
	} else {
		in.APIAddr, in.ProxyAddr = "127.0.0.1:8470", "127.0.0.1:8471"
		in.HTTPClient.Transport = &http.Transport{DialContext: netns.DialIn(nsPath)}
	}
	in.URL = "http://" + in.APIAddr
	in.start()
	t.Cleanup(func() {
		in.Stop()
		if t.Failed() {
			t.Logf("egressd log:\n%s", in.Log())
		}
	})
	// A node that joins a fleet's database finds keys there and writes none: AdminKey is ""
	// for it.
	key, err := os.ReadFile(filepath.Join(in.DataDir, "admin.key"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("egressdtest: admin key: %v", err)
	}
	in.AdminKey = strings.TrimSpace(string(key))
	return in
}

// start runs egressd until /healthz answers. FreePort's ports were free a moment ago, but
// another test process may take one before egressd binds it: on a fresh instance in the
// test's own namespace that collision is retried on new ports (a bounded number of times).
func (in *Instance) start() {
	in.t.Helper()
	for attempt := 0; ; attempt++ {
		ok := in.startOnce()
		if ok {
			return
		}
		fresh := in.Netns == "" && in.cmd != nil && !in.started
		if !fresh || attempt == 4 || !strings.Contains(in.Log(), "address already in use") {
			in.t.Fatalf("egressdtest: egressd exited at start:\n%s", in.Log())
		}
		in.APIAddr, in.ProxyAddr = FreePort(in.t), FreePort(in.t)
		in.URL = "http://" + in.APIAddr
		in.mu.Lock()
		in.log.Reset()
		in.mu.Unlock()
	}
}

// startOnce starts egressd and waits for it; it returns false if egressd exited at start.
func (in *Instance) startOnce() bool {
	in.t.Helper()
	args := append([]string{
		"--api-listen", in.APIAddr,
		"--proxy-listen", in.ProxyAddr,
		"--data-dir", in.DataDir,
		"--api-rate-limit", "0",
		"--secrets-key-file", SecretsKeyFile(in.t),
	}, in.Args...)
	in.mu.Lock()
	if in.log == nil {
		in.log = &bytes.Buffer{}
	}
	argv := append(append(slices.Clone(in.Wrapper), Binary(in.t, "egressd")), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = lockedWriter{&in.mu, in.log}
	cmd.Stderr = lockedWriter{&in.mu, in.log}
	cmd.Env = cleanEnv()
	in.cmd = cmd
	in.mu.Unlock()
	var err error
	if in.Netns == "" {
		err = cmd.Start()
	} else {
		err = netns.StartIn(in.Netns, cmd)
	}
	if err != nil {
		in.t.Fatalf("egressdtest: start egressd: %v", err)
	}
	exited := make(chan struct{})
	in.exited = exited
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		resp, err := in.HTTPClient.Get(in.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				in.started = true
				return true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	in.t.Fatalf("egressdtest: egressd did not answer /healthz in 15s:\n%s", in.Log())
	return false
}

// cleanEnv drops EGRESSD_* variables of the developer's shell, which would change flags.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EGRESSD_") {
			env = append(env, kv)
		}
	}
	return env
}

// PID is the process ID of the running egressd.
func (in *Instance) PID() int { return in.cmd.Process.Pid }

// Kill ends egressd with SIGKILL, as a crash would, and waits for it to go.
func (in *Instance) Kill() { in.signal(syscall.SIGKILL) }

// Stop ends egressd with SIGTERM (SIGKILL after 10 s) and waits for it to go.
func (in *Instance) Stop() { in.signal(syscall.SIGTERM) }

func (in *Instance) signal(sig syscall.Signal) {
	if in.cmd == nil || in.exited == nil {
		return
	}
	select {
	case <-in.exited:
		return
	default:
	}
	_ = in.cmd.Process.Signal(sig)
	select {
	case <-in.exited:
	case <-time.After(10 * time.Second):
		_ = in.cmd.Process.Kill()
		<-in.exited
	}
}

// Signal sends sig to egressd and returns at once; Wait tells how it ended.
func (in *Instance) Signal(sig syscall.Signal) {
	in.t.Helper()
	if err := in.cmd.Process.Signal(sig); err != nil {
		in.t.Fatalf("egressdtest: signal %v: %v", sig, err)
	}
}

// Wait waits up to limit for egressd to exit and returns its exit status; it fails the test
// when egressd is still running then (and kills it).
func (in *Instance) Wait(limit time.Duration) int {
	in.t.Helper()
	select {
	case <-in.exited:
	case <-time.After(limit):
		_ = in.cmd.Process.Kill()
		<-in.exited
		in.t.Fatalf("egressdtest: egressd still ran %s later", limit)
	}
	return in.cmd.ProcessState.ExitCode()
}

// Restart stops egressd (gracefully) and starts it again on the same ports and data.
func (in *Instance) Restart() {
	in.t.Helper()
	in.Stop()
	in.start()
}

// Log is what egressd has written so far.
func (in *Instance) Log() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.log.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
