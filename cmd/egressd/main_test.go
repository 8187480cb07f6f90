package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

func TestMain(m *testing.M) { egressdtest.Main(m) }

// busy is an egressd with work that does not end by itself: a CONNECT tunnel through its
// proxy and a follower of its events stream.
type busy struct {
	in     *egressdtest.Instance
	tunnel net.Conn
	stream io.ReadCloser
}

// startBusy starts egressd with --drain-timeout drain and opens the tunnel and the stream.
func startBusy(t *testing.T, drain string) *busy {
	t.Helper()
	in := egressdtest.Start(t, egressdtest.TunnelArgs("--drain-timeout", drain)...)
	c, err := client.New(in.URL, in.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateVM(context.Background(), client.CreateVMRequest{VMID: "drain-vm"}); err != nil {
		t.Fatal(err)
	}
	b := &busy{in: in, tunnel: egressdtest.OpenTunnel(t, c, "drain-vm")}

	req, _ := http.NewRequest(http.MethodGet, in.URL+"/v1/egress/events?follow=true", nil)
	req.Header.Set("Authorization", "Bearer "+in.AdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("events?follow=true: %s", resp.Status)
	}
	b.stream = resp.Body
	return b
}

// ended reports whether r reaches its end (or fails) within 30 s.
func ended(r io.Reader) bool {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, r)
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(30 * time.Second):
		return false
	}
}

// TestSIGTERMDrainsAndExitsZero: with a tunnel and an events follower open, SIGTERM drains
// for --drain-timeout, closes what is left, and egressd exits 0: each part of the drain has
// its own budget, so the tunnel that never ends does not leave the API an expired one.
func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			b := startBusy(t, "2s")
			b.in.Signal(sig)
			if code := b.in.Wait(30 * time.Second); code != 0 {
				t.Errorf("exit status %d after %v with a tunnel and a follower open, want 0\n%s", code, sig, b.in.Log())
			}
			if log := b.in.Log(); !strings.Contains(log, "draining 1 connections (up to 2s)") {
				t.Errorf("the log does not say what it drains:\n%s", log)
			}
			if !ended(b.tunnel) || !ended(b.stream) {
				t.Error("the tunnel or the events stream is still open after egressd exited")
			}
		})
	}
}

// TestSecondSignalExitsAtOnce: a second signal does not wait for a drain that would take a
// minute; the exit status says which signal ended egressd (128 + its number).
func TestSecondSignalExitsAtOnce(t *testing.T) {
	b := startBusy(t, "1m")
	b.in.Signal(syscall.SIGTERM)
	waitFor(t, b.in, "draining 1 connections (up to 1m0s)")
	b.in.Signal(syscall.SIGTERM)
	if code := b.in.Wait(30 * time.Second); code != 128+int(syscall.SIGTERM) {
		t.Errorf("exit status %d after a second SIGTERM, want %d\n%s", code, 128+int(syscall.SIGTERM), b.in.Log())
	}
}

// waitFor waits (up to 10 s) until egressd's log says want.
func waitFor(t *testing.T, in *egressdtest.Instance, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(in.Log(), want) {
			return
		}
	}
	t.Fatalf("the log never said %q:\n%s", want, in.Log())
}

// TestVersion: --version prints the build, and a release build's link-time version and
// commit are what it prints.
func TestVersion(t *testing.T) {
	out, err := exec.Command(egressdtest.Binary(t, "egressd"), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "egressd ") || !strings.Contains(string(out), "go1.") {
		t.Errorf("egressd --version: %v\n%s", err, out)
	}

	bin := filepath.Join(t.TempDir(), "egressd")
	const pkg = "github.com/egressd/egressd/internal/process/buildinfo"
	build := exec.Command("go", "build", "-o", bin, "-ldflags", "-X "+pkg+".Version=v9.8.7-test -X "+pkg+".Commit=feedface0123456789", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build with -ldflags: %v\n%s", err, out)
	}
	// The environment twin of --version is not read: EGRESSD_VERSION=true must not stop a
	// daemon from starting, so only the flag prints.
	cmd := exec.Command(bin, "--version")
	cmd.Env = append(os.Environ(), "EGRESSD_VERSION=not-a-bool")
	out, err = cmd.CombinedOutput()
	if want := "egressd v9.8.7-test (commit feedface0123, " + strings.TrimSpace(goVersion(t)) + ")\n"; err != nil || string(out) != want {
		t.Errorf("egressd --version of a release build: %v\n%q, want %q", err, out, want)
	}
}

// goVersion is the version of the toolchain that builds the binaries.
func goVersion(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
