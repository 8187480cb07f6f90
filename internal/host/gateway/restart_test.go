package gateway

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/host/netns"
)

// attachment is the network of a tenant's VM on the i-th /30 of the sandbox range.
func attachment(t *testing.T, tenant, id string, i int) netns.Attachment {
	t.Helper()
	alloc, err := netns.NewAllocator(sandboxRange)
	if err != nil {
		t.Fatal(err)
	}
	subnet, err := alloc.Subnet(i)
	if err != nil {
		t.Fatal(err)
	}
	a, err := netns.NewAttachment(tenant, id, subnet, "")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// stored is the network that a VM on the i-th /30 has in the store.
func stored(t *testing.T, tenant, id string, i int) store.Network {
	return network(attachment(t, tenant, id, i))
}

// restarted is a gateway about to start over networks an earlier run left: a's survived,
// b's did not (a reboot), o's VM was deleted while egressd was down, and f is a namespace
// of another gateway that shares the namespace directory.
func restarted(t *testing.T) (w *world, orphan, foreign string) {
	w = newWorld(t, time.Hour)
	for i, id := range []string{"a", "b"} {
		n := stored(t, "t", id, i)
		w.store.put(store.VM{Tenant: "t", ID: id, Network: n})
		w.view.put(VM{Tenant: "t", ID: id, Network: n, Allowed: pfx("203.0.113.0/24")})
	}
	w.store.put(store.VM{Tenant: "t", ID: "plain", Network: store.Network{Mode: "none"}})
	w.nets.Put(attachment(t, "t", "a", 0))
	o := attachment(t, "t", "o", 2)
	w.nets.Put(o)
	foreign = netns.Name("other", "f")
	w.nets.Foreign(foreign)
	return w, o.Name, foreign
}

func TestRestartReadoptsNamespaces(t *testing.T) {
	w, orphan, _ := restarted(t)
	w.run()
	want := []string{
		"forwarding on",
		"repair " + netns.Name("t", "a"),
		"create " + netns.Name("t", "b"),
		"delete " + orphan,
	}
	if ops := w.nets.Ops(); !slices.Equal(ops, want) {
		t.Errorf("namespace changes:\n%s\nwant:\n%s", strings.Join(ops, "\n"), strings.Join(want, "\n"))
	}
	golden(t, "adopted.netns", w.nets.Dump())
	w.golden("adopted")
	if err := w.gw.Ready(); err != nil {
		t.Errorf("Ready = %v", err)
	}
}

func TestRestartStopsAtAnotherGatewaysNamespace(t *testing.T) {
	w, _, _ := restarted(t)
	// The name of c's namespace is taken by another gateway's, in the shared directory.
	c := stored(t, "t", "c", 3)
	w.store.put(store.VM{Tenant: "t", ID: "c", Network: c})
	w.view.put(VM{Tenant: "t", ID: "c", Network: c})
	w.nets.Foreign(c.Netns)
	err := w.gw.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), c.Netns) {
		t.Fatalf("Run = %v, want an error that names %s", err, c.Netns)
	}
	if n := strings.Count(w.nets.Dump(), "another gateway's"); n != 2 {
		t.Errorf("%d namespaces of another gateway left, want both:\n%s", n, w.nets.Dump())
	}
	// The table came first: whatever is up is governed by it.
	if got := w.fw.Sandboxes(); len(got) != 3 {
		t.Errorf("the table names %v, want the view's three VMs", got)
	}
}
