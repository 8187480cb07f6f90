package intercept

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRequest compares an intercepted HTTPS request with a direct TLS request to the
// same origin, in the same run: HTTP/1.1 and HTTP/2, one request at a time on a kept-alive
// connection (ns/op is the latency; the difference is what interception adds) and from
// every core at once (req/s). The intercepted request carries a placeholder in its
// Authorization header, replaced toward the origin; the direct one the value itself. The
// origin answers 2 bytes.
func BenchmarkRequest(b *testing.B) {
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+realKey {
			http.Error(w, "no key", 401)
			return
		}
		io.WriteString(w, "ok")
	})
	e := newEnv(b, envOpts{handler: origin, noChecks: true, cfg: func(c *Config) { c.Sink = Discard }})
	ph := e.secrets.add("openai", realKey, apiHost)
	e.pol.set([]string{"GET", "POST"}, []string{"/v1/"})
	for _, proto := range []string{"http1", "h2"} {
		h2 := proto == "h2"
		for _, path := range []struct {
			name, auth string
			client     func() *http.Client
		}{
			{"direct", realKey, func() *http.Client { return e.direct(h2) }},
			{"intercepted", ph, func() *http.Client { return e.benchClient(h2) }},
		} {
			do := func(c *http.Client) error {
				req, _ := http.NewRequest("GET", "https://"+apiHost+"/v1/models", nil)
				req.Header.Set("Authorization", "Bearer "+path.auth)
				resp, err := c.Do(req)
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			}
			b.Run(proto+"/"+path.name+"/serial", func(b *testing.B) {
				c := path.client()
				do(c) // the connection is made outside the timing
				b.ResetTimer()
				start := time.Now()
				for b.Loop() {
					if err := do(c); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
			})
			b.Run(proto+"/"+path.name+"/parallel", func(b *testing.B) {
				c := path.client()
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := do(c); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
			})
		}
	}
}

// benchClient is client without the one-connection bound: HTTP/1.1 requests from every
// core each get a connection.
func (e *env) benchClient(h2 bool) *http.Client {
	c := e.client(h2)
	c.Transport.(*http.Transport).MaxConnsPerHost = 0
	c.Transport.(*http.Transport).MaxIdleConnsPerHost = 256
	return c
}

// BenchmarkIdleConnMemory measures what one idle intercepted connection costs the engine:
// the client's TLS connection, its HTTP server state, and its upstream connection to the
// origin, kept alive after one request. The clients and the origin run in a child process
// (this test binary again), so that the heap and the stacks measured here are the
// engine's alone.
func BenchmarkIdleConnMemory(b *testing.B) {
	const conns = 500
	for _, proto := range []string{"http1", "h2"} {
		b.Run(proto, func(b *testing.B) {
			for b.Loop() {
				heap, stack, gs := idleMemory(b, proto == "h2", conns)
				b.ReportMetric(heap, "heap-B/conn")
				b.ReportMetric(stack, "stack-B/conn")
				b.ReportMetric(gs, "goroutines/conn")
			}
		})
	}
}

func idleMemory(b *testing.B, h2 bool, n int) (heap, stack, goroutines float64) {
	var originAddr atomic.Value
	e := newEnv(b, envOpts{noChecks: true, cfg: func(c *Config) { c.Sink = Discard },
		dialer: DialFunc(func(ctx context.Context, _ string, _ uint16) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", originAddr.Load().(string))
		})})
	dir := b.TempDir()
	caFile := e.ca.WriteFile(b, dir)
	certFile, keyFile := writeLeaf(b, e, dir)

	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleClientsHelper$")
	cmd.Env = append(os.Environ(), "INTERCEPT_IDLE_HELPER="+strings.Join([]string{
		e.ln.Addr().String(), caFile, certFile, keyFile, strconv.Itoa(n), strconv.FormatBool(h2)}, ","))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	lines := bufio.NewScanner(stdout)
	next := func(want string) string {
		if !lines.Scan() || !strings.HasPrefix(lines.Text(), want) {
			b.Fatalf("the helper said %q, want %s...", lines.Text(), want)
		}
		return strings.TrimPrefix(lines.Text(), want)
	}
	originAddr.Store(next("origin "))
	h0, s0, g0 := memNow()
	io.WriteString(stdin, "go\n")
	next("ready")
	h1, s1, g1 := memNow()
	if r := e.engine; r != nil {
		e.mu.Lock()
		served := len(e.conns)
		e.mu.Unlock()
		if served != n {
			b.Fatalf("%d connections served, want %d", served, n)
		}
	}
	return float64(h1-h0) / float64(n), float64(s1-s0) / float64(n), float64(g1-g0) / float64(n)
}

// memNow is the heap and stack in use and the goroutines, after collecting garbage.
func memNow() (heap, stack uint64, goroutines int) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse, m.StackInuse, runtime.NumGoroutine()
}

// writeLeaf writes the origin's certificate for apiHost, from the CA the engine trusts.
func writeLeaf(b *testing.B, e *env, dir string) (certFile, keyFile string) {
	leaf, err := e.originCA.Certificate(&tls.ClientHelloInfo{ServerName: apiHost})
	if err != nil {
		b.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(leaf.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		b.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "origin.pem"), filepath.Join(dir, "origin.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
	return certFile, keyFile
}

// TestIdleClientsHelper is BenchmarkIdleConnMemory's child process; it does nothing
// unless the benchmark started it. It runs the origin, prints its address, waits for "go",
// opens the connections through the engine with one request each, prints "ready", and
// holds them until its stdin closes.
func TestIdleClientsHelper(t *testing.T) {
	spec := os.Getenv("INTERCEPT_IDLE_HELPER")
	if spec == "" {
		return
	}
	f := strings.Split(spec, ",")
	engineAddr, caFile, certFile, keyFile := f[0], f[1], f[2], f[3]
	n, _ := strconv.Atoi(f[4])
	h2 := f[5] == "true"

	leaf, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{leaf}, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(ln)
	fmt.Printf("origin %s\n", ln.Addr())

	in := bufio.NewReader(os.Stdin)
	in.ReadString('\n')
	pemCA, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	var keep []*http.Transport
	for range n {
		protos := new(http.Protocols)
		protos.SetHTTP1(!h2)
		protos.SetHTTP2(h2)
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", engineAddr)
			},
			TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: h2, Protocols: protos,
		}
		resp, err := (&http.Client{Transport: tr}).Get("https://" + apiHost + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		keep = append(keep, tr)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, in) // until the benchmark is done
	for _, tr := range keep {
		tr.CloseIdleConnections()
	}
}
