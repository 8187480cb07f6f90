package gateway

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/policy"
)

var gitPolicy = policy.Policy{AllowedTCP: []string{"git.example.test:22"}}

// TestLookupOpensOnlyTheAskingVM: an answer to one VM opens its set, and no other VM's,
// whatever the other VMs' policies say; an answer that the DNS filter attributes to
// another VM than the source address's opens nothing.
func TestLookupOpensOnlyTheAskingVM(t *testing.T) {
	w := newTCPWorld(t)
	a := w.tcpNode()
	nameA, addrA := a.vm("t", "a", gitPolicy)
	nameB, addrB := a.vm("t", "b", gitPolicy)
	nameC, _ := a.vm("u", "c", gitPolicy)
	if err := a.answer(addrA, "t", "a", "git.example.test", 60, "203.0.113.10"); err != nil {
		t.Fatal(err)
	}
	if got, want := a.fw.kernel.elements(nameA), []string{"203.0.113.10 . 22 for 2m0s"}; !slices.Equal(got, want) {
		t.Errorf("A's set %v, want %v", got, want)
	}
	golden(t, "tcp-admitted.nft", a.fw.Dump())
	for _, n := range []string{nameB, nameC} {
		if got := a.fw.kernel.elements(n); len(got) != 0 {
			t.Errorf("%s's set %v after A's lookup", n, got)
		}
	}
	if !a.fw.kernel.connect(nameA, "203.0.113.10", 22) || a.fw.kernel.connect(nameB, "203.0.113.10", 22) {
		t.Error("A connects, B does not: wrong")
	}
	// Forged or stale identities: the source address is the VM, and both must agree.
	for _, c := range []struct {
		src        netip.Addr
		tenant, id string
	}{
		{addrA, "t", "b"}, {addrB, "t", "a"}, {addrA, "u", "a"},
		{netip.MustParseAddr("100.96.0.250"), "t", "a"}, {netip.Addr{}, "t", "a"},
	} {
		if err := a.answer(c.src, c.tenant, c.id, "git.example.test", 60, "203.0.113.11"); err == nil {
			t.Errorf("answer from %v as %s/%s: no error", c.src, c.tenant, c.id)
		}
	}
	for _, n := range []string{nameA, nameB, nameC} {
		if got := a.fw.kernel.elements(n); slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "203.0.113.11 ") }) {
			t.Errorf("%s's set %v holds the forged answer's address", n, got)
		}
	}
}

// TestAdmissionsFollowThePolicy: what an answer opens is what TCPPorts and Decide allow,
// address by address.
func TestAdmissionsFollowThePolicy(t *testing.T) {
	cases := []struct {
		name  string
		p     policy.Policy
		host  string
		addrs []string
		want  []string
	}{
		{"listed name, public address", gitPolicy, "git.example.test", []string{"203.0.113.10"}, []string{"203.0.113.10 . 22"}},
		{"every port of the name, every address", policy.Policy{AllowedTCP: []string{"git.example.test:22", "git.example.test:2222", "other.example.test:23"}},
			"git.example.test", []string{"203.0.113.10", "203.0.113.11"},
			[]string{"203.0.113.10 . 22", "203.0.113.10 . 2222", "203.0.113.11 . 22", "203.0.113.11 . 2222"}},
		{"unlisted name", gitPolicy, "other.example.test", []string{"203.0.113.10"}, nil},
		{"private address", gitPolicy, "git.example.test", []string{"198.51.100.7", "203.0.113.10"}, []string{"203.0.113.10 . 22"}},
		{"private address inside allowed_cidrs", policy.Policy{AllowedTCP: gitPolicy.AllowedTCP, AllowedCIDRs: []string{"198.51.100.0/28"}},
			"git.example.test", []string{"198.51.100.7"}, []string{"198.51.100.7 . 22"}},
		{"hard-denied address", policy.Policy{AllowedTCP: gitPolicy.AllowedTCP, AllowedCIDRs: []string{"198.51.100.0/24"}},
			"git.example.test", []string{"198.51.100.53"}, nil},
		{"loopback and link-local", gitPolicy, "git.example.test", []string{"127.0.0.1", "169.254.169.254"}, nil},
		{"denied_domains wins", policy.Policy{AllowedTCP: []string{"*.example.test:22"}, DeniedDomains: []string{"git.example.test"}},
			"git.example.test", []string{"203.0.113.10"}, nil},
		{"wildcard: a name under it", policy.Policy{AllowedTCP: []string{"*.example.test:22"}}, "a.b.example.test", []string{"203.0.113.10"}, []string{"203.0.113.10 . 22"}},
		{"wildcard: not the apex", policy.Policy{AllowedTCP: []string{"*.example.test:22"}}, "example.test", []string{"203.0.113.10"}, nil},
		{"web ports never", policy.Policy{AllowedTCP: []string{"git.example.test:443", "git.example.test:80"}, AllowHTTPS: true},
			"git.example.test", []string{"203.0.113.10"}, nil},
		{"IPv6 ignored", gitPolicy, "git.example.test", []string{"2001:db8::1", "::ffff:203.0.113.12"}, []string{"203.0.113.12 . 22"}},
		{"allowed_domains opens nothing", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"git.example.test"}}, "git.example.test", []string{"203.0.113.10"}, nil},
		{"monitor: what would be denied too", policy.Policy{AllowedTCP: gitPolicy.AllowedTCP, Mode: policy.Monitor},
			"git.example.test", []string{"198.51.100.7"}, []string{"198.51.100.7 . 22"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newTCPWorld(t)
			a := w.tcpNode()
			name, addr := a.vm("t", "a", c.p)
			if err := a.answer(addr, "t", "a", c.host, 30, c.addrs...); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range a.fw.kernel.elements(name) {
				got = append(got, strings.TrimSuffix(e, " for 2m0s"))
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("opened %v, want %v", got, c.want)
			}
		})
	}
}

