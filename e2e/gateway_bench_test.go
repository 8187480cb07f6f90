package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/policy"
)

// The gateway benchmarks run in the namespaces of the end-to-end lab, as root:
//
//	go test -run '^$' -bench Gateway -benchtime 3s ./e2e/
//
// Each compares the path by name (DNS filter, transparent proxy) with the same traffic to an
// address that the VM's allowed_cidrs covers. Both go through the transparent proxy: TCP 80
// and 443 are always redirected to it, allowed_cidrs destinations included (a name seen there
// is judged), so "forwarded" is the proxy relaying by address without a name to judge.
// BenchmarkFastPath (fastpath_bench_test.go) compares with forwarding by the kernel.

// benchVMs makes two VMs: "enforced" reaches the web server by name only, "forwarded" has the
// server's address in allowed_cidrs.
func benchVMs(b *testing.B) (*gwLab, *client.VM, *client.VM) {
	l := newGWLab(b)
	enforced := l.vm("enforced", &policy.Policy{AllowHTTP: true, AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})
	forwarded := l.vm("forwarded", &policy.Policy{AllowHTTP: true, AllowedCIDRs: []string{webAddr + "/32"}})
	return l, enforced, forwarded
}

// get sends one HTTP request for path on a new connection made inside the VM and reads the
// whole answer.
func get(b *testing.B, vm *client.VM, path string) int64 {
	c, err := netns.DialIn(vm.Network.Path)(context.Background(), "tcp", webAddr+":80")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 64<<10), nil)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("%s: %d, %v", path, resp.StatusCode, err)
	}
	return n
}

func BenchmarkGatewayThroughput(b *testing.B) {
	l, enforced, forwarded := benchVMs(b)
	_ = l
	const size = 64 << 20
	for _, tc := range []struct {
		name string
		vm   *client.VM
	}{{"forwarded", forwarded}, {"enforced", enforced}} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				get(b, tc.vm, fmt.Sprintf("/bytes?n=%d", size))
			}
		})
	}
}

func BenchmarkGatewayNewConnections(b *testing.B) {
	_, enforced, forwarded := benchVMs(b)
	for _, tc := range []struct {
		name string
		vm   *client.VM
	}{{"forwarded", forwarded}, {"enforced", enforced}} {
		b.Run(tc.name, func(b *testing.B) {
			lat := make([]float64, 0, b.N)
			for i := 0; i < b.N; i++ {
				start := time.Now()
				get(b, tc.vm, "/")
				lat = append(lat, float64(time.Since(start).Microseconds()))
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
			b.ReportMetric(percentile(lat, 50), "p50-µs")
			b.ReportMetric(percentile(lat, 99), "p99-µs")
		})
	}
}

// BenchmarkGatewayDNS is the answer latency of the DNS filter for an allowed name (asked from
// the sandbox, forwarded upstream, filtered), beside the same query asked of the upstream
// directly from the gateway.
func BenchmarkGatewayDNS(b *testing.B) {
	l, enforced, _ := benchVMs(b)
	for _, tc := range []struct {
		name   string
		ns     string
		server string
	}{
		{"upstream-direct", "/run/netns/" + l.gwNS, dnsAddr + ":53"},
		{"filtered", enforced.Network.Path, enforced.Network.Gateway + ":53"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			dial := netns.DialIn(tc.ns)
			c, err := dial(context.Background(), "udp", tc.server)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			conn := &dns.Conn{Conn: c}
			m := new(dns.Msg)
			m.SetQuestion("api.example.test.", dns.TypeA)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m.Id = dns.Id()
				c.SetDeadline(time.Now().Add(2 * time.Second))
				if err := conn.WriteMsg(m); err != nil {
					b.Fatal(err)
				}
				r, err := conn.ReadMsg()
				if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
					b.Fatalf("answer %v, %v", r, err)
				}
			}
		})
	}
}

// BenchmarkGatewayPolicyToEnforcement is the time from a policy POST's answer to the moment
// the sandbox's next connection follows it: each op allows the name and waits until a
// request succeeds, then denies it and waits until a request is refused.
func BenchmarkGatewayPolicyToEnforcement(b *testing.B) {
	l, enforced, _ := benchVMs(b)
	try := func() bool {
		c, err := netns.DialIn(enforced.Network.Path)(context.Background(), "tcp", webAddr+":80")
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		return err == nil && resp.StatusCode == http.StatusOK
	}
	var lat []float64
	wait := func(want bool) {
		start := time.Now()
		for try() != want {
			if time.Since(start) > 5*time.Second {
				b.Fatalf("not enforced within 5s (want allowed=%v)", want)
			}
		}
		lat = append(lat, float64(time.Since(start).Microseconds()))
	}
	allow := policy.Policy{AllowHTTP: true, AllowedDomains: []string{"api.example.test"}}
	deny := policy.Policy{AllowHTTP: true, AllowedDomains: []string{"other.example.test"}}
	for i := 0; i < b.N; i++ {
		l.setVM("enforced", deny)
		wait(false)
		l.setVM("enforced", allow)
		wait(true)
	}
	b.ReportMetric(percentile(lat, 50), "p50-µs")
	b.ReportMetric(percentile(lat, 99), "p99-µs")
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[min(len(s)-1, int(float64(len(s))*p/100))]
}
