package firewall

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// transitionStates are the golden states and two more, so that transitions add, remove
// and rename sandboxes, change allowed sets, ports, the interface prefix, hard deny and FastPath.
func transitionStates() map[string]Desired {
	m := goldenStates()
	changed := withSandboxes(
		sbx(0, "vm-a", "203.0.113.0/24"), // vm-a's allowed set changed
		sbx(2, "vm-c", "198.51.100.0/25", "203.0.113.0/24"),
		sbx(3, "vm-d", "198.51.100.200/32"), // vm-b gone, vm-d new
	)
	changed.ProxyPort, changed.DNSPort = 16001, 16053
	m["three-changed"] = changed
	prefixed := withSandboxes(sbx(0, "vm-a", "198.51.100.0/24"))
	prefixed.IfacePrefix = "egvm"
	prefixed.HardDeny = pfx("203.0.113.99/32")
	m["one-prefixed"] = prefixed
	return m
}

// references applies every state, each in a fresh namespace, and returns the dumps.
func references(t *testing.T, states map[string]Desired) map[string]string {
	t.Helper()
	refs := make(map[string]string, len(states))
	for name, d := range states {
		ns := newNetNS(t, "ref")
		if err := ns.firewall().Apply(d); err != nil {
			t.Fatalf("Apply(%s): %v", name, err)
		}
		refs[name] = ns.dump(t)
		if refs[name] == "" {
			t.Fatalf("Apply(%s) left no table", name)
		}
	}
	return refs
}

func sortedNames(m map[string]Desired) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// What Apply installs is exactly what Render prints: nft loading Render's text gives the
// same table, rule for rule, element for element, comment for comment. Apply is idempotent.
// The fast path's queue rule is the one exception nft cannot load: Apply installs the
// xtables NFQUEUE target (queue), nft's text loads nft's own queue expression, which this
// kernel may lack; the comparison puts a drop in its place on both sides, and checkQueue
// reads the target back.
func TestApplyEqualsRender(t *testing.T) {
	t.Parallel()
	requireKernel(t)
	for name, d := range goldenStates() {
		t.Run(name, func(t *testing.T) {
			applied, loaded := newNetNS(t, "apply"), newNetNS(t, "load")
			fw := applied.firewall()
			if err := fw.Apply(d); err != nil {
				t.Fatal(err)
			}
			loaded.nftInput(t, queueAsDrop(Render(d)))
			got, want := applied.dump(t), loaded.dump(t)
			if got := xtQueueAsDrop(got); got != want {
				t.Fatalf("Apply installed\n%s\nnft -f Render gave\n%s", got, want)
			}
			if !d.FastPath { // nft list cannot print the xt target
				if a, b := applied.listTable(t, "inet", TableName), loaded.listTable(t, "inet", TableName); a != b {
					t.Fatalf("nft list differs:\n%s\n%s", a, b)
				}
			}
			if err := fw.Apply(d); err != nil {
				t.Fatal(err)
			}
			if again := applied.dump(t); again != got {
				t.Fatalf("second Apply changed the table:\n%s", again)
			}
			checkStructure(t, applied, d)
			st, err := validate(d)
			if err != nil {
				t.Fatal(err)
			}
			checkElements(t, applied, build(st))
			checkQueue(t, applied, st)
		})
	}
}