// TestAdmissionLifetime: max(TTL, min) + grace, never shortened by a later answer; an
// expired pair takes no new connection, while one established before stays up; the next
// apply no longer carries it.
func TestAdmissionLifetime(t *testing.T) {
	w := newTCPWorld(t)
	a := w.tcpNode()
	name, addr := a.vm("t", "a", policy.Policy{AllowedTCP: []string{"git.example.test:22", "db.example.test:5432"}})
	must(t, a.answer(addr, "t", "a", "git.example.test", 0, "203.0.113.10"))
	must(t, a.answer(addr, "t", "a", "db.example.test", 300, "203.0.113.20"))
	want := []string{"203.0.113.10 . 22 for 2m0s", "203.0.113.20 . 5432 for 6m0s"}
	if got := a.fw.kernel.elements(name); !slices.Equal(got, want) {
		t.Fatalf("set %v, want %v", got, want)
	}
	// A shorter answer later keeps the longer lifetime.
	a.clock.add(time.Minute)
	must(t, a.answer(addr, "t", "a", "db.example.test", 10, "203.0.113.20"))
	if got, want := a.fw.kernel.elements(name), []string{"203.0.113.10 . 22 for 1m0s", "203.0.113.20 . 5432 for 5m0s"}; !slices.Equal(got, want) {
		t.Errorf("after a shorter answer: %v, want %v", got, want)
	}
	if !a.fw.kernel.connect(name, "203.0.113.10", 22) {
		t.Fatal("no connection before expiry")
	}
	a.clock.add(time.Minute)
	if a.fw.kernel.connect(name, "203.0.113.10", 22) {
		t.Error("a new connection after expiry")
	}
	a.gw.mu.Lock()
	must(t, a.gw.applyLocked(true))
	a.gw.mu.Unlock()
	if got, want := a.fw.kernel.elements(name), []string{"203.0.113.20 . 5432 for 4m0s"}; !slices.Equal(got, want) {
		t.Errorf("after expiry and an apply: %v, want %v", got, want)
	}
	if got := a.fw.kernel.open(name); !slices.Equal(got, []string{"203.0.113.10:22"}) {
		t.Errorf("established flows %v: the expired pair's connection must stay up", got)
	}
}

// TestApplyKeepsAdmissions: every apply (another VM coming, a policy change that keeps the
// entry, a resync) carries the live admissions with their remaining lifetimes.
func TestApplyKeepsAdmissions(t *testing.T) {
	w := newTCPWorld(t)
	a := w.tcpNode()
	name, addr := a.vm("t", "a", gitPolicy)
	must(t, a.answer(addr, "t", "a", "git.example.test", 100, "203.0.113.10"))
	if !a.fw.kernel.connect(name, "203.0.113.10", 22) {
		t.Fatal("no connection")
	}
	steps := []struct {
		what string
		do   func()
	}{
		{"another VM", func() { a.vm("t", "b", gitPolicy) }},
		{"a policy change keeping the entry", func() {
			a.setTCPPolicy("t", "a", policy.Policy{AllowedTCP: []string{"git.example.test:22", "x.example.test:23"}, AllowedCIDRs: []string{"198.51.100.0/28"}})
		}},
		{"a forced apply", func() {
			a.gw.mu.Lock()
			defer a.gw.mu.Unlock()
			must(t, a.gw.applyLocked(true))
		}},
	}
	left := 160 * time.Second
	for _, s := range steps {
		before, _ := a.fw.Applies()
		a.clock.add(10 * time.Second)
		left -= 10 * time.Second
		s.do()
		if after, _ := a.fw.Applies(); after == before {
			t.Fatalf("%s: no apply", s.what)
		}
		want := []string{"203.0.113.10 . 22 for " + left.String()}
		if got := a.fw.kernel.elements(name); !slices.Equal(got, want) {
			t.Errorf("after %s: %v, want %v", s.what, got, want)
		}
	}
	if got := a.fw.kernel.open(name); !slices.Equal(got, []string{"203.0.113.10:22"}) {
		t.Errorf("connections %v: cut though nothing tightened", got)
	}
	golden(t, "tcp.nft", a.fw.Dump())
}

