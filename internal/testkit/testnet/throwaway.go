package testnet

import (
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"testing"

	vnetns "github.com/vishvananda/netns"
)

// NewNetNS makes a throwaway network namespace named prefix-<random>, with its loopback up,
// and deletes it when the test ends. It returns the name and a handle that the test's
// cleanup closes. It fails the test rather than hand back the test's own namespace, so that
// a test can never put rules or routes there. The caller checks for root and for ip(8).
func NewNetNS(t testing.TB, prefix string) (string, vnetns.NsHandle) {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := prefix + "-" + hex.EncodeToString(b[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	h, err := vnetns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	self, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	if h <= 0 || h.Equal(self) {
		t.Fatalf("namespace %s is the test's own: refusing to go on", name)
	}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s link set lo up: %v: %s", name, err, out)
	}
	return name, h
}
