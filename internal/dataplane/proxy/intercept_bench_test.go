package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/keyring"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
	"github.com/egressd/egressd/internal/dataplane/certs"
	"github.com/egressd/egressd/internal/dataplane/dialer"
	"github.com/egressd/egressd/internal/dataplane/intercept"
	"github.com/egressd/egressd/internal/dataplane/resolve"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/egressd/egressd/policy"
)

// benchOriginIP is the benchmark's fake origin, inside Classifier.Public and used by no test.
const benchOriginIP = "127.0.0.60"

// BenchmarkHTTPS compares, through the explicit proxy and in the same run, an HTTPS request
// that is spliced (spliced.example.test: nothing intercepts it) with one that is intercepted
// (api.example.test: named by an http_rules entry and by a secret, whose placeholder the
// request carries in Authorization and the engine replaces), to the same origin on
// loopback, HTTP/1.1 and HTTP/2. "serial" is one request at a time on a kept-alive
// connection through its CONNECT tunnel (ns/op is the latency; the difference between the
// two is what interception adds); "parallel" is every core at once (req/s). The origin
// answers 2 bytes, and only to the real value.
func BenchmarkHTTPS(b *testing.B) {
	testnet.RequireRoot(b) // the origin listens on port 443
	const (
		value   = "sk-real-0123456789abcdef"
		spliced = "spliced.example.test"
		interc  = "api.example.test"
	)
	ca := testnet.NewCA(b)
	dns := testnet.StartDNS(b, "127.0.0.1")
	dns.Set(spliced, benchOriginIP)
	dns.Set(interc, benchOriginIP)
	benchOrigin(b, ca, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+value {
			http.Error(w, "no key", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	}))

	auth := benchAuthority(b)
	log := slog.New(slog.DiscardHandler)
	engine, err := intercept.New(intercept.Config{Certs: auth, RootCAs: ca.Pool, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { engine.Close() })
	book, ph := bookWith(b, "openai", value, interc)

	sessions := &fakeSessions{m: map[string]authEntry{}}
	sess, _ := sessions.add("ses_b", "tok_b", set(b, policy.Policy{
		AllowHTTPS:     true,
		AllowedDomains: []string{spliced, interc},
		HTTPRules:      []policy.HTTPRule{{Domain: interc, Methods: []string{"GET"}, Paths: []string{"/v1/"}}},
	}))
	sess.Tenant = "t" // the secret's tenant (bookWith)
	p, err := New(Config{
		Sessions:     sessions,
		Dialer:       &dialer.Dialer{Resolver: &resolve.Resolver{Upstream: dns.Addr}, Timeout: 3 * time.Second},
		Logger:       log,
		Interception: &Interception{Engine: engine, Secrets: book},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	ln := listen(b)
	go p.Serve(ln)

	roots := ca.Pool.Clone()
	roots.AddCert(auth.Certificate())
	proxyURL := &url.URL{Scheme: "http", User: url.UserPassword("ses_b", "tok_b"), Host: ln.Addr().String()}
	for _, proto := range []string{"http1", "h2"} {
		for _, path := range []struct{ name, host, key string }{
			{"spliced", spliced, value},
			{"intercepted", interc, ph},
		} {
			client := func(b *testing.B) *http.Client {
				c := benchClient(b, proxyURL, roots, proto == "h2")
				if err := benchGet(c, path.host, path.key, proto); err != nil { // the tunnel is made outside the timing
					b.Fatal(err)
				}
				return c
			}
			b.Run(proto+"/"+path.name+"/serial", func(b *testing.B) {
				c := client(b)
				start := time.Now()
				for b.Loop() {
					if err := benchGet(c, path.host, path.key, proto); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
			})
			b.Run(proto+"/"+path.name+"/parallel", func(b *testing.B) {
				c := client(b)
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := benchGet(c, path.host, path.key, proto); err != nil {
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

// benchOrigin serves HTTPS on benchOriginIP:443 with a certificate of ca, offering HTTP/2 and
// HTTP/1.1 (testnet.StartWeb offers only HTTP/1.1: a spliced HTTP/2 request needs the
// origin to speak it).
func benchOrigin(b *testing.B, ca *testnet.CA, h http.Handler) {
	ln, err := net.Listen("tcp", net.JoinHostPort(benchOriginIP, "443"))
	if err != nil {
		b.Fatal(err)
	}
	cfg := ca.ServerConfig().Clone()
	cfg.NextProtos = []string{"h2", "http/1.1"}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: stdlog.New(io.Discard, "", 0)}
	go srv.Serve(tls.NewListener(ln, cfg))
	b.Cleanup(func() { srv.Close() })
}

// benchAuthority is egressd's CA as the gateway sets it up, over a store of its own.
func benchAuthority(b *testing.B) *certs.Authority {
	st, err := sqlite.Open(b.Context(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	key, err := keyring.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	keys, err := keyring.New(key)
	if err != nil {
		b.Fatal(err)
	}
	a, err := certs.Setup(b.Context(), st, keys, certs.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// benchClient is a client through the proxy that trusts roots and speaks HTTP/2 (h2) or
// only HTTP/1.1, with a connection per core for HTTP/1.1 in the parallel runs.
func benchClient(b *testing.B, proxyURL *url.URL, roots *x509.CertPool, h2 bool) *http.Client {
	tr := &http.Transport{
		Proxy:               http.ProxyURL(proxyURL),
		TLSClientConfig:     &tls.Config{RootCAs: roots},
		MaxIdleConnsPerHost: 256,
		DialContext:         (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
	}
	if h2 {
		tr.ForceAttemptHTTP2 = true
	} else {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// benchGet asks for /v1/models with key in Authorization and requires the origin's 200 over
// the protocol asked for.
func benchGet(c *http.Client, host, key, proto string) error {
	req, err := http.NewRequest("GET", "https://"+host+"/v1/models", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", host, resp.Status)
	}
	if want := map[string]int{"http1": 1, "h2": 2}[proto]; resp.ProtoMajor != want {
		return fmt.Errorf("%s: %s, want HTTP/%d", host, resp.Proto, want)
	}
	return nil
}