// checkStructure reads the table back through the netlink library: no owner or dormant
// flag (the table outlives egressd), the base chains and their hooks, one chain triple and
// one allow set per sandbox.
func checkStructure(t *testing.T, ns *netNS, d Desired) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.h)))
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	if tbl.Flags != 0 {
		t.Errorf("table flags = %#x, want 0 (an owner flag would delete the rules when egressd dies)", tbl.Flags)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	type hook struct {
		typ  nftables.ChainType
		hook nftables.ChainHook
		prio nftables.ChainPriority
	}
	want := map[string]hook{
		chainRaw:     {nftables.ChainTypeFilter, *nftables.ChainHookPrerouting, -300},
		chainNATPre:  {nftables.ChainTypeNAT, *nftables.ChainHookPrerouting, -100},
		chainInput:   {nftables.ChainTypeFilter, *nftables.ChainHookInput, 0},
		chainForward: {nftables.ChainTypeFilter, *nftables.ChainHookForward, 0},
		chainNATPost: {nftables.ChainTypeNAT, *nftables.ChainHookPostrouting, 100},
		chainFragPre: {nftables.ChainTypeFilter, *nftables.ChainHookPrerouting, fragPrio},
	}
	regular := 0
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			continue
		}
		if ch.Hooknum == nil {
			regular++
			continue
		}
		w, ok := want[ch.Name]
		if !ok || ch.Type != w.typ || *ch.Hooknum != w.hook || *ch.Priority != w.prio ||
			ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept {
			t.Errorf("base chain %s: type %s hook %v prio %v policy %v", ch.Name, ch.Type, *ch.Hooknum, *ch.Priority, ch.Policy)
		}
		delete(want, ch.Name)
	}
	if !d.FastPath {
		delete(want, chainFragPre)
	}
	if len(want) != 0 || regular != 3*len(d.Sandboxes) {
		t.Errorf("missing base chains %v; %d regular chains for %d sandboxes", want, regular, len(d.Sandboxes))
	}
	sets, err := c.GetSets(tbl)
	if err != nil {
		t.Fatal(err)
	}
	fastSets := 0
	for _, s := range d.Sandboxes {
		if d.FastPath && !s.Monitor {
			fastSets++
		}
	}
	if len(sets) != 5+2*len(d.Sandboxes)+fastSets {
		t.Errorf("%d sets and maps, want %d", len(sets), 5+2*len(d.Sandboxes)+fastSets)
	}
	for _, s := range d.Sandboxes {
		set, err := c.GetSetByName(tbl, prefixAllow+s.Name)
		if err != nil || !set.Interval || set.KeyType.Name != nftables.TypeIPAddr.Name {
			t.Errorf("allow set of %s: %+v, %v", s.Name, set, err)
		}
		set, err = c.GetSetByName(tbl, prefixTCP+s.Name)
		if err != nil || !set.Concatenation || !set.HasTimeout || set.Interval || set.KeyType.Name != tcpKeyType.Name {
			t.Errorf("tcp set of %s: %+v, %v", s.Name, set, err)
		}
	}
}

// Random transitions between seven states (seeded, bounded) always end in exactly the table
// a fresh Apply of the last state gives; foreign tables are never touched; Remove deletes
// egressd's table only, and is idempotent.
func TestTransitions(t *testing.T) {
	t.Parallel()
	requireKernel(t)
	states := transitionStates()
	refs := references(t, states)
	names := sortedNames(states)

	ns := newNetNS(t, "subject")
	ns.nftInput(t, `table inet other {
	set s {
		type ipv4_addr
		elements = { 203.0.113.5 }
	}
	chain guard {
		type filter hook forward priority -5; policy accept;
		ip daddr @s counter drop comment "not egressd's"
	}
}
table ip filter {
	chain INPUT {
		type filter hook input priority 0; policy accept;
		tcp dport 8470 accept
	}
}
`)
	foreign := ns.listTable(t, "inet", "other") + ns.listTable(t, "ip", "filter")
	fw := ns.firewall()

	const seed, steps = 20260517, 40
	rng := rand.New(rand.NewPCG(seed, seed))
	var path []string
	for i := 0; i < steps; i++ {
		name := names[rng.IntN(len(names))]
		path = append(path, name)
		if err := fw.Apply(states[name]); err != nil {
			t.Fatalf("step %d (%v): %v", i, path, err)
		}
		if got := ns.dump(t); got != refs[name] {
			t.Fatalf("after %v the table differs from a fresh Apply of %s:\n%s\nwant\n%s", path, name, got, refs[name])
		}
		if f := ns.listTable(t, "inet", "other") + ns.listTable(t, "ip", "filter"); f != foreign {
			t.Fatalf("after %v a foreign table changed:\n%s", path, f)
		}
	}
	t.Logf("seed %d: %s", seed, strings.Join(path, " → "))

	for i := 0; i < 2; i++ {
		if err := fw.Remove(); err != nil {
			t.Fatalf("Remove #%d: %v", i+1, err)
		}
		if got := ns.dump(t); got != "" {
			t.Fatalf("Remove left\n%s", got)
		}
	}
	if f := ns.listTable(t, "inet", "other") + ns.listTable(t, "ip", "filter"); f != foreign {
		t.Fatalf("Remove changed a foreign table:\n%s", f)
	}
	if err := fw.Apply(states["three"]); err != nil || ns.dump(t) != refs["three"] {
		t.Fatalf("Apply after Remove: %v", err)
	}
}

// Apply rebuilds the whole table, so whatever was changed in it by hand is undone.
func TestApplyUndoesTampering(t *testing.T) {
	requireKernel(t)
	d := goldenStates()["three"]
	ref := references(t, map[string]Desired{"three": d})["three"]
	ns := newNetNS(t, "tamper")
	fw := ns.firewall()
	if err := fw.Apply(d); err != nil {
		t.Fatal(err)
	}
	ns.nftInput(t, `flush chain inet egressd forward
delete element inet egressd hard_deny { 169.254.0.0/16 }
add element inet egressd allow_vm-a { 169.254.169.254 }
insert rule inet egressd raw_pre accept
add chain inet egressd extra
add set inet egressd extra_set { type ipv4_addr; }
`)
	if ns.dump(t) == ref {
		t.Fatal("tampering did not change the table")
	}
	if err := fw.Apply(d); err != nil {
		t.Fatal(err)
	}
	if got := ns.dump(t); got != ref {
		t.Fatalf("Apply did not restore the table:\n%s", got)
	}
}

