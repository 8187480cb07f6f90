// Package certs is egressd's interception CA (DESIGN §2.7): the certificate authority whose
// certificate sandboxes trust, and the leaf certificates it mints, one per host name, for the
// TLS connections the gateway terminates.
//
// The CA is made on first start (ECDSA P-256, valid 10 years, "egressd sandbox CA <hostname>")
// and kept in the store, its private key sealed with the secrets key (package keyring), so
// that every node of a fleet serves the same CA; nodes that start together store one CA
// between them (store.InitCA keeps the first). An operator may give a CA of their own instead
// (--ca-cert-file, --ca-key-file), which is then read from those files on every start and
// never stored.
//
// Leaf certificates are minted on demand for the exact name a client asked for (its SNI):
// never a wildcard, so that a certificate minted for one name vouches for nothing else. They
// are valid 7 days, backdated an hour for clients whose clocks run slow, cached (a bounded
// LRU) and minted again a day before they expire. Concurrent callers for one name share one
// minting. All leaves share one ECDSA P-256 key, made at start and kept in memory only:
// minting is then one signature, and the key protects nothing the CA's key, in the same
// process, does not.
package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/controlplane/keyring"
	"github.com/egressd/egressd/internal/controlplane/store"
)

// CAValidity is how long a CA that egressd makes is valid.
const CAValidity = 10 * 365 * 24 * time.Hour

// Backdate is how far before "now" certificates start to be valid, for clients whose clocks
// are behind.
const Backdate = time.Hour

// Store is where the CA is kept: the store (store.Store has these).
type Store interface {
	GetCA(ctx context.Context) (store.CA, error)
	InitCA(ctx context.Context, ca store.CA) (store.CA, error)
}

// Sealer seals and opens the CA's private key: the keyring.
type Sealer interface {
	Seal(value, ad []byte) ([]byte, error)
	Open(sealed, ad []byte) ([]byte, error)
}

// Options says where the CA comes from and how leaves are made. The zero value works: a CA
// kept in the store, named after this host.
type Options struct {
	// CertFile and KeyFile name the operator's CA (PEM; both or neither). The certificate
	// file may hold the CA's issuers after it, which are then sent with every leaf.
	CertFile, KeyFile string
	// Hostname goes into the name of a CA this node makes; os.Hostname() when empty.
	Hostname string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// CacheSize bounds the leaves kept (DefaultCacheSize when 0).
	CacheSize int
	// LeafValidity is how long a leaf is valid (DefaultLeafValidity when 0), and RenewBefore
	// how long before its end a new one is minted (DefaultRenewBefore when 0).
	LeafValidity, RenewBefore time.Duration
}

// Where the CA came from, as Authority.Origin says it.
const (
	OriginCreated = "created" // this node made it and stored it
	OriginStore   = "store"   // read from the store, made by this or another node before
	OriginFiles   = "files"   // the operator's, from --ca-cert-file and --ca-key-file
)

// Setup returns the CA the options name: the operator's files, or the store's CA, made (and
// stored, its key sealed by sealer) when the store has none.
func Setup(ctx context.Context, st Store, sealer Sealer, o Options) (*Authority, error) {
	now := o.now()
	if o.CertFile != "" || o.KeyFile != "" {
		if o.CertFile == "" || o.KeyFile == "" {
			return nil, errors.New("--ca-cert-file and --ca-key-file go together: give both, or neither to use egressd's own CA")
		}
		cert, key, chain, err := LoadFiles(o.CertFile, o.KeyFile, now)
		if err != nil {
			return nil, err
		}
		return newAuthority(cert, key, chain, OriginFiles, o)
	}
	stored, err := st.GetCA(ctx)
	origin := OriginStore
	if errors.Is(err, store.ErrNotFound) {
		if stored, err = create(ctx, st, sealer, o); err != nil {
			return nil, err
		}
		origin = OriginCreated
	} else if err != nil {
		return nil, fmt.Errorf("ca: read the store's CA: %w", err)
	}
	cert, err := x509.ParseCertificate(stored.CertDER)
	if err != nil {
		return nil, fmt.Errorf("ca: the store's CA certificate: %w", err)
	}
	pkcs8, err := sealer.Open(stored.SealedKey, keyring.CAKeyAD(stored.CertDER))
	if err != nil {
		return nil, fmt.Errorf("ca: open the store's CA key with the secrets key: %w", err)
	}
	defer clear(pkcs8)
	parsed, err := x509.ParsePKCS8PrivateKey(pkcs8)
	if err != nil {
		return nil, fmt.Errorf("ca: the store's CA key: %w", err)
	}
	key, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("ca: the store's CA key is a %T, which cannot sign", parsed)
	}
	if err := checkCA(cert, key, now); err != nil {
		return nil, fmt.Errorf("ca: the store's CA: %w", err)
	}
	return newAuthority(cert, key, nil, origin, o)
}

