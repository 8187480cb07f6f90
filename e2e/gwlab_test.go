package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// The fake internet of the namespace tests (DESIGN §10): the gateway's uplink is
// 198.18.0.0/30, public servers are on 203.0.113.0/24 (in --public-cidrs), a private
// network on 198.51.100.0/24, and a metadata server on 169.254.169.254, all inside a
// namespace the test made. Sandboxes get 100.96.0.0/16.
const (
	webAddr     = "203.0.113.10"
	otherWeb    = "203.0.113.99" // an allowed SNI sent here must never arrive
	dnsAddr     = "203.0.113.53"
	privateAddr = "198.51.100.10"
	metaAddr    = "169.254.169.254"
)

// gwLab is egressd in a test gateway namespace, with a fake internet namespace behind it.
type gwLab struct {
	t        testing.TB
	in       *egressdtest.Instance
	api      *client.Client
	dns      *testnet.DNS
	web      *testnet.Web
	otherWeb *testnet.Web
	caFile   string
	ca       *testnet.CA // the fake internet's CA (caFile), which egressd trusts upstream
	gwNS     string
	inetNS   string
	suffix   string       // of this lab's names, so that labs of concurrent test runs never share one
	udp443   atomic.Int64 // datagrams the internet got on UDP 443 (QUIC)
	tcp22    atomic.Int64 // connections it got on port 22
}

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newGWLab(t testing.TB, extraArgs ...string) *gwLab {
	t.Helper()
	testnet.RequireRoot(t)
	testnet.Require(t, haveCmd("ip"), "ip (iproute2)")
	b := make([]byte, 3)
	rand.Read(b)
	suffix := hex.EncodeToString(b)
	l := &gwLab{t: t, gwNS: "egt-gw-" + suffix, inetNS: "egt-inet-" + suffix, suffix: suffix}
	for _, ns := range []string{l.gwNS, l.inetNS} {
		ipCmd(t, "netns", "add", ns)
		ns := ns
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	ipCmd(t, "link", "add", "up0", "netns", l.gwNS, "type", "veth", "peer", "name", "up1", "netns", l.inetNS)
	ipCmd(t, "-n", l.gwNS, "addr", "add", "198.18.0.2/30", "dev", "up0")
	ipCmd(t, "-n", l.inetNS, "addr", "add", "198.18.0.1/30", "dev", "up1")
	for _, ns := range []string{l.gwNS, l.inetNS} {
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	}
	ipCmd(t, "-n", l.gwNS, "link", "set", "up0", "up")
	ipCmd(t, "-n", l.inetNS, "link", "set", "up1", "up")
	ipCmd(t, "-n", l.gwNS, "route", "add", "default", "via", "198.18.0.1")
	for _, a := range []string{webAddr, otherWeb, dnsAddr, privateAddr, metaAddr} {
		ipCmd(t, "-n", l.inetNS, "addr", "add", a+"/32", "dev", "lo")
	}

	inet := testnet.In("/run/netns/" + l.inetNS)
	ca := testnet.NewCA(t)
	l.ca = ca
	l.caFile = ca.WriteFile(t, t.TempDir())
	site := testnet.NPM("registry.npm.test", "egressd-demo", "1.0.0", testnet.PyPI("egressd-demo", "1.0"))
	l.web = testnet.StartWebOn(t, inet, webAddr, ca, site)
	l.otherWeb = testnet.StartWebOn(t, inet, otherWeb, ca, nil)
	testnet.StartWebOn(t, inet, privateAddr, ca, nil)
	testnet.StartWebOn(t, inet, metaAddr, ca, nil)
	l.dns = testnet.StartDNSOn(t, inet, dnsAddr, 53)
	for _, name := range []string{"api.example.test", "other.example.test", "pypi.org", "files.pythonhosted.org", "registry.npm.test"} {
		l.dns.Set(name, webAddr)
	}
	l.dns.Set("rebind.example.test", privateAddr) // a public name answering with a private address
	l.dns.Set("meta.example.test", metaAddr)
	l.serveCounters(inet)

	// A raw TCP service on the private network, for allowed_cidrs.
	testnet.ServeBanner(t, inet, privateAddr+":5432", "private\n")

	args := append([]string{"--transparent", "--sandbox-cidr", "100.96.0.0/16",
		"--public-cidrs", "203.0.113.0/24", "--dns-upstream", dnsAddr + ":53",
		// Intercepted connections verify the fake internet's certificates.
		"--upstream-ca-file", l.caFile}, extraArgs...)
	l.in = egressdtest.StartIn(t, "/run/netns/"+l.gwNS, args...)
	var err error
	if l.api, err = client.New(l.in.URL, l.in.AdminKey, client.WithHTTPClient(l.in.HTTPClient)); err != nil {
		t.Fatal(err)
	}
	return l
}

// serveCounters counts what must never arrive: QUIC datagrams and SSH connections.
func (l *gwLab) serveCounters(inet testnet.Net) {
	pc, err := inet.ListenPacket("udp", webAddr+":443")
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			l.udp443.Add(1)
		}
	}()
	ln, err := inet.Listen("tcp", webAddr+":22")
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { ln.Close() })
	go testnet.ServeEach(ln, func(net.Conn) { l.tcp22.Add(1) })
}