// TestTighteningRemovesAndCuts: a policy change that no longer allows an admitted pair
// removes it from the set and cuts its connections, those whose element expired
// included; pairs still allowed keep their elements and connections.
func TestTighteningRemovesAndCuts(t *testing.T) {
	both := policy.Policy{AllowedTCP: []string{"git.example.test:22", "db.example.test:5432", "old.example.test:22"}}
	cases := []struct {
		name      string
		p         policy.Policy
		elements  []string
		connected []string
	}{
		{"the entry removed", policy.Policy{AllowedTCP: []string{"db.example.test:5432"}},
			[]string{"203.0.113.20 . 5432"}, []string{"203.0.113.20:5432"}},
		{"denied_domains", policy.Policy{AllowedTCP: both.AllowedTCP, DeniedDomains: []string{"*.example.test"}}, nil, nil},
		{"another port", policy.Policy{AllowedTCP: []string{"git.example.test:2222", "db.example.test:5432", "old.example.test:22"}},
			[]string{"203.0.113.20 . 5432"}, []string{"203.0.113.11:22", "203.0.113.20:5432"}},
		{"everything gone", policy.Policy{}, nil, nil},
		{"unrelated loosening", policy.Policy{AllowedTCP: append(slices.Clone(both.AllowedTCP), "new.example.test:1")},
			[]string{"203.0.113.10 . 22", "203.0.113.20 . 5432"}, []string{"203.0.113.10:22", "203.0.113.11:22", "203.0.113.20:5432"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newTCPWorld(t)
			a := w.tcpNode()
			name, addr := a.vm("t", "a", both)
			must(t, a.answer(addr, "t", "a", "old.example.test", 0, "203.0.113.11"))
			if !a.fw.kernel.connect(name, "203.0.113.11", 22) {
				t.Fatal("old: no connection")
			}
			a.clock.add(3 * time.Minute) // old's element expires; its connection stays
			must(t, a.answer(addr, "t", "a", "git.example.test", 60, "203.0.113.10"))
			must(t, a.answer(addr, "t", "a", "db.example.test", 60, "203.0.113.20"))
			for _, e := range []struct {
				ip   string
				port uint16
			}{{"203.0.113.10", 22}, {"203.0.113.20", 5432}} {
				if !a.fw.kernel.connect(name, e.ip, e.port) {
					t.Fatalf("%s:%d: no connection", e.ip, e.port)
				}
			}
			a.fw.kernel.flushes()
			a.setTCPPolicy("t", "a", c.p)
			var got []string
			for _, e := range a.fw.kernel.elements(name) {
				got = append(got, e[:strings.Index(e, " for ")])
			}
			if !slices.Equal(got, c.elements) {
				t.Errorf("set %v, want %v", got, c.elements)
			}
			if got := a.fw.kernel.open(name); !slices.Equal(got, c.connected) {
				t.Errorf("connections %v, want %v", got, c.connected)
			}
			if f := a.fw.kernel.flushes(); !slices.Equal(f, []netip.Addr{addr}) {
				t.Errorf("FlushTCP calls %v, want one for %v", f, addr)
			}
		})
	}
}

// TestVMGoneDropsItsAdmissions: a VM removed takes its book with it; a VM made later at
// the same address opens nothing from the earlier one's answers.
func TestVMGoneDropsItsAdmissions(t *testing.T) {
	w := newTCPWorld(t)
	a := w.tcpNode()
	name, addr := a.vm("t", "a", gitPolicy)
	must(t, a.answer(addr, "t", "a", "git.example.test", 60, "203.0.113.10"))
	a.remove("t", "a")
	a.gw.mu.Lock()
	_, kept := a.gw.tcp[name]
	a.gw.mu.Unlock()
	if kept {
		t.Error("the removed VM's book is kept")
	}
	nameB, addrB := a.vm("t", "b", gitPolicy)
	if addrB != addr {
		t.Fatalf("B got %v, not A's %v: the test needs the address reused", addrB, addr)
	}
	if got := a.fw.kernel.elements(nameB); len(got) != 0 {
		t.Errorf("B's set %v holds A's answer", got)
	}
	if err := a.answer(addr, "t", "a", "git.example.test", 60, "203.0.113.10"); err == nil {
		t.Error("an answer in the removed VM's name opened something")
	}
}

