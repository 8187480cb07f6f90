package proxy

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/keyring"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
	"github.com/egressd/egressd/internal/dataplane/secrets"
	"github.com/egressd/egressd/policy"
)

// staticLive is a Live with a fixed policy and no tracking.
type staticLive struct{ eff *policy.Effective }

func (l staticLive) Effective() *policy.Effective { return l.eff }

func (l staticLive) Done() <-chan struct{} { return nil }
func (l staticLive) Track(policy.Conn, func(string)) func() {
	return func() {}
}

// bookWith starts a secrets book over a fresh store holding one secret of tenant "t".
func bookWith(t testing.TB, name, value string, domains ...string) (*secrets.Book, string) {
	t.Helper()
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
	ph := "egressd-secret-" + name + "-" + strings.Repeat("a", 24)
	sealed, err := keys.Seal([]byte(value), keyring.SecretAD("t", name, ph))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSecret(t.Context(), store.Secret{Tenant: "t", Name: name, Domains: domains, Placeholder: ph, Sealed: sealed}); err != nil {
		t.Fatal(err)
	}
	b := secrets.New(st, keys, secrets.Config{Poll: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return b, ph
}

// TestInterceptionDecisions: a host is intercepted by an http_rules entry or by a secret's
// domain; the secrets adapter gives the value only toward the secret's domains; a
// placeholder in a plain-HTTP request is found whatever its host.
func TestInterceptionDecisions(t *testing.T) {
	book, ph := bookWith(t, "tok", "the-value-0123456789", "*.api.test")
	ix := newInterception(&Interception{Engine: nil, Secrets: book})
	if ix != nil {
		t.Fatal("an Interception without an engine is taken")
	}
	ix = &interception{cfg: Interception{Secrets: book, Recheck: time.Second}, domains: map[string]tenantDomains{}}
	m, err := policy.Compile(policy.Policy{AllowHTTPS: true, HTTPRules: []policy.HTTPRule{{Domain: "rules.test"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	eff := policy.NewEffective(nil, policy.Layered{Layer: policy.LayerSession, Matcher: m})
	s := &Source{Tenant: "t", ID: "s", Live: staticLive{eff}}
	other := &Source{Tenant: "u", ID: "s2", Live: staticLive{eff}}
	for _, tc := range []struct {
		src  *Source
		host string
		want bool
	}{
		{s, "rules.test", true},
		{s, "x.api.test", true},
		{s, "api.test", false}, // "*." does not hold the name itself
		{s, "plain.test", false},
		{other, "x.api.test", false}, // another tenant's secret
		{other, "rules.test", true},
	} {
		if got := ix.intercepts(tc.src, tc.host); got != tc.want {
			t.Errorf("tenant %s, %s: intercepts = %v, want %v", tc.src.Tenant, tc.host, got, tc.want)
		}
	}
	if d1, d2 := ix.secretDomains("t"), ix.secretDomains("t"); d1 == nil || d1 != d2 {
		t.Error("the tenant's domains are not compiled once per set")
	}

	lookup := tenantSecrets{ix, "t"}
	if se, ok := lookup.Lookup(ph, "x.api.test"); !ok || !se.ForHost || se.Value != "the-value-0123456789" || se.Name != "tok" {
		t.Errorf("toward its domain: %+v %v", se.Name, ok)
	}
	if se, ok := lookup.Lookup(ph, "evil.test"); !ok || se.ForHost || se.Value != "" {
		t.Errorf("toward another host: ForHost %v, a value given: %v", se.ForHost, se.Value != "")
	}
	if _, ok := (tenantSecrets{ix, "u"}).Lookup(ph, "x.api.test"); ok {
		t.Error("another tenant's placeholder is found")
	}

	p := &Proxy{ix: ix}
	c := &clientConn{p: p}
	h := http.Header{"X-Key": {"k=" + ph}}
	if got := c.secretsOverHTTP(h, nil, s, "x.api.test"); len(got) != 1 || got[0] != "tok" {
		t.Errorf("secretsOverHTTP = %v", got)
	}
	if got := c.secretsOverHTTP(h, nil, other, "x.api.test"); len(got) != 0 {
		t.Errorf("another tenant: %v", got)
	}
	// In the target too: a placeholder travels in the clear wherever it is in the head.
	for _, target := range []string{"http://x.api.test/p?k=" + ph, "http://x.api.test/" + ph,
		"http://x.api.test/" + strings.ReplaceAll(ph, "-", "%2D"), "http://x.api.test/?k=" + strings.ReplaceAll(ph, "-", "%2D")} {
		u, err := url.Parse(target)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.secretsOverHTTP(http.Header{}, u, s, "x.api.test"); len(got) != 1 || got[0] != "tok" {
			t.Errorf("%s: secretsOverHTTP = %v", target, got)
		}
	}
	if got := (&clientConn{p: &Proxy{}}).secretsOverHTTP(h, nil, s, "x.api.test"); got != nil {
		t.Errorf("without interception: %v", got)
	}
}