// A batch the kernel refuses changes nothing: the previous table stays whole.
func TestFailedApplyKeepsPreviousTable(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t, "atomic")
	fw := ns.firewall()
	states := goldenStates()
	if err := fw.Apply(states["one"]); err != nil {
		t.Fatal(err)
	}
	before := ns.dump(t)
	st, err := validate(states["three"])
	if err != nil {
		t.Fatal(err)
	}
	p := build(st)
	last := p.chains[len(p.chains)-1]
	last.rules = append(last.rules, newRule("", frag{"goto nowhere", []expr.Any{
		&expr.Verdict{Kind: expr.VerdictGoto, Chain: "no-such-chain"},
	}, false, 0}))
	if err := fw.install(p); err == nil {
		t.Fatal("the kernel accepted a goto to a missing chain")
	}
	if got := ns.dump(t); got != before {
		t.Fatalf("a failed Apply changed the table:\n%s", got)
	}
}

// Concurrent Applies are serialised; the table ends as one of the applied states.
func TestConcurrentApply(t *testing.T) {
	t.Parallel()
	requireKernel(t)
	states := transitionStates()
	refs := references(t, states)
	names := sortedNames(states)
	ns := newNetNS(t, "concurrent")
	fw := ns.firewall()
	var wg sync.WaitGroup
	errs := make(chan error, 4*5)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				errs <- fw.Apply(states[names[(g+i)%len(names)]])
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got := ns.dump(t)
	for _, ref := range refs {
		if got == ref {
			return
		}
	}
	t.Fatalf("after concurrent Applies the table is none of the states:\n%s", got)
}

// Large states install whole: hundreds of sandboxes (beyond what the default netlink
// socket buffers carry in one batch) and allowed and hard-deny sets of 10,000 ranges (the
// policy limit; an element list longer than a netlink attribute holds would otherwise be
// cut short without an error). Every set holds exactly the elements of the plan.
func TestLargeState(t *testing.T) {
	t.Parallel()
	requireKernel(t)
	var many []Sandbox
	for i := 0; i < 300; i++ {
		many = append(many, sbx(i, fmt.Sprintf("vm%d", i), "198.51.100.0/24", "203.0.113.7/32"))
	}
	big := sbx(0, "big")
	for i := 0; i < 10000; i++ {
		big.Allowed = append(big.Allowed, netip.PrefixFrom(addr4(u32(ip("198.18.0.0"))+uint32(2*i)), 32))
	}
	bigDeny := withSandboxes(big)
	bigDeny.HardDeny = append(bigDeny.HardDeny, big.Allowed...)
	bigDeny.Sandboxes[0].Allowed = nil
	bigTCP := sbx(0, "bigtcp")
	for i := 0; i < 10000; i++ {
		bigTCP.TCP = append(bigTCP.TCP, Endpoint{Addr: addr4(u32(ip("198.18.0.0")) + uint32(i)), Port: uint16(1 + i%3), Timeout: time.Hour})
	}
	for name, d := range map[string]Desired{"300 sandboxes": withSandboxes(many...), "10000 allowed": withSandboxes(big), "10000 denied": bigDeny, "10000 tcp": withSandboxes(bigTCP)} {
		t.Run(name, func(t *testing.T) {
			ns := newNetNS(t, "large")
			if err := ns.firewall().Apply(d); err != nil {
				t.Fatal(err)
			}
			st, err := validate(d)
			if err != nil {
				t.Fatal(err)
			}
			checkElements(t, ns, build(st))
		})
	}
}

// checkElements compares every set's elements in the kernel with the plan's.
func checkElements(t *testing.T, ns *netNS, p *plan) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.h)))
	if err != nil {
		t.Fatal(err)
	}
	// Keys only: the library does not decode a vmap element's verdict when reading
	// (the nft dumps of TestApplyEqualsRender compare those).
	key := func(e nftables.SetElement) string { return fmt.Sprintf("%x/%v", e.Key, e.IntervalEnd) }
	for _, s := range p.sets {
		set, err := c.GetSetByName(&nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}, s.name)
		if err != nil {
			t.Fatalf("set %s: %v", s.name, err)
		}
		got, err := c.GetSetElements(set)
		if err != nil {
			t.Fatalf("set %s: %v", s.name, err)
		}
		var g, w []string
		for _, e := range got {
			g = append(g, key(e))
		}
		for _, e := range s.elems {
			w = append(w, key(e))
		}
		sort.Strings(g)
		sort.Strings(w)
		if !slices.Equal(g, w) {
			t.Errorf("set %s: the kernel holds %d elements, the plan %d", s.name, len(g), len(w))
		}
	}
}
