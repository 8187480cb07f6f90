package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store/postgres"
	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// The fleet lab (issue 11, DESIGN §5 and §10): one fake internet namespace, two gateway
// namespaces each with its own uplink into it and its own sandbox range, an API-only egressd
// on the test's loopback, and one PostgreSQL database that every node reaches over the
// server's Unix socket (a gateway namespace has no route to the machine's loopback).
const (
	pgSocketDir = "/var/run/postgresql"
	fleetTenant = "default" // the tenant of the admin key the API node creates
	publicCIDRs = "203.0.113.0/24"
)

// fleetGateway is what differs between the two gateway nodes.
type fleetGateway struct {
	id, zone    string
	sandboxCIDR string
	uplinkGW    string // the gateway namespace's end of its uplink, with its /30
	uplinkInet  string // the internet namespace's end
	inetIface   string // the uplink's name inside the internet namespace
}

var fleetGateways = []fleetGateway{
	{id: "gw-a", zone: "a", sandboxCIDR: "100.96.0.0/24", uplinkGW: "198.18.0.2/30", uplinkInet: "198.18.0.1/30", inetIface: "upa"},
	{id: "gw-b", zone: "b", sandboxCIDR: "100.96.1.0/24", uplinkGW: "198.18.0.6/30", uplinkInet: "198.18.0.5/30", inetIface: "upb"},
}

// fleetNode is one transparent gateway node of the lab.
type fleetNode struct {
	fleetGateway
	ns string // its gateway namespace
	in *egressdtest.Instance
}

// fleetLab is the whole fleet. VM IDs get the lab's random suffix, so that the namespaces
// egressd names after them (netns.Name) never meet those of another test process.
type fleetLab struct {
	t      testing.TB
	suffix string
	store  string // the database's URL in Unix-socket form, for every node
	inetNS string
	api    *egressdtest.Instance // --role api, in the test's own namespace
	admin  *client.Client        // the API node, with the admin key
	fleet  *client.Client        // the same with ?wait=fleet on writes
	nodes  map[string]*fleetNode // by node ID
	dns    *testnet.DNS
	web    *testnet.Web
	caFile string

	mu    sync.Mutex
	vmIDs []string // every VM ID the lab asked for, for the final sweep of namespaces
}

