package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/keyring"
	"github.com/egressd/egressd/internal/controlplane/store"
)

// memStore is the store's CA in memory, with InitCA's keep-the-first rule.
type memStore struct {
	mu sync.Mutex
	ca *store.CA
}

func (m *memStore) GetCA(context.Context) (store.CA, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ca == nil {
		return store.CA{}, fmt.Errorf("get ca: %w", store.ErrNotFound)
	}
	return *m.ca, nil
}

func (m *memStore) InitCA(_ context.Context, ca store.CA) (store.CA, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ca == nil {
		m.ca = &ca
	}
	return *m.ca, nil
}

func newKeyring(t testing.TB) *keyring.Keyring {
	t.Helper()
	key, err := keyring.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := keyring.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func setup(t testing.TB, o Options) *Authority {
	t.Helper()
	a, err := Setup(context.Background(), &memStore{}, newKeyring(t), o)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// verify checks leaf's chain to the CA for name, as a client that trusts only the CA would.
func verify(t *testing.T, a *Authority, leaf *tls.Certificate, name string, at time.Time) error {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(a.CertPEM())
	cert, err := x509.ParseCertificate(leaf.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, der := range leaf.Certificate[1:] {
		c, _ := x509.ParseCertificate(der)
		inter.AddCert(c)
	}
	_, err = cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

func TestGeneratedCA(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	a := setup(t, Options{Hostname: "gw-1", Now: func() time.Time { return now }})
	ca := a.Certificate()
	if a.Origin() != OriginCreated {
		t.Errorf("origin %q, want %q", a.Origin(), OriginCreated)
	}
	if ca.Subject.CommonName != "egressd sandbox CA gw-1" {
		t.Errorf("CN %q", ca.Subject.CommonName)
	}
	if !ca.IsCA || !ca.BasicConstraintsValid || ca.MaxPathLen != 0 || !ca.MaxPathLenZero {
		t.Errorf("constraints: IsCA %v valid %v MaxPathLen %d zero %v", ca.IsCA, ca.BasicConstraintsValid, ca.MaxPathLen, ca.MaxPathLenZero)
	}
	if ca.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("key usage %v", ca.KeyUsage)
	}
	if pub, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", ca.PublicKey)
	}
	if got := ca.NotAfter.Sub(now); got < CAValidity-time.Second || got > CAValidity {
		t.Errorf("valid for %v after now, want %v", got, CAValidity)
	}
	if !ca.NotBefore.Before(now) || len(ca.SubjectKeyId) == 0 {
		t.Errorf("NotBefore %v, SubjectKeyId %x", ca.NotBefore, ca.SubjectKeyId)
	}
	if ca.SerialNumber.Sign() <= 0 || ca.SerialNumber.BitLen() < 64 {
		t.Errorf("serial %v", ca.SerialNumber)
	}
	block, rest := pem.Decode(a.CertPEM())
	if block == nil || block.Type != "CERTIFICATE" || !bytes.Equal(block.Bytes, ca.Raw) || len(bytes.TrimSpace(rest)) != 0 {
		t.Errorf("CertPEM is not the CA's certificate alone")
	}
}

func TestLeafVerifies(t *testing.T) {
	now := time.Now()
	a := setup(t, Options{})
	for _, name := range []string{"api.example.test", "a.b.c.example.test", "xn--bcher-kva.example.test"} {
		leaf, err := a.Leaf(name)
		if err != nil {
			t.Fatalf("Leaf(%s): %v", name, err)
		}
		if err := verify(t, a, leaf, name, now); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		// The certificate is for that name only.
		if err := verify(t, a, leaf, "other.example.test", now); err == nil {
			t.Errorf("the leaf of %s verifies for other.example.test", name)
		}
		l := leaf.Leaf
		if len(l.DNSNames) != 1 || l.DNSNames[0] != name || l.IsCA || len(l.IPAddresses) != 0 {
			t.Errorf("%s: DNSNames %v IsCA %v", name, l.DNSNames, l.IsCA)
		}
		if v := l.NotAfter.Sub(now); v < DefaultLeafValidity-time.Minute || v > DefaultLeafValidity {
			t.Errorf("%s: valid %v from now, want %v", name, v, DefaultLeafValidity)
		}
		if skew := now.Sub(l.NotBefore); skew < Backdate-time.Minute {
			t.Errorf("%s: backdated %v, want %v", name, skew, Backdate)
		}
		// Valid for clients whose clock is half an hour slow.
		if err := verify(t, a, leaf, name, now.Add(-30*time.Minute)); err != nil {
			t.Errorf("%s, a slow client clock: %v", name, err)
		}
	}
	// One name in other spellings is one name.
	l1, _ := a.Leaf("API.Example.Test.")
	l2, _ := a.Leaf("api.example.test")
	if l1 != l2 {
		t.Error("API.Example.Test. and api.example.test got two certificates")
	}
	// A TLS handshake with GetCertificate.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(a.CertPEM())
	handshake(t, &tls.Config{GetCertificate: a.GetCertificate}, &tls.Config{ServerName: "hs.example.test", RootCAs: roots})
}

// handshake runs one TLS handshake over a pipe and fails the test if it fails.
func handshake(t *testing.T, server, client *tls.Config) {
	t.Helper()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	errc := make(chan error, 1)
	go func() { errc <- tls.Server(c1, server).Handshake() }()
	if err := tls.Client(c2, client).Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}

func TestLeafRefuses(t *testing.T) {
	a := setup(t, Options{})
	for _, name := range []string{"", "*.example.test", "192.0.2.1", "::1", "a b.test", "a..b", strings.Repeat("a", 64) + ".test"} {
		if c, err := a.Leaf(name); err == nil {
			t.Errorf("Leaf(%q) = %v, want an error", name, c.Leaf.DNSNames)
		}
	}
	if _, err := a.GetCertificate(&tls.ClientHelloInfo{}); err == nil || !strings.Contains(err.Error(), "SNI") {
		t.Errorf("no SNI: %v", err)
	}
	if a.Cached() != 0 {
		t.Errorf("refusals were cached: %d", a.Cached())
	}
}

func TestLeafCacheAndRenewal(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	a := setup(t, Options{Now: clock, CacheSize: 3})
	first, _ := a.Leaf("a.test")
	if again, _ := a.Leaf("a.test"); again != first || a.Mints() != 1 {
		t.Fatalf("a second call minted again (%d mints)", a.Mints())
	}
	// Shortly before renewal it is still the cached one; from the renewal on a new one.
	now = now.Add(DefaultLeafValidity - DefaultRenewBefore - time.Minute)
	if again, _ := a.Leaf("a.test"); again != first {
		t.Error("renewed before it was due")
	}
	now = now.Add(2 * time.Minute)
	renewed, _ := a.Leaf("a.test")
	if renewed == first || a.Mints() != 2 {
		t.Fatalf("not renewed when due (%d mints)", a.Mints())
	}
	if !renewed.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Error("the renewed leaf ends no later than the first")
	}
	if err := verify(t, a, renewed, "a.test", now); err != nil {
		t.Error(err)
	}

	// The LRU keeps 3: using a.test keeps it, b.test (least recently used) goes.
	a.Leaf("b.test")
	a.Leaf("c.test")
	a.Leaf("a.test")
	a.Leaf("d.test")
	if a.Cached() != 3 {
		t.Errorf("cached %d, want 3", a.Cached())
	}
	mints := a.Mints()
	a.Leaf("a.test")
	a.Leaf("c.test")
	a.Leaf("d.test")
	if a.Mints() != mints {
		t.Error("a recently used leaf was evicted")
	}
	a.Leaf("b.test")
	if a.Mints() != mints+1 {
		t.Error("the least recently used leaf was not evicted")
	}
}

// TestLeafConcurrent: concurrent callers for one name share one minting; many names at once
// are each minted once. Run with -race.
func TestLeafConcurrent(t *testing.T) {
	a := setup(t, Options{})
	const callers = 64
	got := make([]*tls.Certificate, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			var err error
			if got[i], err = a.Leaf("same.test"); err != nil {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	for i := range got {
		if got[i] != got[0] {
			t.Fatalf("caller %d got another certificate", i)
		}
	}
	if a.Mints() != 1 {
		t.Errorf("%d mints for one name, want 1", a.Mints())
	}

	const names = 50
	for i := range names * 4 {
		wg.Go(func() {
			if _, err := a.Leaf(fmt.Sprintf("n%d.test", i%names)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if a.Mints() != 1+names {
		t.Errorf("%d mints for %d names, want %d", a.Mints(), names, 1+names)
	}
}

// TestEvictionDuringMint: with a cache of one, names that push each other out while being
// minted still answer every caller.
func TestEvictionDuringMint(t *testing.T) {
	a := setup(t, Options{CacheSize: 1})
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			name := fmt.Sprintf("e%d.test", i%7)
			c, err := a.Leaf(name)
			if err != nil || c.Leaf.DNSNames[0] != name {
				t.Errorf("Leaf(%s) = %v, %v", name, c, err)
			}
		})
	}
	wg.Wait()
	if a.Cached() != 1 {
		t.Errorf("cached %d, want 1", a.Cached())
	}
}

func TestStoredCA(t *testing.T) {
	ctx := context.Background()
	st := &memStore{}
	k := newKeyring(t)
	first, err := Setup(ctx, st, k, Options{Hostname: "one"})
	if err != nil {
		t.Fatal(err)
	}
	// The key is stored sealed: its bytes are not in the store.
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(first.key)
	if bytes.Contains(st.ca.SealedKey, pkcs8[len(pkcs8)-32:]) {
		t.Error("the CA key is stored in the clear")
	}
	second, err := Setup(ctx, st, k, Options{Hostname: "two"})
	if err != nil {
		t.Fatal(err)
	}
	if second.Origin() != OriginStore || !bytes.Equal(second.CertPEM(), first.CertPEM()) {
		t.Fatalf("a second start made another CA (origin %s)", second.Origin())
	}
	// A leaf of one node verifies against the CA that the other serves.
	leaf, _ := second.Leaf("x.test")
	if err := verify(t, first, leaf, "x.test", time.Now()); err != nil {
		t.Error(err)
	}
	// Another secrets key cannot open it.
	if _, err := Setup(ctx, st, newKeyring(t), Options{}); err == nil || !errors.Is(err, keyring.ErrOpen) {
		t.Errorf("another key: %v", err)
	}
	// Nor can the key be paired with another certificate.
	other, _, _ := Generate("other", time.Now())
	swapped := &memStore{ca: &store.CA{CertDER: other, SealedKey: st.ca.SealedKey}}
	if _, err := Setup(ctx, swapped, k, Options{}); err == nil || !errors.Is(err, keyring.ErrOpen) {
		t.Errorf("a key moved to another certificate: %v", err)
	}
}

// TestNodesStartTogether: nodes that make a CA at once end up with the one the store kept.
func TestNodesStartTogether(t *testing.T) {
	st := &memStore{}
	k := newKeyring(t)
	const nodes = 8
	got := make([]*Authority, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			var err error
			if got[i], err = Setup(context.Background(), st, k, Options{Hostname: fmt.Sprint("node-", i)}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for i := range got {
		if got[i] == nil || !bytes.Equal(got[i].CertPEM(), got[0].CertPEM()) {
			t.Fatalf("node %d serves another CA", i)
		}
	}
}

// operatorCA writes a CA certificate and key to files and returns their paths.
func operatorCA(t *testing.T, tmpl *x509.Certificate, keyMode os.FileMode, useRSA bool) (certFile, keyFile string) {
	t.Helper()
	var keyDER []byte
	var der []byte
	var err error
	if useRSA {
		k, _ := rsa.GenerateKey(rand.Reader, 2048)
		keyDER = x509.MarshalPKCS1PrivateKey(k)
		der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	} else {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		keyDER, _ = x509.MarshalECPrivateKey(k)
		der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	}
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	keyType := "EC PRIVATE KEY"
	if useRSA {
		keyType = "RSA PRIVATE KEY"
	}
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: keyType, Bytes: keyDER}), keyMode)
	os.Chmod(keyFile, keyMode)
	return certFile, keyFile
}

func caTemplate(cn string) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

func TestOperatorCA(t *testing.T) {
	ctx := context.Background()
	st := &memStore{}
	for _, useRSA := range []bool{false, true} {
		certFile, keyFile := operatorCA(t, caTemplate("corp CA"), 0o600, useRSA)
		a, err := Setup(ctx, st, newKeyring(t), Options{CertFile: certFile, KeyFile: keyFile})
		if err != nil {
			t.Fatalf("rsa %v: %v", useRSA, err)
		}
		if a.Origin() != OriginFiles || a.Certificate().Subject.CommonName != "corp CA" {
			t.Errorf("origin %s, CA %q", a.Origin(), a.Certificate().Subject.CommonName)
		}
		leaf, err := a.Leaf("corp.test")
		if err != nil {
			t.Fatal(err)
		}
		if err := verify(t, a, leaf, "corp.test", time.Now()); err != nil {
			t.Errorf("rsa %v: %v", useRSA, err)
		}
		// Near its end, leaves end with the CA.
		if !leaf.Leaf.NotAfter.Equal(a.Certificate().NotAfter) {
			t.Errorf("leaf ends %v, the CA %v", leaf.Leaf.NotAfter, a.Certificate().NotAfter)
		}
	}
	if st.ca != nil {
		t.Error("an operator's CA was stored")
	}
}

func TestOperatorCARefused(t *testing.T) {
	ctx := context.Background()
	notCA := caTemplate("leaf")
	notCA.IsCA = false
	noSign := caTemplate("no sign")
	noSign.KeyUsage = x509.KeyUsageDigitalSignature
	expired := caTemplate("old")
	expired.NotBefore, expired.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
	good, goodKey := operatorCA(t, caTemplate("good"), 0o600, false)
	_, otherKey := operatorCA(t, caTemplate("other"), 0o600, false)
	cases := []struct {
		name      string
		cert, key string
		want      string
	}{
		{"not a CA", "", "", "is not a CA"},
		{"may not sign", "", "", "may not sign"},
		{"expired", "", "", "expired"},
		{"another key", good, otherKey, "private key does not match"},
		{"readable key", "", "", "chmod 600"},
		{"only the cert", good, "", "go together"},
		{"only the key", "", goodKey, "go together"},
		{"missing cert", filepath.Join(t.TempDir(), "nope.pem"), goodKey, "--ca-cert-file"},
	}
	cases[0].cert, cases[0].key = operatorCA(t, notCA, 0o600, false)
	cases[1].cert, cases[1].key = operatorCA(t, noSign, 0o600, false)
	cases[2].cert, cases[2].key = operatorCA(t, expired, 0o600, false)
	cases[4].cert, cases[4].key = operatorCA(t, caTemplate("open"), 0o644, false)
	for _, tc := range cases {
		_, err := Setup(ctx, &memStore{}, newKeyring(t), Options{CertFile: tc.cert, KeyFile: tc.key})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	// A key in the certificate file is refused: that file is public.
	both := filepath.Join(t.TempDir(), "both.pem")
	c, _ := os.ReadFile(good)
	k, _ := os.ReadFile(goodKey)
	os.WriteFile(both, append(c, k...), 0o600)
	if _, err := Setup(ctx, &memStore{}, newKeyring(t), Options{CertFile: both, KeyFile: goodKey}); err == nil || !strings.Contains(err.Error(), "holds a private key") {
		t.Errorf("a key in the certificate file: %v", err)
	}
}

// TestOperatorIntermediate: an operator's CA that a corporate root signed sends itself after
// each leaf, so that clients that trust only the root verify the leaves.
func TestOperatorIntermediate(t *testing.T) {
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root := caTemplate("corp root")
	rootDER, _ := x509.CreateCertificate(rand.Reader, root, root, rootKey.Public(), rootKey)
	rootCert, _ := x509.ParseCertificate(rootDER)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	inter := caTemplate("corp egress CA")
	inter.MaxPathLenZero = true
	interDER, _ := x509.CreateCertificate(rand.Reader, inter, rootCert, interKey.Public(), rootKey)
	interCert, _ := x509.ParseCertificate(interDER)
	a, err := New(interCert, interKey, [][]byte{rootDER}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := a.Leaf("via.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.Certificate) != 2 {
		t.Fatalf("the leaf's chain has %d certificates, want the leaf and the root", len(leaf.Certificate))
	}
	roots := x509.NewCertPool()
	roots.AddCert(rootCert)
	inters := x509.NewCertPool()
	inters.AddCert(interCert)
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "via.test", Roots: roots, Intermediates: inters}); err != nil {
		t.Error(err)
	}
	if n := bytes.Count(a.CertPEM(), []byte("BEGIN CERTIFICATE")); n != 2 {
		t.Errorf("CertPEM has %d certificates, want 2", n)
	}
}

func BenchmarkLeafFirstMint(b *testing.B) {
	a := setup(b, Options{CacheSize: 1})
	i := 0
	for b.Loop() {
		i++
		if _, err := a.Leaf(fmt.Sprintf("h%d.bench.test", i)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLeafCached(b *testing.B) {
	a := setup(b, Options{})
	if _, err := a.Leaf("cached.bench.test"); err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.Leaf("cached.bench.test"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
