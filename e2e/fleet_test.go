package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/policy"
)

// TestFleet is issue 11's fleet of transparent gateways, shown with real curl inside the
// sandboxes (the lab: fleetlab_test.go). Its parts run in order on one lab, each starting
// from where the previous one left the fleet; a part whose premise failed stops the rest.
func TestFleet(t *testing.T) {
	l := newFleetLab(t)
	f := &fleetRun{lab: l, allowA: "api.example.test", allowB: "other.example.test"}
	// premise: the parts after this one build on what it leaves, so its failure stops them.
	for _, part := range []struct {
		name    string
		run     func(*testing.T)
		premise bool
	}{
		{"nodes are listed", f.nodesListed, false},
		{"placement", f.placement, true},
		{"sandboxes obey their policies", f.policies, false},
		{"wait=fleet", f.waitFleet, true},
		{"overlapping sandbox range refused", f.overlap, false},
		{"node B killed", f.nodeDown, true},
		{"node B restarted", f.nodeBack, true},
		{"delete removes the namespace", f.deletes, false},
	} {
		if !t.Run(part.name, part.run) && part.premise {
			t.Fatalf("stopping after %q failed: the parts after it build on it", part.name)
		}
	}
}

// fleetRun is what the parts of TestFleet hand on to each other.
type fleetRun struct {
	lab *fleetLab
	// onA and onB are the sandboxes curl runs in; allowA and allowB the one name each
	// one's policy allows (the other is denied).
	onA, onB       client.VM
	allowA, allowB string
	spareA, spareB client.VM // a second VM on each node: forwarded traffic; spareA is deleted at the end
	doomed         client.VM // a VM on gw-b, deleted while gw-b is down
}

// other is the name of the pair that is not host.
func other(host string) string {
	if host == "api.example.test" {
		return "other.example.test"
	}
	return "api.example.test"
}

// nodesListed: GET /v1/nodes lists the API node and the two gateways with their roles,
// labels and sandbox ranges.
func (f *fleetRun) nodesListed(t *testing.T) {
	m, err := f.lab.nodesByID()
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(m)); !slices.Equal(got, []string{"api", "gw-a", "gw-b"}) {
		t.Fatalf("GET /v1/nodes lists %v, want api, gw-a and gw-b", got)
	}
	if api := m["api"]; !slices.Equal(api.Roles, []string{"api"}) || api.SandboxCIDR != "" {
		t.Errorf("node api: roles %v, sandbox range %q; want [api] and none", api.Roles, api.SandboxCIDR)
	}
	for _, g := range fleetGateways {
		n := m[g.id]
		if !slices.Contains(n.Roles, "transparent") || slices.Contains(n.Roles, "api") {
			t.Errorf("node %s: roles %v, want a transparent gateway without the API", g.id, n.Roles)
		}
		if n.SandboxCIDR != g.sandboxCIDR || n.Labels["zone"] != g.zone || n.State != "up" {
			t.Errorf("node %s: range %q, labels %v, state %q; want %s, zone=%s, up", g.id, n.SandboxCIDR, n.Labels, n.State, g.sandboxCIDR, g.zone)
		}
	}
}

