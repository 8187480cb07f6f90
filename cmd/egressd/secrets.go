package main

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/egressd/egressd/internal/controlplane/keyring"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/certs"
)

// interception is what intercepting TLS needs (DESIGN §2.7): the secrets key, the CA, and the
// roots the upstream side of an intercepted connection trusts.
type interception struct {
	keys *keyring.Keyring
	ca   *certs.Authority
	// upstreamRoots are the system's roots plus --upstream-ca-file's certificates; nil
	// without the flag (the system's roots alone).
	upstreamRoots *x509.CertPool
}

// setupInterception reads (or, on first start, makes) the secrets key and the CA. Every role
// needs them: an API node seals secrets and serves the CA, a gateway node opens secrets and
// mints certificates. It refuses to start with a key other than the one the store's secrets
// are sealed with.
func setupInterception(ctx context.Context, cfg *config, st store.Store, log *slog.Logger) (*interception, error) {
	keys, path, created, err := keyring.Setup(ctx, st, cfg.secretsKeyFile, cfg.dataDir)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("created the secrets key; every egressd on this store needs a copy of it (--secrets-key-file), and without it no secret can be read", "file", path, "key_id", keys.ID())
	} else {
		log.Info("secrets key", "file", path, "key_id", keys.ID())
	}
	ca, err := certs.Setup(ctx, st, keys, certs.Options{CertFile: cfg.caCertFile, KeyFile: cfg.caKeyFile})
	if err != nil {
		return nil, err
	}
	c := ca.Certificate()
	sum := sha256.Sum256(c.Raw)
	log.Info("interception CA", "origin", ca.Origin(), "subject", c.Subject.CommonName,
		"not_after", c.NotAfter.UTC().Format(time.RFC3339), "sha256", hex.EncodeToString(sum[:]))
	roots, err := loadUpstreamRoots(cfg.upstreamCAFile)
	if err != nil {
		return nil, err
	}
	return &interception{keys: keys, ca: ca, upstreamRoots: roots}, nil
}

// loadUpstreamRoots reads --upstream-ca-file: one or more PEM certificates, added to the
// system's roots. "" is nil: the system's roots alone.
func loadUpstreamRoots(path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--upstream-ca-file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("--upstream-ca-file %s holds a %s; give certificates only", path, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("--upstream-ca-file %s: certificate %d: %w", path, n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("--upstream-ca-file %s holds no PEM certificate", path)
	}
	return pool, nil
}