// vm creates a VM with a sandbox network and the given VM policy; it is deleted (with its
// namespace) when the test ends.
func (l *gwLab) vm(name string, p *policy.Policy) *client.VM {
	l.t.Helper()
	id := l.id(name)
	vm, err := l.api.CreateVM(context.Background(), client.CreateVMRequest{VMID: id, EgressPolicy: p, Network: &client.Network{Mode: "netns"}})
	if err != nil {
		l.t.Fatalf("create VM: %v", err)
	}
	if vm.Network.Mode != "netns" || vm.Network.Netns == "" || vm.Network.Address == "" {
		l.t.Fatalf("VM network: %+v", vm.Network)
	}
	netnsName := vm.Network.Netns
	l.t.Cleanup(func() {
		l.api.DeleteVM(context.Background(), id)
		exec.Command("ip", "netns", "del", netnsName).Run() // in case egressd could not
		os.RemoveAll(filepath.Join("/etc/netns", netnsName))
	})
	return vm
}

// id is the vm_id of the lab's VM called name. Sandbox namespaces are named after tenant and
// vm_id and live in the machine's /run/netns, so the lab's IDs carry its suffix.
func (l *gwLab) id(name string) string { return name + "-" + l.suffix }

func (l *gwLab) setVM(name string, p policy.Policy) {
	l.t.Helper()
	if _, err := l.api.SetVMPolicy(context.Background(), l.id(name), p); err != nil {
		l.t.Fatal(err)
	}
}

// in runs a command inside a VM's namespace the way a sandbox's own process runs: no
// proxy variables, the namespace's resolv.conf (ip netns exec), the test CA trusted.
func (l *gwLab) run(vm *client.VM, timeout time.Duration, name string, args ...string) (string, int) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", vm.Network.Netns, name}, args...)...)
	cmd.Env = append(cleanProxyEnv(), "SSL_CERT_FILE="+l.caFile, "CURL_CA_BUNDLE="+l.caFile)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	if ctx.Err() != nil {
		code = -2 // timed out
	}
	return string(out), code
}

// curl runs curl inside the VM with short timeouts.
func (l *gwLab) curl(vm *client.VM, args ...string) (string, int) {
	l.t.Helper()
	return l.run(vm, 20*time.Second, "curl", append([]string{"-sS", "--connect-timeout", "3", "--max-time", "10", "--cacert", l.caFile}, args...)...)
}

// py runs a Python snippet inside the VM.
func (l *gwLab) py(vm *client.VM, code string) (string, int) {
	l.t.Helper()
	return l.run(vm, 30*time.Second, "python3", "-c", code)
}