// create makes a CA and stores it unless another node stored one first; it returns the CA
// that is stored, the other node's if it won.
func create(ctx context.Context, st Store, sealer Sealer, o Options) (store.CA, error) {
	host := o.Hostname
	if host == "" {
		var err error
		if host, err = os.Hostname(); err != nil || host == "" {
			host = "unknown host"
		}
	}
	certDER, key, err := Generate(host, o.now())
	if err != nil {
		return store.CA{}, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return store.CA{}, fmt.Errorf("ca: encode the new key: %w", err)
	}
	defer clear(pkcs8)
	sealed, err := sealer.Seal(pkcs8, keyring.CAKeyAD(certDER))
	if err != nil {
		return store.CA{}, fmt.Errorf("ca: seal the new key: %w", err)
	}
	stored, err := st.InitCA(ctx, store.CA{CertDER: certDER, SealedKey: sealed, CreatedAt: o.now()})
	if err != nil {
		return store.CA{}, fmt.Errorf("ca: store the new CA: %w", err)
	}
	return stored, nil
}

// Generate makes a CA: a new ECDSA P-256 key and a self-signed certificate named
// "egressd sandbox CA <host>", valid from an hour before now for CAValidity, that may sign
// leaf certificates only (MaxPathLen 0: no intermediates under it).
func Generate(host string, now time.Time) (certDER []byte, key *ecdsa.PrivateKey, err error) {
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: make a key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "egressd sandbox CA " + host, Organization: []string{"egressd"}},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: make the certificate: %w", err)
	}
	return certDER, key, nil
}

// LoadFiles reads an operator's CA: the certificate file (PEM, the CA first and then,
// optionally, its issuers) and the key file (PEM: PKCS #8, SEC 1 EC or PKCS #1 RSA). The key
// must match the certificate, the certificate must be a CA that may sign certificates and be
// valid now, and the key file must not be readable by group or others. chain is the DER of
// the issuers that follow the CA in the file.
func LoadFiles(certFile, keyFile string, now time.Time) (cert *x509.Certificate, key crypto.Signer, chain [][]byte, err error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--ca-cert-file: %w", err)
	}
	fi, err := os.Stat(keyFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--ca-key-file: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, nil, nil, fmt.Errorf("--ca-key-file %s has mode %04o: group and others can reach it; "+
			"whoever has the CA's key can impersonate any site to the sandboxes, so make it private (chmod 600 %s)", keyFile, perm, keyFile)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--ca-key-file: %w", err)
	}
	defer clear(keyPEM)
	// X509KeyPair reads every key format and checks that the key is the certificate's.
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--ca-cert-file %s and --ca-key-file %s: %w", certFile, keyFile, err)
	}
	if holdsKey(certPEM) {
		// The certificate is public (GET /v1/ca.pem); a key beside it in one file is not.
		return nil, nil, nil, fmt.Errorf("--ca-cert-file %s holds a private key: keep the key only in --ca-key-file, readable by egressd alone", certFile)
	}
	cert, err = x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--ca-cert-file %s: %w", certFile, err)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, nil, fmt.Errorf("--ca-key-file %s: a %T cannot sign", keyFile, pair.PrivateKey)
	}
	if err := checkCA(cert, key, now); err != nil {
		return nil, nil, nil, fmt.Errorf("--ca-cert-file %s: %w", certFile, err)
	}
	return cert, key, pair.Certificate[1:], nil
}

// holdsKey reports whether PEM data has a private key block.
func holdsKey(data []byte) bool {
	for {
		block, rest := pem.Decode(data)
		if block == nil {
			return false
		}
		if strings.Contains(block.Type, "PRIVATE KEY") {
			return true
		}
		data = rest
	}
}

// checkCA refuses a certificate that cannot be the interception CA: one that is not a CA,
// may not sign certificates, is not valid at now, or whose public key is not key's.
func checkCA(cert *x509.Certificate, key crypto.Signer, now time.Time) error {
	switch {
	case !cert.BasicConstraintsValid || !cert.IsCA:
		return fmt.Errorf("%q is not a CA certificate (its basic constraints do not say CA:TRUE)", cert.Subject.CommonName)
	case cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return fmt.Errorf("%q may not sign certificates (its key usage lacks certificate signing)", cert.Subject.CommonName)
	case now.Before(cert.NotBefore):
		return fmt.Errorf("%q is not valid before %s", cert.Subject.CommonName, cert.NotBefore.UTC().Format(time.RFC3339))
	case !now.Before(cert.NotAfter):
		return fmt.Errorf("%q expired at %s", cert.Subject.CommonName, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return fmt.Errorf("the key is not the key of %q", cert.Subject.CommonName)
	}
	return nil
}

func randomSerial() (*big.Int, error) {
	// 128 random bits, positive, as the Baseline Requirements ask of public CAs (64 or more).
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("a serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}