// TestMonitorSandbox: every layer monitor makes the sandbox a monitor one in the table;
// one enforce layer does not.
func TestMonitorSandbox(t *testing.T) {
	w := newTCPWorld(t)
	a := w.tcpNode()
	name, _ := a.vm("t", "a", policy.Policy{Mode: policy.Monitor})
	nameB, _ := a.vm("t", "b", policy.Policy{})
	a.fw.kernel.mu.Lock()
	defer a.fw.kernel.mu.Unlock()
	if !a.fw.kernel.monitor[name] || a.fw.kernel.monitor[nameB] {
		t.Errorf("monitor: %v", a.fw.kernel.monitor)
	}
}

// TestAdmitFailure: the kernel refusing the elements is an error for the DNS filter (which
// answers SERVFAIL), and the book does not claim them.
func TestAdmitFailure(t *testing.T) {
	w := newTCPWorld(t)
	a := w.tcpNode()
	name, addr := a.vm("t", "a", gitPolicy)
	// The table in force loses the sandbox behind the gateway's back: Admit fails.
	a.fw.kernel.mu.Lock()
	delete(a.fw.kernel.sets, name)
	a.fw.kernel.mu.Unlock()
	if err := a.answer(addr, "t", "a", "git.example.test", 60, "203.0.113.10"); err == nil {
		t.Fatal("no error")
	}
	a.gw.mu.Lock()
	n := len(a.gw.tcp[name].admits)
	a.gw.mu.Unlock()
	if n != 0 {
		t.Errorf("the book holds %d admissions the kernel refused", n)
	}
	_ = netns.Name // the names of the sandboxes are netns's
}

// TestTighteningAfterAFailedApply: admissions dropped by a policy change whose apply
// failed leave the kernel with the next apply that succeeds, though nothing else changed.
func TestTighteningAfterAFailedApply(t *testing.T) {
	w := newTCPWorld(t)
	a := w.tcpNode()
	name, addr := a.vm("t", "a", gitPolicy)
	must(t, a.answer(addr, "t", "a", "git.example.test", 60, "203.0.113.10"))
	_, failedBefore := a.fw.Applies()
	a.fw.Fail(errors.New("netlink: the kernel said no"))
	np, _, err := policy.Policy{}.WithDefaults().NormalizeFor(tcpClassifier)
	must(t, err)
	if _, err := w.st.PutPolicy(context.Background(), store.PolicyRecord{Tenant: "t", Scope: store.ScopeVM, ID: "a", Policy: np}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "an apply failed", func() bool { _, failed := a.fw.Applies(); return failed > failedBefore })
	a.fw.Fail(nil)
	a.enforced()
	if got := a.fw.kernel.elements(name); len(got) != 0 {
		t.Errorf("set %v after the retried apply", got)
	}
}

// TestConnectionsOfAnEarlierRun: a restarted gateway knows nothing of the connections the
// previous run admitted (their marks keep them up). Starting cuts none of them; the VM's
// next policy change cuts them all, since none can be judged; a VM made in this run that
// opened nothing costs no conntrack dump.
func TestConnectionsOfAnEarlierRun(t *testing.T) {
	w := newTCPWorld(t)
	w.put("t", "a", on(network(attachment(t, "t", "a", 0)), nodeA, store.NetworkReady))
	np, _, err := gitPolicy.WithDefaults().NormalizeFor(tcpClassifier)
	must(t, err)
	if _, err := w.st.PutPolicy(context.Background(), store.PolicyRecord{Tenant: "t", Scope: store.ScopeVM, ID: "a", Policy: np}); err != nil {
		t.Fatal(err)
	}
	a := w.tcpNode()
	name, addr := netns.Name("t", "a"), attachment(t, "t", "a", 0).Addr
	a.fw.kernel.mu.Lock()
	a.fw.kernel.flows = map[netip.Addr][]endpoint{addr: {{mustIP("203.0.113.10"), 22}}}
	a.fw.kernel.mu.Unlock()
	a.gw.mu.Lock()
	must(t, a.gw.applyLocked(true))
	a.gw.mu.Unlock()
	if got := a.fw.kernel.open(name); len(got) != 1 {
		t.Fatalf("after the start: %v, want the earlier run's connection", got)
	}
	_, _ = a.vm("t", "b", gitPolicy)
	a.fw.kernel.flushes()
	a.setTCPPolicy("t", "a", policy.Policy{AllowedTCP: []string{"git.example.test:22", "x.example.test:1"}})
	if got := a.fw.kernel.open(name); len(got) != 0 {
		t.Errorf("after a policy change: %v, want the unknown connection cut", got)
	}
	a.setTCPPolicy("t", "b", policy.Policy{})
	if f := a.fw.kernel.flushes(); !slices.Equal(f, []netip.Addr{addr}) {
		t.Errorf("FlushTCP for %v, want only A's %v", f, addr)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