// startPy runs a Python script with args inside the VM, in the background, for limit at
// most, with env added to the sandbox's environment, and waits for its first line, which
// must be "started": the script has set up what the test then changes. It returns the rest
// of the script's output and its stderr; the script is waited for when the test ends.
func (l *gwLab) startPy(t *testing.T, vm *client.VM, limit time.Duration, env []string, script string, args ...string) (*bufio.Reader, *strings.Builder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", vm.Network.Netns, "python3", "-c", script}, args...)...)
	cmd.Env = append(cleanProxyEnv(), env...)
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		cancel()
		t.Fatalf("python3 in the VM: %v", err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	r := bufio.NewReader(stdout)
	if line, err := r.ReadString('\n'); line != "started\n" {
		t.Fatalf("the script did not start: %q %v\n%s", line, err, stderr.String())
	}
	return r, stderr
}

// tcpProbe is a Python snippet that connects to host:port and prints "open" or the error.
func tcpProbe(host string, port int) string {
	return fmt.Sprintf(`
import socket
s = socket.socket(); s.settimeout(2)
try:
    s.connect((%q, %d)); print("open")
except Exception as e:
    print("closed", type(e).__name__)
`, host, port)
}

// gwMode is one way the transparent gateway carries HTTPS to an address it answered a VM:
// through the transparent proxy (today's path), or forwarded by the kernel once egressd has
// verified the ClientHello from the packets (--fast-path, DESIGN §4 "Kernel fast path").
// The bypass and client tests of the gateway run in both: whatever the proxy blocks must
// stay blocked when the kernel forwards, and whatever works must keep working.
type gwMode struct {
	name string
	args []string // egressd's extra arguments
}

var gwModes = []gwMode{{"proxy", nil}, {"fast-path", []string{"--fast-path"}}}

func (m gwMode) fast() bool { return slices.Contains(m.args, "--fast-path") }

// eachGWMode runs body once per mode, as parallel subtests: each lab has its own namespaces,
// names and suffix, so two labs never meet, and the package's run time grows little.
func eachGWMode(t *testing.T, body func(t *testing.T, m gwMode)) {
	for _, m := range gwModes {
		t.Run(m.name, func(t *testing.T) {
			if m.fast() {
				requireFastPath(t)
			}
			t.Parallel()
			body(t, m)
		})
	}
}

var (
	fastPathOnce  sync.Once
	fastPathKnown bool
)

// requireFastPath skips (fails under CI=true) when the egressd under test has no --fast-path.
func requireFastPath(t *testing.T) {
	t.Helper()
	bin := egressdtest.Binary(t, "egressd")
	fastPathOnce.Do(func() {
		out, _ := exec.Command(bin, "--help").CombinedOutput()
		fastPathKnown = regexp.MustCompile(`(?m)^\s+--?fast-path\b`).Match(out)
	})
	testnet.Require(t, fastPathKnown, "egressd --fast-path")
}

// lookup resolves names inside the VM the way its programs do (resolv.conf names the
// gateway), so that the gateway has answered the VM these names' addresses: only answered
// addresses may take the fast path.
func (l *gwLab) lookup(vm *client.VM, names ...string) {
	l.t.Helper()
	var code strings.Builder
	code.WriteString("import socket\n")
	for _, n := range names {
		fmt.Fprintf(&code, "print(socket.gethostbyname(%q))\n", n)
	}
	if out, rc := l.py(vm, code.String()); rc != 0 {
		l.t.Fatalf("looking up %v in the VM: exit %d\n%s", names, rc, out)
	}
}

// fastFlows is the sum of egressd_fastpath_flows_total{outcome=...} on the API's /metrics:
// the flows the fast path verified ("verified") or refused ("refused"). 0 when egressd
// exports no such series (the proxy mode).
func (l *gwLab) fastFlows(outcome string) int {
	l.t.Helper()
	resp, err := l.in.HTTPClient.Get(l.in.URL + "/metrics")
	if err != nil {
		l.t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	label := `outcome="` + outcome + `"`
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "egressd_fastpath_flows_total{") || !strings.Contains(line, label) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			l.t.Fatalf("metrics line %q: %v", line, err)
		}
		n += int(v)
	}
	return n
}

