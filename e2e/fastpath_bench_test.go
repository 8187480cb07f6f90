package e2e

import (
	"crypto/tls"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// BenchmarkFastPath measures, in one run in the namespace lab, four paths for allowed HTTPS
// from a sandbox (issue 16), as root:
//
//	go test -run '^$' -bench FastPath -benchtime 2s -v ./e2e/
//
//	forwarded  kernel forwarding, no proxy: a VM whose allowed_cidrs holds the servers'
//	           addresses, to port 8443 (80 and 443 always go to the proxy; other ports of
//	           allowed_cidrs are routed by the kernel). The ceiling.
//	relay      a bare splice relay in the gateway namespace (fastpath_lab_test.go), no
//	           parsing and no decision, reached from a namespace of its own: the limit of
//	           any design that terminates TCP in the gateway.
//	proxy      a VM reaching the names on 443 through egressd's transparent proxy.
//	fast       the same with egressd started with --fast-path (a second lab: the flag is
//	           process-wide); the run fails unless the fast path verified its connections.
//	fwd-fp     "forwarded" again, in the second lab: kernel forwarding on a gateway that
//	           runs the fast path (the base "fast" compares with on the same gateway).
//
// Sub-benchmarks:
//
//	bulk/<path>   one new connection per op: a ClientHello, then 64 MiB downloaded from the
//	              TLS-fronted raw server (see addBulkServer). MB/s; CPU seconds per GB of
//	              the gateway's process on the path (egressd or the relay: cpu-s/GB), and
//	              of the whole machine (machine-cpu-s/GB).
//	conns/<path>  one new connection per op with a real TLS handshake (crypto/tls, the lab
//	              CA, no resumption), GET / over HTTP/1.1, the answer read: conns/s, p50
//	              and p99 of connect+request, and the gateway process's CPU per connection.
//
// The machine figure counts the client and the servers too, which are the same work on
// every path: machine-cpu-s/GB minus forwarded's is what the gateway adds per GB, the cost a
// platform pays for the path; the summary logged at the end (with -v) prints it, and the ratios of each path to forwarded for bulk and
// conns/s. It also prints the machine's background load just before the run: on a small
// shared machine, other work moves every figure (use -count and benchstat to see how much).
func BenchmarkFastPath(b *testing.B) {
	hello := testnet.ClientHello(b, bulkHelloConfig())
	l := newGWLab(b)
	addBulkServer(b, l, hello)
	relay := startBareRelay(b, l)
	named := &policy.Policy{AllowHTTPS: true, AllowedDomains: []string{fpWebName, fpBulkName}}
	paths := []*fpPath{
		vmPath(l, "forwarded", &policy.Policy{AllowedCIDRs: []string{webAddr + "/32", fpBulkAddr + "/32"}},
			webAddr+":"+fpAltPort, fpBulkAddr+":"+fpAltPort),
		{name: "relay", ns: relay.clientNS, ca: l.ca, gateway: relay.pid,
			web: relayGWAddr + ":443", bulk: relayGWAddr + ":8443"},
		vmPath(l, "proxy", named, webAddr+":443", fpBulkAddr+":443"),
	}
	fl := newGWLab(b, "--fast-path")
	addBulkServer(b, fl, hello)
	paths = append(paths, vmPath(fl, "fast", named, webAddr+":443", fpBulkAddr+":443"),
		// The same kernel forwarding as "forwarded", on the gateway that runs the fast
		// path: what turning it on costs other traffic (its fragment chain, its rules), and
		// the fairest base of "fast".
		vmPath(fl, "fwd-fp", &policy.Policy{AllowedCIDRs: []string{webAddr + "/32", fpBulkAddr + "/32"}},
			webAddr+":"+fpAltPort, fpBulkAddr+":"+fpAltPort))
	background := backgroundLoad(b)
	for _, p := range paths {
		b.Run("bulk/"+p.name, func(b *testing.B) { benchBulk(b, p, hello) })
	}
	for _, p := range paths {
		b.Run("conns/"+p.name, func(b *testing.B) { benchConns(b, p) })
	}
	// The fast figures are the fast path's only if it carried the connections.
	if v, r := fl.fastFlows("verified"), fl.fastFlows("refused"); v == 0 || r != 0 {
		b.Fatalf("the fast path verified %d flows and refused %d: its figures are not the fast path's", v, r)
	}
	b.Log(fastPathSummary(paths, background))
}

// fpPath is one way from a client to the fake internet's servers, and what it measured.
type fpPath struct {
	name    string
	ns      string // the client's namespace
	ca      *testnet.CA
	web     string // the TLS web server (api.example.test) as this path reaches it
	bulk    string // the bulk server (bulk.example.test) as this path reaches it
	gateway int    // PID of the process in the gateway on this path: egressd, or the relay
	// names are looked up through the gateway's DNS filter before each run and every 20 s
	// (the fast path forwards only to an address the gateway gave this VM for the name;
	// answers have a 30 s TTL); nil for paths that use no name.
	names map[string]string // name → the address it must resolve to
	dns   string            // the gateway's DNS address, for names

	// One result per run of each sub-benchmark: b.Loop runs its function once per -count.
	bulkRuns  []fpBulk
	connsRuns []fpConns
}

type fpBulk struct{ mbps, procPerGB, machinePerGB float64 }

type fpConns struct{ perSec, p50, p99, procPerConn float64 }

// vmPath makes a VM of the lab with policy p whose client reaches the web and bulk servers
// at web and bulk.
func vmPath(l *gwLab, name string, p *policy.Policy, web, bulk string) *fpPath {
	vm := l.vm(name, p)
	fp := &fpPath{name: name, ns: vm.Network.Path, ca: l.ca, gateway: l.in.PID(), web: web, bulk: bulk}
	if len(p.AllowedDomains) > 0 {
		fp.names = map[string]string{fpWebName: webAddr, fpBulkName: fpBulkAddr}
		fp.dns = net.JoinHostPort(vm.Network.Gateway, "53")
	}
	return fp
}

// lookUp asks the gateway for each of the path's names from the client's namespace (the
// caller is in it) and checks the answers.
func (p *fpPath) lookUp() error {
	c := dns.Client{Net: "udp", Timeout: 3 * time.Second}
	for name, want := range p.names {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		r, _, err := c.Exchange(m, p.dns)
		if err != nil {
			return fmt.Errorf("looking up %s: %w", name, err)
		}
		if len(r.Answer) != 1 {
			return fmt.Errorf("looking up %s: %v", name, r)
		}
		if a, ok := r.Answer[0].(*dns.A); !ok || a.A.String() != want {
			return fmt.Errorf("looking up %s: %v, want %s", name, r.Answer[0], want)
		}
	}
	return nil
}

// cpuNow reads the gateway process's CPU seconds and the machine's.
func (p *fpPath) cpuNow() (proc, machine float64, err error) {
	if proc, err = procCPU(p.gateway); err != nil {
		return 0, 0, err
	}
	machine, err = machineCPU()
	return proc, machine, err
}

// loop runs op as long as b.Loop asks, inside the path's namespace, timed, with the names
// looked up before and every 20 s (outside the timer), and returns the CPU seconds the
// gateway process and the machine used meanwhile. It runs on a thread of its own
// (netns.Do), so it reports errors instead of failing the benchmark.
func (p *fpPath) loop(b *testing.B, op func() error) (proc, machine float64, err error) {
	err = netns.Do(p.ns, func() error {
		if err := p.lookUp(); err != nil {
			return err
		}
		asked := time.Now()
		proc0, machine0, err := p.cpuNow()
		if err != nil {
			return err
		}
		for i := 0; b.Loop(); i++ {
			if p.names != nil && time.Since(asked) > 20*time.Second {
				b.StopTimer()
				if err := p.lookUp(); err != nil {
					return err
				}
				asked = time.Now()
				b.StartTimer()
			}
			if err := op(); err != nil {
				return fmt.Errorf("op %d: %w", i, err)
			}
		}
		proc1, machine1, err := p.cpuNow()
		proc, machine = proc1-proc0, machine1-machine0
		return err
	})
	return proc, machine, err
}

func benchBulk(b *testing.B, p *fpPath, hello []byte) {
	buf := make([]byte, 1<<20)
	proc, machine, err := p.loop(b, func() error {
		c, err := net.DialTimeout("tcp", p.bulk, 5*time.Second)
		if err != nil {
			return err
		}
		c.SetDeadline(time.Now().Add(time.Minute))
		return bulkFetch(c, hello, fpBulkSize, buf)
	})
	if err != nil {
		b.Fatalf("%s bulk to %s: %v", p.name, p.bulk, err)
	}
	bytes := float64(b.N) * fpBulkSize
	r := fpBulk{mbps: bytes / 1e6 / b.Elapsed().Seconds(), procPerGB: proc / (bytes / 1e9), machinePerGB: machine / (bytes / 1e9)}
	p.bulkRuns = append(p.bulkRuns, r)
	b.ReportMetric(r.mbps, "MB/s")
	b.ReportMetric(r.procPerGB, "cpu-s/GB")
	b.ReportMetric(r.machinePerGB, "machine-cpu-s/GB")
}

func benchConns(b *testing.B, p *fpPath) {
	// No ClientSessionCache: every connection makes a full handshake.
	cfg := &tls.Config{ServerName: fpWebName, RootCAs: p.ca.Pool, NextProtos: []string{"http/1.1"}}
	var lat []float64
	proc, _, err := p.loop(b, func() error {
		start := time.Now()
		if err := tlsGet(p.web, cfg); err != nil {
			return err
		}
		lat = append(lat, float64(time.Since(start).Microseconds()))
		return nil
	})
	if err != nil {
		b.Fatalf("%s TLS GET to %s: %v", p.name, p.web, err)
	}
	r := fpConns{perSec: float64(b.N) / b.Elapsed().Seconds(), p50: percentile(lat, 50), p99: percentile(lat, 99),
		procPerConn: proc / float64(b.N) * 1e6}
	p.connsRuns = append(p.connsRuns, r)
	b.ReportMetric(r.perSec, "conns/s")
	b.ReportMetric(r.p50, "p50-µs")
	b.ReportMetric(r.p99, "p99-µs")
	b.ReportMetric(r.procPerConn, "cpu-µs/conn")
}

// bulkMedian is the median of each figure over the bulk runs (the upper one for an even count),
// zero when there were none.
func (p *fpPath) bulkMedian() fpBulk {
	return fpBulk{
		mbps:         median(p.bulkRuns, func(r fpBulk) float64 { return r.mbps }),
		procPerGB:    median(p.bulkRuns, func(r fpBulk) float64 { return r.procPerGB }),
		machinePerGB: median(p.bulkRuns, func(r fpBulk) float64 { return r.machinePerGB }),
	}
}

// connsMedian is the median of each figure over the conns runs, as bulkMedian.
func (p *fpPath) connsMedian() fpConns {
	return fpConns{
		perSec:      median(p.connsRuns, func(r fpConns) float64 { return r.perSec }),
		p50:         median(p.connsRuns, func(r fpConns) float64 { return r.p50 }),
		p99:         median(p.connsRuns, func(r fpConns) float64 { return r.p99 }),
		procPerConn: median(p.connsRuns, func(r fpConns) float64 { return r.procPerConn }),
	}
}

func median[R any](runs []R, f func(R) float64) float64 {
	xs := make([]float64, len(runs))
	for i, r := range runs {
		xs[i] = f(r)
	}
	return percentile(xs, 50)
}

// fastPathSummary is the table of the run, each path beside forwarded: the ratios the issue
// asks for, measured in the same run; with -count N, of each figure's median over the N
// runs of its sub-benchmark (the runs of one path follow each other, so the median is what
// stands against the machine's other work). A figure not measured in this run (a -bench filter) is "-". background is the machine's busy CPUs while the benchmark was idle, just
// before it: other work on the machine weighs on every figure, machine/GB most.
func fastPathSummary(paths []*fpPath, background float64) string {
	fwd := &fpPath{}
	for _, p := range paths {
		if p.name == "forwarded" {
			fwd = p
		}
	}
	num := func(x float64, format string) string {
		if x == 0 {
			return "-"
		}
		return fmt.Sprintf(format, x)
	}
	ratio := func(x, base float64) string {
		if x == 0 || base == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", x/base)
	}
	added := func(x, base float64) string {
		if x == 0 || base == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3f", x-base)
	}
	var s strings.Builder
	fmt.Fprintf(&s, "\n%-10s %8s %6s %8s %6s %7s %7s %9s %10s %9s %11s\n", "path", "MB/s", "÷fwd", "conns/s", "÷fwd",
		"p50-µs", "p99-µs", "cpu-s/GB", "machine/GB", "added/GB", "cpu-µs/conn")
	for _, p := range paths {
		bk, cn, fb := p.bulkMedian(), p.connsMedian(), fwd.bulkMedian()
		fmt.Fprintf(&s, "%-10s %8s %6s %8s %6s %7s %7s %9s %10s %9s %11s\n", p.name,
			num(bk.mbps, "%.0f"), ratio(bk.mbps, fb.mbps), num(cn.perSec, "%.0f"), ratio(cn.perSec, fwd.connsMedian().perSec),
			num(cn.p50, "%.0f"), num(cn.p99, "%.0f"), num(bk.procPerGB, "%.3f"), num(bk.machinePerGB, "%.3f"),
			added(bk.machinePerGB, fb.machinePerGB), num(cn.procPerConn, "%.0f"))
	}
	fmt.Fprintf(&s, "background: %.2f of the machine's %d CPUs were busy just before the run, with the benchmark idle", background, runtime.NumCPU())
	if background > 0.2*float64(runtime.NumCPU()) {
		s.WriteString(": other work shares the machine, so these figures and ratios are not the paths' own")
	}
	s.WriteString(".\n")
	s.WriteString("added/GB: the machine's CPU seconds per GB beyond forwarded's: what the gateway's path costs a platform.\n" +
		"cpu-s/GB, cpu-µs/conn: the process on the path in the gateway: egressd, or for relay the relay; forwarded's is\n" +
		"egressd's, spent on flows the kernel forwards (it reads their conntrack events).")
	return s.String()
}

// backgroundLoad is how many CPUs the machine keeps busy over a second in which the
// benchmark does nothing.
func backgroundLoad(b *testing.B) float64 {
	before, err := machineCPU()
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	time.Sleep(time.Second)
	after, err := machineCPU()
	if err != nil {
		b.Fatal(err)
	}
	return (after - before) / time.Since(start).Seconds()
}
