// Command proxybench measures egressd's explicit proxy against a direct connection in the
// same run, on loopback only:
//
//   - bulk throughput over one connection (a sink server on 127.0.0.2 sends, the client reads);
//   - new connections per second (connect, one byte each way, close), several at a time;
//   - time to the first byte of a new connection, median and p99;
//   - egressd's resident memory with N idle tunnels open.
//
// The proxied path uses a session whose policy allows 127.0.0.2/32 by allowed_cidrs, so the
// CONNECT is decided and relayed without TLS: what is measured is egressd's own cost.
//
//	go build -o bin/ ./cmd/egressd && go run ./bench/proxybench -egressd bin/egressd
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/policy"
)

func main() {
	bin := flag.String("egressd", "bin/egressd", "the egressd binary to run")
	bulk := flag.Int("bulk-mib", 1024, "MiB sent over one connection for the throughput figure (five runs each)")
	dur := flag.Duration("duration", 5*time.Second, "how long each connection-rate run lasts")
	conc := flag.Int("concurrency", 8, "connections opened at a time in the rate runs")
	idle := flag.Int("idle", 10000, "idle tunnels held open for the memory figure (0 to skip); each takes two descriptors in egressd and two here")
	flag.Parse()
	raiseFileLimit()

	srv, err := startServer("127.0.0.2:0")
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	eg, err := startEgressd(*bin)
	if err != nil {
		log.Fatal(err)
	}
	defer eg.stop()

	direct := func() (net.Conn, error) { return net.DialTimeout("tcp", srv.Addr().String(), 5*time.Second) }
	proxied := func() (net.Conn, error) { return connectVia(eg.proxyAddr, eg.auth, srv.Addr().String()) }

	fmt.Printf("egressd proxybench: loopback, %d-MiB bulk (median of 5), %v rate runs at concurrency %d\n\n", *bulk, *dur, *conc)
	fmt.Printf("%-34s %14s %14s %8s\n", "", "direct", "egressd", "ratio")
	// Alternate the two paths and take each one's median of five, so that a noisy
	// neighbour on a shared machine weighs on both alike.
	var ds, ps []float64
	for i := 0; i < 5; i++ {
		ds = append(ds, throughput(direct, *bulk))
		ps = append(ps, throughput(proxied, *bulk))
	}
	d, p := pct(ds, 50), pct(ps, 50)
	fmt.Printf("%-34s %10.0f MB/s %10.0f MB/s %7.1f%%\n", "bulk throughput, one connection", d, p, 100*p/d)
	dr, dl := rate(direct, *dur, *conc)
	pr, pl := rate(proxied, *dur, *conc)
	fmt.Printf("%-34s %12.0f/s %12.0f/s %7.1f%%\n", "new connections per second", dr, pr, 100*pr/dr)
	fmt.Printf("%-34s %12.0fµs %12.0fµs %+7.0fµs\n", "first byte, median", pct(dl, 50), pct(pl, 50), pct(pl, 50)-pct(dl, 50))
	fmt.Printf("%-34s %12.0fµs %12.0fµs %+7.0fµs\n", "first byte, p99", pct(dl, 99), pct(pl, 99), pct(pl, 99)-pct(dl, 99))
	if *idle > 0 {
		before := rss(eg.pid())
		conns, err := holdIdle(proxied, *idle)
		if err != nil {
			log.Printf("idle tunnels: %v (after %d)", err, len(conns))
		}
		time.Sleep(time.Second)
		after := rss(eg.pid())
		fmt.Printf("\n%d idle tunnels: egressd RSS %.1f MiB -> %.1f MiB, %.1f KiB per tunnel\n",
			len(conns), float64(before)/(1<<20), float64(after)/(1<<20), float64(after-before)/1024/float64(max(1, len(conns))))
		for _, c := range conns {
			c.Close()
		}
	}
}

// server: every connection gets a 4-byte command: "bulk" then an 8-digit MiB count (the
// server sends that much), or "ping" (the server echoes one byte per byte it reads).
func startServer(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	go func() {
		buf := make([]byte, 1<<20)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				cmd := make([]byte, 4)
				if _, err := io.ReadFull(c, cmd); err != nil {
					return
				}
				switch string(cmd) {
				case "bulk":
					n := make([]byte, 8)
					io.ReadFull(c, n)
					mib, _ := strconv.Atoi(string(n))
					for i := 0; i < mib; i++ {
						if _, err := c.Write(buf); err != nil {
							return
						}
					}
				case "ping":
					io.Copy(c, c)
				case "idle":
					io.Copy(io.Discard, c)
				}
			}(c)
		}
	}()
	return ln, nil
}