// fastConnects counts the VM's connect records to host that say the fast path carried
// the flow ("via":"fast_path").
func (l *gwLab) fastConnects(vm *client.VM, host string) int {
	l.t.Helper()
	evs, err := l.api.Events(context.Background(), client.EventsFilter{VMID: vm.VMID, Kind: "connect", Limit: 1000})
	if err != nil {
		l.t.Fatalf("events: %v", err)
	}
	n := 0
	for _, e := range evs {
		if e.Host == host && e.Via == "fast_path" {
			n++
		}
	}
	return n
}

// carried runs a client that makes at least conns HTTPS connections to hosts (allowed
// names, answered the VM), and proves which path carried them. With the fast path on, the
// verified counter rises by at least conns and each host gets new connect records that say
// "via":"fast_path"; in the proxy mode neither moves, which shows the two measures tell the paths apart.
func (l *gwLab) carried(t *testing.T, m gwMode, vm *client.VM, conns int, run func(), hosts ...string) {
	t.Helper()
	records := func() map[string]int {
		n := map[string]int{}
		for _, h := range hosts {
			n[h] = l.fastConnects(vm, h)
		}
		return n
	}
	verified, before := l.fastFlows("verified"), records()
	run()
	if t.Failed() {
		return
	}
	if !m.fast() {
		if v, r := l.fastFlows("verified"), records(); v != verified || !maps.Equal(r, before) {
			t.Errorf("proxy mode: fast-path flows %d→%d, fast records %v→%v", verified, v, before, r)
		}
		return
	}
	got := l.fastFlows("verified") - verified
	if got < conns {
		t.Errorf("the fast path verified %d flows, want at least %d (the client's connections to %v)", got, conns, hosts)
	}
	// Records come through the gateway's event hub: give them a moment.
	var r map[string]int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r = records()
		if !slices.ContainsFunc(hosts, func(h string) bool { return r[h] == before[h] }) || time.Now().After(deadline) {
			break
		}
	}
	for _, h := range hosts {
		if r[h] == before[h] {
			t.Errorf("no new connect record of %s via fast_path (%d before and after)", h, r[h])
		}
	}
	t.Logf("fast path: %d flows verified; fast records %v→%v", got, before, r)
}

// refusedFast runs attempts that must fail, of which at least n go to an address answered
// the VM: with the fast path on, the verifier refuses those n (the refused counter rises by
// at least n), so the attempts met the fast path and not the proxy.
func (l *gwLab) refusedFast(t *testing.T, m gwMode, n int, run func()) {
	t.Helper()
	refused := l.fastFlows("refused")
	run()
	if got := l.fastFlows("refused") - refused; m.fast() && got < n {
		t.Errorf("the fast path refused %d flows, want at least %d", got, n)
	}
}

// notCarried runs a client whose connections must not take the fast path (an intercepted
// name, plain HTTP): the verified counter does not move.
func (l *gwLab) notCarried(t *testing.T, vm *client.VM, host string, run func()) {
	t.Helper()
	verified, records := l.fastFlows("verified"), l.fastConnects(vm, host)
	run()
	if v, r := l.fastFlows("verified"), l.fastConnects(vm, host); v != verified || r != records {
		t.Errorf("%s took the fast path: verified flows %d→%d, fast records %d→%d", host, verified, v, records, r)
	}
}

// vmHTTPClient is an HTTP client of the test process that behaves as a program inside the
// VM: its sockets are made in the VM's namespace and it looks names up through the VM's
// gateway, so the addresses it dials were answered to the VM. cfg is its TLS configuration.
func (l *gwLab) vmHTTPClient(vm *client.VM, cfg *tls.Config) *http.Client {
	dial := netns.DialIn("/run/netns/" + vm.Network.Netns)
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dial(ctx, network, net.JoinHostPort(vm.Network.Gateway, "53"))
	}}
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig: cfg,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := resolver.LookupNetIP(ctx, "ip4", host)
			if err != nil {
				return nil, fmt.Errorf("looking up %s through the VM's gateway: %w", host, err)
			}
			return dial(ctx, "tcp4", net.JoinHostPort(ips[0].String(), port))
		},
	}}
}
