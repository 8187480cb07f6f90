package netns

import (
	"os"
	"strings"
	"testing"
)

// TestDeleteLeavesAnotherGatewaysNamespace: gateways on one host share /run/netns and
// /etc/netns. A name a gateway listed a moment ago (a resolv.conf directory whose namespace
// was gone: a reboot, or the other gateway deleting it) may be another gateway's namespace
// again by the time it deletes it as an orphan: Delete leaves another gateway's namespace,
// and its resolv.conf, alone.
func TestDeleteLeavesAnotherGatewaysNamespace(t *testing.T) {
	g1, g2 := newGateway(t), newGateway(t)
	resolv := t.TempDir() // shared, as /etc/netns is
	m1 := NewManager(WithGatewayNS(g1.h), WithResolvDir(resolv))
	m2 := NewManager(WithGatewayNS(g2.h), WithResolvDir(resolv))
	a := attachment(t, m1, 0)
	if err := m1.Create(a); err != nil {
		t.Fatal(err)
	}
	// The namespace is lost (a reboot loses /run/netns, not /etc/netns): the other gateway
	// lists what is left of it, which is no one's to tell.
	if err := RemoveNS(a.Path); err != nil {
		t.Fatal(err)
	}
	list, err := m2.List()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gateway 2 lists %v", list)
	// Its gateway makes it again, and then the other one deletes the name it listed.
	if err := m1.Create(a); err != nil {
		t.Fatal(err)
	}
	if err := m2.Delete(a.Name); err == nil || !strings.Contains(err.Error(), "another gateway") {
		t.Errorf("gateway 2 deleting gateway 1's sandbox: %v, want a refusal", err)
	}
	if _, err := os.Stat(m1.ResolvConf(a.Name)); err != nil {
		t.Errorf("gateway 1's resolv.conf: %v", err)
	}
	checkAttached(t, g1, m1, a)
	// An empty namespace of the name (a Create cut short) is anybody's to delete.
	b := attachment(t, m1, 1)
	if err := CreateNS(b.Path); err != nil {
		t.Fatal(err)
	}
	if err := m2.Delete(b.Name); err != nil {
		t.Errorf("deleting an empty namespace: %v", err)
	}
	if _, err := os.Lstat(b.Path); !os.IsNotExist(err) {
		t.Errorf("the empty namespace is still there: %v", err)
	}
}