// newFleetLab builds the lab and waits until GET /v1/nodes lists its three nodes up.
func newFleetLab(t testing.TB) *fleetLab {
	t.Helper()
	testnet.RequireRoot(t)
	testnet.Require(t, haveCmd("ip"), "ip (iproute2)")
	testnet.Require(t, haveCmd("curl"), "curl")
	testnet.Require(t, haveCmd("python3"), "python3")
	_, err := os.Stat(filepath.Join(pgSocketDir, ".s.PGSQL.5432"))
	testnet.Require(t, err == nil, "PostgreSQL's Unix socket in "+pgSocketDir)

	b := make([]byte, 3)
	rand.Read(b)
	l := &fleetLab{t: t, suffix: hex.EncodeToString(b), nodes: map[string]*fleetNode{}}
	l.inetNS = "egt-fi-" + l.suffix
	// Registered first, so it runs last: after the nodes have stopped, whatever sandbox
	// namespace is left of the lab's VMs goes (a node may have been down at the end).
	t.Cleanup(l.sweep)

	l.store = socketURL(t, pgtest.NewDatabase(t))
	checkStore(t, l.store)

	addNS(t, l.inetNS)
	for _, g := range fleetGateways {
		n := &fleetNode{fleetGateway: g, ns: "egt-f" + g.zone + "-" + l.suffix}
		addNS(t, n.ns)
		ipCmd(t, "link", "add", "up0", "netns", n.ns, "type", "veth", "peer", "name", g.inetIface, "netns", l.inetNS)
		ipCmd(t, "-n", n.ns, "addr", "add", g.uplinkGW, "dev", "up0")
		ipCmd(t, "-n", l.inetNS, "addr", "add", g.uplinkInet, "dev", g.inetIface)
		ipCmd(t, "-n", n.ns, "link", "set", "lo", "up")
		ipCmd(t, "-n", n.ns, "link", "set", "up0", "up")
		ipCmd(t, "-n", l.inetNS, "link", "set", g.inetIface, "up")
		ipCmd(t, "-n", n.ns, "route", "add", "default", "via", strings.Split(g.uplinkInet, "/")[0])
		l.nodes[g.id] = n
	}
	ipCmd(t, "-n", l.inetNS, "link", "set", "lo", "up")
	// The internet has no route to 100.96.0.0/16: the gateways dial from their uplink
	// address (the proxies) or masquerade (forwarded traffic), so nothing needs one.
	for _, a := range []string{webAddr, dnsAddr, privateAddr} {
		ipCmd(t, "-n", l.inetNS, "addr", "add", a+"/32", "dev", "lo")
	}
	inet := testnet.In("/run/netns/" + l.inetNS)
	ca := testnet.NewCA(t)
	l.caFile = ca.WriteFile(t, t.TempDir())
	l.web = testnet.StartWebOn(t, inet, webAddr, ca, nil)
	l.dns = testnet.StartDNSOn(t, inet, dnsAddr, 53)
	for _, name := range []string{"api.example.test", "other.example.test"} {
		l.dns.Set(name, webAddr)
	}
	servePrivate(t, inet)

	// The API node first: it finds no key in the new database and writes admin.key.
	l.api = egressdtest.Start(t, "--role", "api", "--store", l.store, "--node-id", "api", "--public-cidrs", publicCIDRs)
	if l.api.AdminKey == "" {
		t.Fatalf("the API node wrote no admin key:\n%s", l.api.Log())
	}
	if l.admin, err = client.New(l.api.URL, l.api.AdminKey); err != nil {
		t.Fatal(err)
	}
	if l.fleet, err = client.New(l.api.URL, l.api.AdminKey, client.WithWaitFleet()); err != nil {
		t.Fatal(err)
	}
	for _, g := range fleetGateways {
		n := l.nodes[g.id]
		n.in = egressdtest.StartIn(t, "/run/netns/"+n.ns, gatewayArgs(l.store, g.id, g.sandboxCIDR, g.zone)...)
	}
	// Runs before the nodes stop: VMs are deleted the way a platform deletes them.
	t.Cleanup(l.deleteAll)
	l.waitNodes(t, 20*time.Second, "the three nodes to be up", func(m map[string]client.Node) bool {
		return len(m) == 3 && m["api"].State == "up" && m["gw-a"].State == "up" && m["gw-b"].State == "up"
	})
	return l
}

// gatewayArgs are a transparent gateway node's flags.
func gatewayArgs(store, id, cidr, zone string) []string {
	args := []string{"--role", "gateway", "--transparent", "--store", store, "--node-id", id,
		"--sandbox-cidr", cidr, "--public-cidrs", publicCIDRs, "--dns-upstream", dnsAddr + ":53"}
	return append(args, "--node-label", "zone="+zone)
}