type egressd struct {
	cmd       *exec.Cmd
	dir       string
	proxyAddr string
	auth      string
}

func (e *egressd) pid() int { return e.cmd.Process.Pid }

func (e *egressd) stop() {
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.cmd.Wait()
	os.RemoveAll(e.dir)
}

func startEgressd(bin string) (*egressd, error) {
	dir, err := os.MkdirTemp("", "proxybench-")
	if err != nil {
		return nil, err
	}
	apiAddr, proxyAddr := freePort(), freePort()
	cmd := exec.Command(bin, "--api-listen", apiAddr, "--proxy-listen", proxyAddr,
		"--data-dir", filepath.Join(dir, "data"), "--api-rate-limit", "0", "--log-level", "warn",
		"--public-cidrs", "127.0.0.0/26",
		"--proxy-max-tunnels", strconv.Itoa(1<<20))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	e := &egressd{cmd: cmd, dir: dir, proxyAddr: proxyAddr}
	var key []byte
	for i := 0; i < 200; i++ {
		if key, err = os.ReadFile(filepath.Join(dir, "data", "admin.key")); err == nil {
			if c, derr := net.Dial("tcp", apiAddr); derr == nil {
				c.Close()
				break
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	if err != nil {
		e.stop()
		return nil, fmt.Errorf("egressd did not start: %w", err)
	}
	api, err := client.New("http://"+apiAddr, strings.TrimSpace(string(key)))
	if err != nil {
		e.stop()
		return nil, err
	}
	ctx := context.Background()
	if _, err := api.CreateVM(ctx, client.CreateVMRequest{VMID: "bench"}); err != nil {
		e.stop()
		return nil, err
	}
	s, err := api.CreateSession(ctx, client.CreateSessionRequest{VMID: "bench"})
	if err != nil {
		e.stop()
		return nil, err
	}
	if _, err := api.SetSessionPolicy(ctx, s.SessionID, policy.Policy{AllowedCIDRs: []string{"127.0.0.2/32"}}); err != nil {
		e.stop()
		return nil, err
	}
	u, _ := url.Parse(s.ProxyURL)
	pw, _ := u.User.Password()
	e.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pw))
	return e, nil
}

// connectVia opens a tunnel through the proxy. The server sends nothing before the client
// does, so no byte of the tunnel can be in the reader's buffer after the answer's header.
func connectVia(proxyAddr, auth, target string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n", target, target, auth)
	br := bufio.NewReaderSize(c, 512)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("CONNECT: %w", err)
	}
	if resp.StatusCode != http.StatusOK || br.Buffered() != 0 {
		c.Close()
		return nil, fmt.Errorf("CONNECT: %s (%d bytes early)", resp.Status, br.Buffered())
	}
	return c, nil
}

func throughput(dial func() (net.Conn, error), mib int) float64 {
	c, err := dial()
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	fmt.Fprintf(c, "bulk%08d", mib)
	n, err := io.Copy(io.Discard, c)
	if err != nil || n != int64(mib)<<20 {
		log.Fatalf("bulk: %d bytes, %v", n, err)
	}
	return float64(n) / 1e6 / time.Since(start).Seconds()
}

// rate opens connections for d, conc at a time, each doing one round trip; it returns the
// rate and the time to the first echoed byte of each, in microseconds.
func rate(dial func() (net.Conn, error), d time.Duration, conc int) (float64, []float64) {
	var mu sync.Mutex
	var lat []float64
	var n atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 1)
			for time.Now().Before(deadline) {
				start := time.Now()
				c, err := dial()
				if err != nil {
					log.Fatal(err)
				}
				c.Write([]byte("ping!"))
				if _, err := io.ReadFull(c, b); err != nil {
					log.Fatal(err)
				}
				us := float64(time.Since(start).Microseconds())
				c.Close()
				n.Add(1)
				mu.Lock()
				lat = append(lat, us)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds(), lat
}

func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[min(len(s)-1, int(float64(len(s))*p/100))]
}

func holdIdle(dial func() (net.Conn, error), n int) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := dial()
		if err != nil {
			return conns, err
		}
		c.Write([]byte("idle"))
		conns = append(conns, c)
	}
	return conns, nil
}

func rss(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// raiseFileLimit makes room for the idle tunnels: each holds two descriptors here (client
// and server end) and two in egressd, which inherits the limit. Root may raise the hard
// limit; anyone may raise the soft one to it.
func raiseFileLimit() {
	want := syscall.Rlimit{Cur: 65536, Max: 65536}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) == nil {
		return
	}
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
