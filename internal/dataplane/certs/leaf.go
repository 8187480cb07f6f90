package certs

import (
	"container/list"
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
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/policy"
)

// Defaults of Options.
const (
	DefaultCacheSize    = 10000
	DefaultLeafValidity = 7 * 24 * time.Hour
	DefaultRenewBefore  = 24 * time.Hour
)

// Authority is the interception CA with its cache of leaf certificates. Make it with Setup
// (or New); it is safe for concurrent use.
type Authority struct {
	cert    *x509.Certificate
	key     crypto.Signer
	chain   [][]byte // the operator CA's issuers, sent after each leaf
	pem     []byte   // the CA certificate, and its issuers, as PEM
	origin  string
	leafKey *ecdsa.PrivateKey

	now         func() time.Time
	size        int
	validity    time.Duration
	renewBefore time.Duration

	mu      sync.Mutex
	entries map[string]*entry
	lru     list.List // of *entry, most recently used first

	mints atomic.Int64
}

// entry is one name's leaf, or the minting of it under way (ready not yet closed).
type entry struct {
	name    string
	ready   chan struct{}
	cert    *tls.Certificate // set, with err, before ready is closed
	err     error
	renewAt time.Time
	elem    *list.Element // nil once evicted
}

// New makes an Authority of a CA certificate and its key (checked to be a CA that may sign,
// valid now, with that key). chain is what to send after each leaf: the CA's issuers, if it
// is not a root (nil for egressd's own CA).
func New(cert *x509.Certificate, key crypto.Signer, chain [][]byte, o Options) (*Authority, error) {
	if err := checkCA(cert, key, o.now()); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return newAuthority(cert, key, chain, "", o)
}

func newAuthority(cert *x509.Certificate, key crypto.Signer, chain [][]byte, origin string, o Options) (*Authority, error) {
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: make the leaves' key: %w", err)
	}
	a := &Authority{
		cert: cert, key: key, chain: chain, origin: origin, leafKey: leafKey,
		now: o.Now, size: o.CacheSize, validity: o.LeafValidity, renewBefore: o.RenewBefore,
		entries: make(map[string]*entry),
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.size <= 0 {
		a.size = DefaultCacheSize
	}
	if a.validity <= 0 {
		a.validity = DefaultLeafValidity
	}
	if a.renewBefore <= 0 {
		a.renewBefore = DefaultRenewBefore
	}
	a.renewBefore = min(a.renewBefore, a.validity/2)
	a.pem = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	for _, der := range chain {
		a.pem = append(a.pem, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return a, nil
}

// Certificate is the CA's certificate.
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// CertPEM is the CA's certificate as PEM, followed by its issuers' for an operator's CA that
// is not a root: what GET /v1/ca.pem serves and sandboxes add to their trusted roots.
func (a *Authority) CertPEM() []byte { return a.pem }

// Origin says where the CA came from: OriginCreated, OriginStore or OriginFiles.
func (a *Authority) Origin() string { return a.origin }

// Mints counts the leaves minted so far (for tests and metrics).
func (a *Authority) Mints() int64 { return a.mints.Load() }

// GetCertificate is Leaf for the name a TLS client asked for, in the form of
// tls.Config.GetCertificate. A ClientHello without SNI gets an error: the gateway intercepts
// only names.
func (a *Authority) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello.ServerName == "" {
		return nil, errors.New("ca: the client sent no server name (SNI); no certificate is minted without one")
	}
	return a.Leaf(hello.ServerName)
}

// Leaf returns a certificate for exactly the host name name (normalised as policy entries
// and traffic are: policy.NormalizeName), signed by the CA: from the cache while it has more
// than RenewBefore left, else minted. Concurrent calls for one name share one minting. IP
// literals and wildcards are refused (NormalizeName's errors): interception is by name.
func (a *Authority) Leaf(name string) (*tls.Certificate, error) {
	host, err := policy.NormalizeName(name)
	if err != nil {
		return nil, fmt.Errorf("ca: no certificate for %q: %w", name, err)
	}
	now := a.now()
	a.mu.Lock()
	if e := a.entries[host]; e != nil {
		select {
		case <-e.ready:
			if e.err == nil && now.Before(e.renewAt) {
				a.lru.MoveToFront(e.elem)
				a.mu.Unlock()
				return e.cert, nil
			}
			// Due for renewal: mint below, in a new entry.
		default:
			a.mu.Unlock()
			<-e.ready
			return e.cert, e.err
		}
	}
	e := &entry{name: host, ready: make(chan struct{})}
	a.insert(e)
	a.mu.Unlock()

	e.cert, e.renewAt, e.err = a.mint(host, now)
	if e.err != nil {
		// Not cached: the next call tries again.
		a.mu.Lock()
		a.remove(e)
		a.mu.Unlock()
	}
	close(e.ready)
	return e.cert, e.err
}

// insert puts e in the cache in place of any entry of its name, and evicts the least
// recently used entries beyond the size. An evicted entry that is still being minted is
// finished for its waiters all the same; it is only no longer found.
func (a *Authority) insert(e *entry) {
	if old := a.entries[e.name]; old != nil {
		a.remove(old)
	}
	a.entries[e.name] = e
	e.elem = a.lru.PushFront(e)
	for a.lru.Len() > a.size {
		a.remove(a.lru.Back().Value.(*entry))
	}
}

// remove takes e out of the cache, if it is still in it.
func (a *Authority) remove(e *entry) {
	if e.elem == nil {
		return
	}
	a.lru.Remove(e.elem)
	e.elem = nil
	if a.entries[e.name] == e {
		delete(a.entries, e.name)
	}
}

// Cached is the number of leaves in the cache.
func (a *Authority) Cached() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lru.Len()
}

// mint signs a leaf for host, valid from Backdate before now for LeafValidity (never past
// the CA's own end), and says when it is due for renewal.
func (a *Authority) mint(host string, now time.Time) (*tls.Certificate, time.Time, error) {
	a.mints.Add(1)
	serial, err := randomSerial()
	if err != nil {
		return nil, time.Time{}, err
	}
	notAfter := now.Add(a.validity)
	if notAfter.After(a.cert.NotAfter) {
		notAfter = a.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, a.leafKey.Public(), a.key)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("ca: mint a certificate for %s: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("ca: mint a certificate for %s: %w", host, err)
	}
	cert := &tls.Certificate{
		Certificate: append([][]byte{der}, a.chain...),
		PrivateKey:  a.leafKey,
		Leaf:        leaf,
	}
	renewAt := notAfter.Add(-a.renewBefore)
	if !renewAt.After(now) {
		renewAt = notAfter // a CA near its end: use the leaf while it lasts
	}
	return cert, renewAt, nil
}