// addNS makes a namespace of the test's, deleted when t ends.
func addNS(t testing.TB, name string) {
	t.Helper()
	ipCmd(t, "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
}

// socketURL turns pgtest's URL (TCP to the loopback) into the same database over the
// server's Unix socket, which is a file and so reachable from every network namespace.
func socketURL(t testing.TB, tcpURL string) string {
	t.Helper()
	u, err := url.Parse(tcpURL)
	if err != nil {
		t.Fatal(err)
	}
	s := &url.URL{Scheme: "postgres", User: u.User, Host: "", Path: u.Path,
		RawQuery: url.Values{"host": {pgSocketDir}, "sslmode": {"disable"}}.Encode()}
	return s.String()
}

// checkStore opens the store as egressd will (pgx's parser, the migrations), so that a URL
// the nodes cannot use fails here with the reason rather than as three nodes' exits.
func checkStore(t testing.TB, storeURL string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := postgres.Open(ctx, storeURL)
	if err != nil {
		t.Fatalf("opening the store over the Unix socket (%s): %v", storeURL, err)
	}
	st.Close()
}

// servePrivate is a raw TCP service on the fake private network, which no policy of the
// lab allows: a probe to it must fail from every sandbox.
func servePrivate(t testing.TB, inet testnet.Net) {
	testnet.ServeBanner(t, inet, privateAddr+":5432", "private\n")
}

// id is a VM ID of this lab.
func (l *fleetLab) id(name string) string {
	id := name + "-" + l.suffix
	l.mu.Lock()
	l.vmIDs = append(l.vmIDs, id)
	l.mu.Unlock()
	return id
}

// nsName is the namespace egressd names after a VM of the lab (netns.Name).
func nsName(vmID string) string { return netns.Name(fleetTenant, vmID) }

// nsExists reports whether a sandbox namespace is mounted (ip netns's view of the host).
func nsExists(name string) bool {
	_, err := os.Lstat(filepath.Join(netns.DefaultNetnsDir, name))
	return err == nil
}

// deleteAll deletes through the API every VM still listed, each removed by its node.
func (l *fleetLab) deleteAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vms, err := l.admin.ListVMs(ctx)
	if err != nil {
		l.t.Logf("fleet lab cleanup: listing VMs: %v", err)
		return
	}
	for _, vm := range vms {
		l.admin.DeleteVM(ctx, vm.VMID)
	}
}

// sweep removes whatever namespace of the lab's VMs is left once the nodes have stopped.
func (l *fleetLab) sweep() {
	l.mu.Lock()
	ids := slices.Clone(l.vmIDs)
	l.mu.Unlock()
	for _, id := range ids {
		name := nsName(id)
		if nsExists(name) {
			exec.Command("ip", "netns", "del", name).Run()
		}
		os.RemoveAll(filepath.Join(netns.DefaultResolvDir, name))
	}
}

// call sends one request to the API node with the admin key and returns the status, the
// body, and the error detail of a non-2xx answer. Raw, because the Go client hides the
// difference between 201 and 202 that the tests assert.
func (l *fleetLab) call(t testing.TB, method, path string, in any) (int, []byte, client.ErrorDetail) {
	t.Helper()
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, l.api.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+l.api.AdminKey)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e client.ErrorBody
	if resp.StatusCode >= 300 {
		json.Unmarshal(data, &e)
	}
	return resp.StatusCode, data, e.Error
}

// createVM is POST /v1/vms for a netns VM; it returns the status and the VM answered (or the
// error detail). node and selector may be empty.
func (l *fleetLab) createVM(t testing.TB, id, node string, selector map[string]string, p *policy.Policy) (int, client.VM, client.ErrorDetail) {
	t.Helper()
	req := client.CreateVMRequest{VMID: id, Network: &client.Network{Mode: "netns", Node: node, NodeSelector: selector}}
	if p != nil {
		d := p.WithDefaults()
		req.EgressPolicy = &d
	}
	code, data, e := l.call(t, http.MethodPost, "/v1/vms", req)
	var vm client.VM
	if code < 300 {
		if err := json.Unmarshal(data, &vm); err != nil {
			t.Fatalf("POST /v1/vms answered %d with %q: %v", code, data, err)
		}
	}
	return code, vm, e
}

// readyVM creates a netns VM and fails the test unless the answer is 201 with the network
// ready on the expected node, inside that node's range, its namespace made.
func (l *fleetLab) readyVM(t testing.TB, name, node string, selector map[string]string, p *policy.Policy, wantNode string) client.VM {
	t.Helper()
	id := l.id(name)
	code, vm, e := l.createVM(t, id, node, selector, p)
	if code != http.StatusCreated {
		t.Fatalf("create %s (node %q, selector %v): %d %+v %+v, want 201 ready", id, node, selector, code, e, vm.Network)
	}
	l.checkPlaced(t, vm, wantNode)
	return vm
}

