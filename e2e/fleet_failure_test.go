package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/policy"
)

// TestSingleNodeLifecycle is issue 11's lifecycle on the one-process setup of the quick start
// and docs/transparent.md (--role all --transparent on the embedded store, the node ID left
// to its default, the host name), through its failures: VMs are made and removed promptly
// (the node is this process: no 10 s wait), a data directory from before nodes upgraded
// across a reboot gets its VMs back, and a host restarted under another node ID leaves its
// old VMs failing closed until it runs under that ID again. Its parts run in order on one
// lab.
func TestSingleNodeLifecycle(t *testing.T) {
	l := newGWLab(t, "--sandbox-cidr", "100.96.0.0/24")
	b := make([]byte, 3)
	rand.Read(b)
	s := &singleNode{lab: l, top: t, quick: "quick-" + hex.EncodeToString(b), legacy: "legacy-" + hex.EncodeToString(b)}
	for _, part := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"prompt create and delete", s.prompt},
		{"upgraded across a reboot", s.upgraded},
		{"restarted under another node ID", s.renamed},
	} {
		if !t.Run(part.name, part.run) {
			t.Fatalf("stopping after %q failed: the parts after it build on it", part.name)
		}
	}
}

type singleNode struct {
	lab *gwLab
	top *testing.T // the whole test: its VMs are deleted when it ends, not when a part does
	// The VMs' IDs, with a random suffix, so that their namespaces' names (netns.Name) are
	// not those of another test process's VMs on this machine.
	quick, legacy string
	legacyVM      *client.VM // the VM of the upgrade, kept for the last part
}

// call sends one request to the lab's egressd with the admin key: the status and the body.
func (s *singleNode) call(t *testing.T, method, path string, in any) (int, []byte) {
	t.Helper()
	var body io.Reader
	if in != nil {
		data, _ := json.Marshal(in)
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, s.lab.in.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.lab.in.AdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.lab.in.HTTPClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// create makes a netns VM allowing HTTPS to api.example.test and wants a prompt 201.
func (s *singleNode) create(t *testing.T, id string) *client.VM {
	t.Helper()
	p := policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}}.WithDefaults()
	start := time.Now()
	code, data := s.call(t, "POST", "/v1/vms", client.CreateVMRequest{VMID: id, EgressPolicy: &p, Network: &client.Network{Mode: "netns"}})
	took := time.Since(start)
	var vm client.VM
	json.Unmarshal(data, &vm)
	if code != http.StatusCreated || vm.Network.State != "ready" || vm.Network.Netns == "" {
		t.Fatalf("create %s: %d %s, want 201 ready", id, code, data)
	}
	name := vm.Network.Netns
	s.top.Cleanup(func() {
		s.call(s.top, "DELETE", "/v1/vms/"+id, nil)
		exec.Command("ip", "netns", "del", name).Run() // in case egressd could not
		os.RemoveAll(filepath.Join(netns.DefaultResolvDir, name))
	})
	if took > 3*time.Second {
		t.Errorf("create %s took %v: the node is this process, nothing to wait 10 s for", id, took)
	}
	return &vm
}

// prompt: a VM is created ready and deleted within moments, on the node named after the host.
func (s *singleNode) prompt(t *testing.T) {
	l := s.lab
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	vm := s.create(t, s.quick)
	if vm.Network.Node != host {
		t.Errorf("the VM is on node %q, want the host name %q (the default --node-id)", vm.Network.Node, host)
	}
	if out, code := l.curl(vm, "https://api.example.test/"); code != 0 {
		t.Errorf("the sandbox to its allowed name: exit %d %q", code, out)
	}
	start := time.Now()
	if code, data := s.call(t, "DELETE", "/v1/vms/"+s.quick, nil); code != http.StatusNoContent {
		t.Errorf("delete: %d %s, want 204", code, data)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("delete took %v", took)
	}
	if nsExists(vm.Network.Netns) {
		t.Errorf("delete answered, and the namespace %s is still there", vm.Network.Netns)
	}
}

