// Package testnet is a fake internet for end-to-end tests: a test CA, an authoritative DNS
// server whose answers the test sets, and web servers (HTTP on 80, HTTPS on 443) that answer
// for any name the CA signs, including a fake PyPI. Everything listens on addresses the test
// chooses, which are loopback addresses or addresses inside network namespaces the test made
// (DESIGN §10): even a bug cannot send a packet off the machine.
package testnet

import (
	"os"
	"testing"
)

// RequireRoot skips a test that needs root (ports 80 and 443, network namespaces) on a
// developer's machine, and fails it under CI=true, where a skip would hide a missing setup.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (ports 80/443 or network namespaces); CI runs as root")
	}
	t.Skip("needs root: binds ports 80/443 on loopback addresses")
}

// Require fails (CI=true) or skips (otherwise) when ok is false.
func Require(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing; .ci/run must install it", what)
	}
	t.Skipf("%s is missing", what)
}