// checkPlaced fails the test unless vm is ready on node with a namespace and an address of
// that node's range.
func (l *fleetLab) checkPlaced(t testing.TB, vm client.VM, node string) {
	t.Helper()
	n := vm.Network
	if n.Node != node || n.State != "ready" {
		t.Fatalf("VM %s: node %q state %q (%s), want ready on %s", vm.VMID, n.Node, n.State, n.Error, node)
	}
	_, cidr, _ := net.ParseCIDR(l.nodes[node].sandboxCIDR)
	if ip := net.ParseIP(n.Address); ip == nil || !cidr.Contains(ip) {
		t.Errorf("VM %s on %s: address %q, want one inside %s", vm.VMID, node, n.Address, cidr)
	}
	if n.Netns != nsName(vm.VMID) || !nsExists(n.Netns) {
		t.Errorf("VM %s: namespace %q (exists: %v), want %s made", vm.VMID, n.Netns, nsExists(n.Netns), nsName(vm.VMID))
	}
}

// nodesByID is GET /v1/nodes by node ID.
func (l *fleetLab) nodesByID() (map[string]client.Node, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := l.admin.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	m := map[string]client.Node{}
	for _, n := range list {
		m[n.ID] = n
	}
	return m, nil
}

// waitNodes polls GET /v1/nodes until cond holds, at most limit; it returns how long that took.
func (l *fleetLab) waitNodes(t testing.TB, limit time.Duration, what string, cond func(map[string]client.Node) bool) time.Duration {
	t.Helper()
	var last map[string]client.Node
	var err error
	took := poll(limit, func() bool {
		last, err = l.nodesByID()
		return err == nil && cond(last)
	})
	if took < 0 {
		t.Fatalf("waited %v for %s; GET /v1/nodes: %+v (%v)", limit, what, last, err)
	}
	return took
}

// vmState is the network state GET /v1/vms/{id} answers ("gone" for a 404).
func (l *fleetLab) vmState(t testing.TB, id string) string {
	t.Helper()
	code, data, e := l.call(t, http.MethodGet, "/v1/vms/"+id, nil)
	switch {
	case code == http.StatusNotFound:
		return "gone"
	case code != http.StatusOK:
		t.Fatalf("GET /v1/vms/%s: %d %+v", id, code, e)
	}
	var vm client.VM
	json.Unmarshal(data, &vm)
	return vm.Network.State
}

// poll checks cond every 100 ms until it holds (it returns how long that took) or limit
// passes (it returns -1).
func poll(limit time.Duration, cond func() bool) time.Duration {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			return -1
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// run runs a command inside a sandbox namespace the way the sandbox's own process would:
// no proxy variables, the namespace's resolv.conf (ip netns exec), the test CA trusted.
func (l *fleetLab) run(t testing.TB, ns string, timeout time.Duration, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	cmd.Env = append(cleanProxyEnv(), "SSL_CERT_FILE="+l.caFile, "CURL_CA_BUNDLE="+l.caFile)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	if ctx.Err() != nil {
		code = -2
	}
	return string(out), code
}

// curl fetches url from inside the sandbox namespace with short timeouts.
func (l *fleetLab) curl(t testing.TB, ns string, args ...string) (string, int) {
	t.Helper()
	return l.run(t, ns, 20*time.Second, "curl", append([]string{"-sS", "--connect-timeout", "3", "--max-time", "8", "--cacert", l.caFile}, args...)...)
}

// obeys fails the test unless the sandbox reaches allowed (with the web server's greeting)
// and not denied.
func (l *fleetLab) obeys(t testing.TB, ns, allowed, denied, when string) {
	t.Helper()
	if out, code := l.curl(t, ns, "https://"+allowed+"/"); code != 0 || out != "hello from "+allowed+"\n" {
		t.Errorf("%s: sandbox %s to %s (allowed): exit %d, %q", when, ns, allowed, code, out)
	}
	if out, code := l.curl(t, ns, "https://"+denied+"/"); code == 0 {
		t.Errorf("%s: sandbox %s to %s (not allowed): exit 0, %q", when, ns, denied, out)
	}
}

// httpsOnly allows HTTPS to one name.
func httpsOnly(host string) *policy.Policy {
	return &policy.Policy{AllowHTTPS: true, AllowedDomains: []string{host}}
}
