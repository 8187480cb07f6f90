package store

import "time"

// Secret is a tenant's secret (DESIGN §2.7): a value that the gateway puts on the tenant's
// requests to the secret's domains in place of its placeholder. The store keeps the value
// only sealed (package keyring, with keyring.SecretAD(Tenant, Name, Placeholder)), and
// never sees it in the clear.
type Secret struct {
	Tenant string
	Name   string
	// Domains are the host patterns (policy.NormalizePattern form) the value may go to.
	Domains []string
	// Placeholder is what the sandbox holds instead of the value; it is unique store-wide
	// and stays the same for the secret's life, rotations included.
	Placeholder string
	Sealed      []byte // the value, sealed
	Revision    int64  // the revision of the last write (creation or update)
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// CA is the interception CA as the store keeps it: its certificate and its private key,
// sealed (keyring.CAKeyAD of the certificate).
type CA struct {
	CertDER   []byte // the certificate, DER
	SealedKey []byte // the private key (PKCS #8 DER), sealed
	CreatedAt time.Time
}
