package proxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/egressd/egressd/internal/controlplane/keyring"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
	"github.com/egressd/egressd/internal/dataplane/certs"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/intercept"
	"github.com/egressd/egressd/internal/dataplane/socks5"
	"github.com/egressd/egressd/policy"
)

// TestSOCKSIntercepted: SOCKS5 CONNECT to an intercepted name on 443 is intercepted as
// after an HTTP CONNECT: the client meets egressd's CA, and each request is decided by
// the http_rules; a ClientHello for another name is still refused.
func TestSOCKSIntercepted(t *testing.T) {
	st, err := sqlite.Open(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, err := keyring.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := keyring.New(key)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := certs.Setup(t.Context(), st, keys, certs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var engine *intercept.Engine
	upstreamRoots := x509.NewCertPool() // the test CA's, once newEnv has made it
	e := newEnv(t, policy.Policy{
		AllowHTTPS: true, AllowedDomains: []string{"api.example.test"},
		HTTPRules: []policy.HTTPRule{{Domain: "api.example.test", Methods: []string{"GET"}, Paths: []string{"/headers"}}},
	}, func(c *Config) {
		engine, err = intercept.New(intercept.Config{Certs: auth, RootCAs: upstreamRoots, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		c.Interception = &Interception{Engine: engine}
	})
	t.Cleanup(func() { engine.Close() })
	upstreamRoots.AppendCertsFromPEM(e.ca.PEM)
	socks := e.startSOCKS()
	roots := e.ca.Pool.Clone()
	roots.AddCert(auth.Certificate())

	c, rep := e.socksConnect(socks, "api.example.test", 443)
	if rep != socks5.Succeeded {
		t.Fatal(rep)
	}
	tc := tls.Client(c, &tls.Config{ServerName: "api.example.test", RootCAs: roots, NextProtos: []string{"http/1.1"}})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS with egressd's CA: %v", err)
	}
	if tc.ConnectionState().PeerCertificates[0].Issuer.String() != auth.Certificate().Subject.String() {
		t.Errorf("the certificate is not egressd's: %v", tc.ConnectionState().PeerCertificates[0].Issuer)
	}
	br := bufio.NewReader(tc)
	for _, rq := range []struct {
		path   string
		status int
		reason policy.Reason
	}{
		{"/headers", 200, ""},
		{"/other", 403, policy.ReasonPathNotAllowed},
	} {
		io.WriteString(tc, "GET "+rq.path+" HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", rq.path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != rq.status || policy.Reason(resp.Header.Get("X-Egress-Reason")) != rq.reason {
			t.Errorf("%s: %s %q, want %d %q", rq.path, resp.Status, resp.Header.Get("X-Egress-Reason"), rq.status, rq.reason)
		}
	}
	c.Close()
	r := e.sink.wait(t, "connect", func(r events.Record) bool { return r.Kind == events.KindConnect })
	if r.Decision != events.Allow || r.Host != "api.example.test" || r.SessionID != "ses_a" {
		t.Errorf("record %+v", r)
	}

	// Another name in the ClientHello: refused before the engine answers it.
	e.sink.reset()
	c, rep = e.socksConnect(socks, "api.example.test", 443)
	if rep != socks5.Succeeded {
		t.Fatal(rep)
	}
	if err := tls.Client(c, &tls.Config{ServerName: "other.example.test", RootCAs: roots}).Handshake(); err == nil {
		t.Error("a ClientHello for another name was answered")
	}
	r = e.sink.wait(t, "sni refusal", func(r events.Record) bool { return r.Kind == events.KindConnect })
	if r.Decision != events.Deny || r.Reason != policy.ReasonSNIMismatch {
		t.Errorf("record %s %q", r.Decision, r.Reason)
	}
}