// upgraded: a VM stored by an egressd from before nodes (no node, no state), whose host was
// rebooted on the way to the upgrade (nothing of its network left), comes back: claimed by this node,
// ready, its namespace made again, its policy enforced.
func (s *singleNode) upgraded(t *testing.T) {
	l := s.lab
	vm := s.create(t, s.legacy)
	l.in.Kill()
	// What the egressd before nodes left: the same VM, without node and state.
	st, err := sqlite.Open(context.Background(), l.in.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.UpdateVMNetwork(context.Background(), "default", s.legacy, func(n store.Network) (store.Network, error) {
		n.Node, n.State = "", ""
		return n, nil
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	// The reboot: the namespace is gone (its veth with it), and so is its resolv.conf
	// directory, as on a host whose /etc/netns is not kept (a container's, a host
	// reinstalled with its data directory kept). Where it is kept, the node finds it and
	// claims the VM by it.
	ipCmd(t, "netns", "del", vm.Network.Netns)
	if err := os.RemoveAll(filepath.Join(netns.DefaultResolvDir, vm.Network.Netns)); err != nil {
		t.Fatal(err)
	}

	l.in.Restart()
	code, data := s.call(t, "GET", "/v1/vms/"+s.legacy, nil)
	var got client.VM
	json.Unmarshal(data, &got)
	host, _ := os.Hostname()
	if code != http.StatusOK || got.Network.State != "ready" || got.Network.Node != host || got.Network.Address != vm.Network.Address {
		t.Fatalf("after the upgrade: %d %s; want it ready on node %q at %s", code, data, host, vm.Network.Address)
	}
	if !nsExists(vm.Network.Netns) {
		t.Fatalf("after the upgrade, the namespace %s was not made again", vm.Network.Netns)
	}
	l.obeysOnly(t, vm, "after the upgrade")
	s.legacyVM = vm
}

// obeysOnly fails the test unless the sandbox reaches api.example.test and not
// other.example.test.
func (l *gwLab) obeysOnly(t *testing.T, vm *client.VM, when string) {
	t.Helper()
	if out, code := l.curl(vm, "https://api.example.test/"); code != 0 || out != "hello from api.example.test\n" {
		t.Errorf("%s: the sandbox to its allowed name: exit %d %q", when, code, out)
	}
	if out, code := l.curl(vm, "https://other.example.test/"); code == 0 {
		t.Errorf("%s: the sandbox to a name not allowed: %q", when, out)
	}
}

// renamed: the host restarted under another --node-id. With its range it is refused, told to
// use its old ID; with another range it runs, and leaves the old ID's VM as it is: its
// namespace stays, its sandbox reaches nothing. Back under its old ID, the VM works again.
func (s *singleNode) renamed(t *testing.T) {
	l := s.lab
	vm := s.legacyVM
	l.in.Kill()
	args := slices.Clone(l.in.Args)

	// Its own range under a new ID: refused, with the way out.
	code, out := runToExit(t, l.in.Netns, append([]string{"--api-listen", l.in.APIAddr, "--proxy-listen", l.in.ProxyAddr,
		"--data-dir", l.in.DataDir, "--api-rate-limit", "0", "--secrets-key-file", egressdtest.SecretsKeyFile(t), "--node-id", "renamed"}, args...),
		"under a new ID with the old ID's range, egressd")
	host, _ := os.Hostname()
	if code == 0 || !strings.Contains(out, "--node-id "+host) {
		t.Errorf("under a new ID with the old ID's range: exit %d, want a refusal saying to use --node-id %s:\n%s", code, host, out)
	}

	// Another range: it runs, and leaves the old ID's VM alone, failing closed.
	l.in.Args = append(slices.Clone(args), "--node-id", "renamed", "--sandbox-cidr", "100.96.1.0/24")
	l.in.Restart()
	if !nsExists(vm.Network.Netns) {
		t.Fatalf("under a new ID, egressd removed the namespace %s of its old ID's VM:\n%s", vm.Network.Netns, l.in.Log())
	}
	if out, code := l.curl(vm, "https://api.example.test/"); code == 0 {
		t.Errorf("under a new ID, the old ID's sandbox reached its allowed name: %q", out)
	}
	if !strings.Contains(l.in.Log(), "namespace of a VM of another node") {
		t.Errorf("under a new ID, egressd did not warn of the old ID's namespace:\n%s", l.in.Log())
	}

	// Back under its old ID.
	l.in.Kill()
	l.in.Args = args
	l.in.Restart()
	l.obeysOnly(t, vm, "back under the old ID")
}