// placement: a named node gets the VM; without one, the up transparent node with the fewest
// VMs does (ties: the lowest ID); a node_selector must match a node's labels, and one that
// matches none is refused and leaves nothing behind.
func (f *fleetRun) placement(t *testing.T) {
	l := f.lab
	// Counts (gw-a, gw-b) after each create in the comments.
	f.onB = l.readyVM(t, "b1", "gw-b", nil, httpsOnly(f.allowB), "gw-b")    // 0, 1
	f.onA = l.readyVM(t, "auto1", "", nil, httpsOnly(f.allowA), "gw-a")     // 1, 1: fewer VMs
	f.spareA = l.readyVM(t, "auto2", "", nil, nil, "gw-a")                  // 2, 1: a tie, the lowest ID
	f.spareB = l.readyVM(t, "auto3", "", nil, nil, "gw-b")                  // 2, 2: fewer VMs
	l.readyVM(t, "zone-a", "", map[string]string{"zone": "a"}, nil, "gw-a") // 3, 2: the selector over the count
	f.doomed = l.readyVM(t, "auto4", "", nil, httpsOnly(f.allowB), "gw-b")  // 3, 3
	l.readyVM(t, "zone-b", "", map[string]string{"zone": "b"}, nil, "gw-b") // 3, 4: the selector over the tie
	l.readyVM(t, "named-a", "gw-a", nil, nil, "gw-a")                       // 4, 4
	if f.onA.Network.Address == f.onB.Network.Address || f.onA.Network.Netns == f.onB.Network.Netns {
		t.Errorf("two VMs share a network: %+v and %+v", f.onA.Network, f.onB.Network)
	}

	id := l.id("nowhere")
	code, _, e := l.createVM(t, id, "", map[string]string{"zone": "c"}, nil)
	// No node to place it on is the fleet's state, not the request's fault: 503, naming the
	// field (docs/api.md).
	if code != http.StatusServiceUnavailable || e.Code != client.CodeUnavailable || e.Field != "network.node_selector" {
		t.Errorf("a node_selector no node matches: %d %+v, want 503 unavailable naming network.node_selector", code, e)
	}
	if state := l.vmState(t, id); state != "gone" {
		t.Errorf("the refused VM is stored, state %q", state)
	}
	if nsExists(nsName(id)) {
		t.Errorf("the refused VM has a namespace")
	}

	// The nodes report what they hold within a heartbeat or two.
	l.waitNodes(t, 5*time.Second, "the nodes' VM counts (4 and 4)", func(m map[string]client.Node) bool {
		return m["gw-a"].VMs == 4 && m["gw-b"].VMs == 4
	})
}

// policies: real curl inside each sandbox obeys that sandbox's VM policy, and nothing
// reaches the private network. A policy with allowed_cidrs is forwarded in the kernel and
// masqueraded by the sandbox's own gateway: the internet has no route back to the sandbox
// ranges, yet the answer comes back.
func (f *fleetRun) policies(t *testing.T) {
	l := f.lab
	l.obeys(t, f.onA.Network.Netns, f.allowA, other(f.allowA), "gw-a's sandbox")
	l.obeys(t, f.onB.Network.Netns, f.allowB, other(f.allowB), "gw-b's sandbox")
	for _, vm := range []client.VM{f.onA, f.onB} {
		if out, _ := l.run(t, vm.Network.Netns, 10*time.Second, "python3", "-c", tcpProbe(privateAddr, 5432)); !strings.HasPrefix(out, "closed") {
			t.Errorf("sandbox of %s reached the private network: %q", vm.Network.Node, out)
		}
	}

	for _, vm := range []client.VM{f.spareA, f.spareB} {
		if out, err := exec.Command("ip", "-n", l.inetNS, "route", "get", vm.Network.Address).CombinedOutput(); err == nil {
			t.Fatalf("the internet namespace has a route to %s: %s", vm.Network.Address, out)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		_, err := l.fleet.SetVMPolicy(ctx, vm.VMID, policy.Policy{AllowHTTP: true, AllowedCIDRs: []string{webAddr + "/32"}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if out, code := l.curl(t, vm.Network.Netns, "http://"+webAddr+"/"); code != 0 || out != "hello from "+webAddr+"\n" {
			t.Errorf("forwarded HTTP from a sandbox of %s: exit %d, %q", vm.Network.Node, code, out)
		}
		if out, _ := l.run(t, vm.Network.Netns, 10*time.Second, "python3", "-c", tcpProbe(privateAddr, 5432)); !strings.HasPrefix(out, "closed") {
			t.Errorf("sandbox of %s with allowed_cidrs reached the private network: %q", vm.Network.Node, out)
		}
	}
}

// waitFleet: a policy change through the API node with ?wait=fleet is answered once both
// gateways apply it (the API node has no gateway and is not listed), so each sandbox obeys
// its new policy the moment the answer comes, with no waiting on the test's side.
func (f *fleetRun) waitFleet(t *testing.T) {
	l := f.lab
	flip := func(vm client.VM, allow string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		p, err := l.fleet.SetVMPolicy(ctx, vm.VMID, *httpsOnly(allow))
		if err != nil {
			t.Fatalf("set the policy of %s with wait=fleet: %v", vm.VMID, err)
		}
		if p.Enforcement == nil {
			t.Fatalf("set the policy of %s with wait=fleet: no enforced_by in the answer", vm.VMID)
		}
		if got := slices.Sorted(slices.Values(p.EnforcedBy)); !slices.Equal(got, []string{"gw-a", "gw-b"}) || len(p.Lagging) > 0 {
			t.Errorf("policy of %s: enforced_by %v, lagging %v; want gw-a and gw-b, none lagging", vm.VMID, p.EnforcedBy, p.Lagging)
		}
	}
	f.allowA, f.allowB = other(f.allowA), other(f.allowB)
	flip(f.onA, f.allowA)
	l.obeys(t, f.onA.Network.Netns, f.allowA, other(f.allowA), "right after wait=fleet answered, gw-a's sandbox")
	flip(f.onB, f.allowB)
	l.obeys(t, f.onB.Network.Netns, f.allowB, other(f.allowB), "right after wait=fleet answered, gw-b's sandbox")
	l.obeys(t, f.onA.Network.Netns, f.allowA, other(f.allowA), "gw-a's sandbox, after gw-b's change")
}

// overlap: a third transparent node whose --sandbox-cidr overlaps gw-b's refuses to start,
// saying which nodes and ranges, and is not left in the fleet.
func (f *fleetRun) overlap(t *testing.T) {
	l := f.lab
	ns := "egt-fc-" + l.suffix
	addNS(t, ns)
	ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	const cidr = "100.96.1.0/25"
	args := append([]string{"--api-listen", "127.0.0.1:8470", "--proxy-listen", "127.0.0.1:8471",
		"--data-dir", t.TempDir(), "--api-rate-limit", "0", "--secrets-key-file", egressdtest.SecretsKeyFile(t)}, gatewayArgs(l.store, "gw-c", cidr, "c")...)
	code, msg := runToExit(t, "/run/netns/"+ns, args, "a node whose range overlaps gw-b's")
	t.Logf("gw-c with --sandbox-cidr %s: exit %d\n%s", cidr, code, msg)
	if code == 0 {
		t.Errorf("a node whose range overlaps gw-b's exited 0")
	}
	for _, want := range []string{"gw-c", cidr, "gw-b", "100.96.1.0/24"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the refusal does not name %s", want)
		}
	}
	m, err := l.nodesByID()
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := m["gw-c"]; ok {
		t.Errorf("the refused node is listed: %+v", n)
	}
	if ok := m["gw-b"].State == "up" && m["gw-b"].SandboxCIDR == "100.96.1.0/24"; !ok {
		t.Errorf("gw-b after the refusal: %+v", m["gw-b"])
	}
}

// runToExit runs egressd with args in the namespace at nsPath, where it must exit by itself
// (a refusal at start) within 20 s; what names it in the failure. It returns the exit code and
// the output.
func runToExit(t *testing.T, nsPath string, args []string, what string) (int, string) {
	t.Helper()
	cmd := exec.Command(egressdtest.Binary(t, "egressd"), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Env = &out, &out, withoutEgressdEnv()
	if err := netns.StartIn(nsPath, cmd); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s still ran after 20 s:\n%s", what, out.String())
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

// withoutEgressdEnv is the environment without EGRESSD_* variables, which would set flags.
func withoutEgressdEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EGRESSD_") {
			env = append(env, kv)
		}
	}
	return env
}

// nodeDown: gw-b is killed. Within about 12 s the API shows it down and its VMs node_down;
// its sandbox fails closed (its kernel rules stay, nothing answers behind them); gw-a works
// on, and takes the next automatic VM, which gw-b would have taken by count.
func (f *fleetRun) nodeDown(t *testing.T) {
	l := f.lab
	// gw-a holds more VMs than gw-b from here on, so only gw-b being down sends the
	// automatic VM below to gw-a.
	l.readyVM(t, "named-a2", "gw-a", nil, nil, "gw-a") // 5, 4
	nb := l.nodes["gw-b"]
	nb.in.Kill()
	killed := time.Now()
	var vms []client.VM
	took := poll(20*time.Second, func() bool {
		m, err := l.nodesByID()
		if err != nil || m["gw-b"].State != "down" {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		vms, err = l.admin.ListVMs(ctx)
		if err != nil {
			return false
		}
		for _, vm := range vms {
			if vm.Network.Node == "gw-b" && vm.Network.State != "node_down" {
				return false
			}
		}
		return true
	})
	if took < 0 {
		t.Fatalf("20 s after gw-b was killed, GET /v1/nodes and GET /v1/vms do not show it down: %+v", vms)
	}
	t.Logf("gw-b was seen down, its VMs node_down, %v after SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	m, _ := l.nodesByID()
	if m["gw-a"].State != "up" {
		t.Errorf("gw-a is %q while gw-b is down", m["gw-a"].State)
	}
	for _, vm := range vms {
		if vm.Network.Node == "gw-a" && vm.Network.State != "ready" {
			t.Errorf("VM %s of gw-a is %q while gw-b is down", vm.VMID, vm.Network.State)
		}
	}

	// gw-b's sandbox: its namespace stays, and nothing gets out, whether by name, by the
	// allowed name sent to the server's address, or by TCP to the private network.
	ns := f.onB.Network.Netns
	if !nsExists(ns) {
		t.Fatalf("gw-b's sandbox namespace %s is gone while gw-b is down", ns)
	}
	seen := len(l.web.Hosts())
	if out, code := l.curl(t, ns, "https://"+f.allowB+"/"); code == 0 {
		t.Errorf("gw-b down: its sandbox reached %s (allowed): %q", f.allowB, out)
	}
	if out, code := l.curl(t, ns, "--resolve", f.allowB+":443:"+webAddr, "https://"+f.allowB+"/"); code == 0 {
		t.Errorf("gw-b down: its sandbox reached %s at its address: %q", f.allowB, out)
	}
	for _, port := range []struct {
		addr string
		port int
	}{{privateAddr, 5432}, {webAddr, 443}, {webAddr, 80}} {
		if out, _ := l.run(t, ns, 10*time.Second, "python3", "-c", tcpProbe(port.addr, port.port)); !strings.HasPrefix(out, "closed") {
			t.Errorf("gw-b down: its sandbox connected to %s:%d: %q", port.addr, port.port, out)
		}
	}
	if hosts := l.web.Hosts(); len(hosts) != seen {
		t.Errorf("gw-b down: the web server got requests from its sandbox: %v", hosts[seen:])
	}

	// gw-a is unaffected, and takes the next automatic VM.
	l.obeys(t, f.onA.Network.Netns, f.allowA, other(f.allowA), "gw-b down, gw-a's sandbox")
	l.readyVM(t, "auto-while-b-down", "", nil, nil, "gw-a")

	// A VM of the down node is marked for deletion: its node removes it when it returns.
	code, data, e := l.call(t, http.MethodDelete, "/v1/vms/"+f.doomed.VMID, nil)
	var answer client.VM
	json.Unmarshal(data, &answer)
	state := answer.Network.State
	if code == http.StatusAccepted && state == "" {
		state = l.vmState(t, f.doomed.VMID)
	}
	if code != http.StatusAccepted || state != "deleting" {
		t.Errorf("DELETE a VM of the down node: %d %+v, state %q; want 202 deleting", code, e, state)
	}
	if !nsExists(f.doomed.Network.Netns) {
		t.Errorf("the namespace of a VM of the down node went while it was down")
	}
}

// nodeBack: gw-b restarts with the same flags: it is up again, re-adopts its VMs (ready,
// curl obeys the policy again), and finishes the deletion asked while it was down.
func (f *fleetRun) nodeBack(t *testing.T) {
	l := f.lab
	nb := l.nodes["gw-b"]
	start := time.Now()
	nb.in.Restart()
	l.waitNodes(t, 15*time.Second, "gw-b to be up again", func(m map[string]client.Node) bool { return m["gw-b"].State == "up" })
	if took := poll(15*time.Second, func() bool { return l.vmState(t, f.onB.VMID) == "ready" }); took < 0 {
		t.Fatalf("gw-b's VM is %q 15 s after gw-b restarted, want ready", l.vmState(t, f.onB.VMID))
	}
	t.Logf("gw-b was up with its VM ready %v after the restart began", time.Since(start).Round(100*time.Millisecond))
	vm, err := l.admin.GetVM(context.Background(), f.onB.VMID)
	if err != nil {
		t.Fatal(err)
	}
	if vm.Network.Netns != f.onB.Network.Netns || vm.Network.Address != f.onB.Network.Address || vm.Network.Node != "gw-b" {
		t.Errorf("gw-b's VM after the restart: %+v, was %+v", vm.Network, f.onB.Network)
	}
	l.obeys(t, f.onB.Network.Netns, f.allowB, other(f.allowB), "gw-b back, its sandbox")
	// Re-adopted, not remade: the restarted node took its namespaces for its own VMs'.
	for _, bad := range []string{"level=ERROR", "could not be made", "no VM of this node explains"} {
		if strings.Contains(nb.in.Log(), bad) {
			t.Errorf("gw-b's log after the restart has %q:\n%s", bad, nb.in.Log())
		}
	}

	if took := poll(15*time.Second, func() bool {
		return l.vmState(t, f.doomed.VMID) == "gone" && !nsExists(f.doomed.Network.Netns)
	}); took < 0 {
		t.Errorf("the VM deleted while gw-b was down: state %q, namespace there: %v, 15 s after gw-b restarted",
			l.vmState(t, f.doomed.VMID), nsExists(f.doomed.Network.Netns))
	}
}

// deletes: deleting a VM through the API node removes its namespace on its node before the
// answer (204), on either node.
func (f *fleetRun) deletes(t *testing.T) {
	l := f.lab
	for _, vm := range []client.VM{f.spareA, f.onB} {
		code, _, e := l.call(t, http.MethodDelete, "/v1/vms/"+vm.VMID, nil)
		if code != http.StatusNoContent {
			t.Errorf("DELETE %s on %s: %d %+v, want 204", vm.VMID, vm.Network.Node, code, e)
			continue
		}
		if nsExists(vm.Network.Netns) {
			t.Errorf("DELETE %s answered 204 but its namespace %s is still on %s", vm.VMID, vm.Network.Netns, vm.Network.Node)
		}
		if state := l.vmState(t, vm.VMID); state != "gone" {
			t.Errorf("DELETE %s answered 204 but GET says %q", vm.VMID, state)
		}
	}
	// The other sandbox of gw-a is untouched.
	l.obeys(t, f.onA.Network.Netns, f.allowA, other(f.allowA), "after the deletes, gw-a's sandbox")
	for _, n := range l.nodes {
		if strings.Contains(n.in.Log(), "level=ERROR") {
			t.Errorf("%s logged an error:\n%s", n.id, n.in.Log())
		}
	}
}
