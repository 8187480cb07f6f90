// Package keyring holds egressd's secrets key and seals what the store keeps encrypted with
// it: tenants' secret values and the interception CA's private key (DESIGN §2.7).
//
// The key is 32 random bytes read from --secrets-key-file, or from <data-dir>/secrets.key,
// which is created with mode 0600 on first start when the flag is not given (Setup). A value
// is sealed with AES-256-GCM under a random 96-bit nonce of its own, and with associated data
// that names what it is and whose it is (AD): a sealed value copied into another row (another
// tenant's secret, another name) does not open there.
//
// The store never sees the key. It keeps a check value, an HMAC of a fixed string under the
// key, written by the first node that starts; every node compares its own key's check value
// with it at start and refuses to run with another key, so that a fleet whose nodes were given
// different key files fails at once and loudly, rather than later, secret by secret.
package keyring

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// KeySize is the size of the secrets key in bytes: AES-256.
const KeySize = 32

// NonceSize is the size of the random nonce of each sealed value (GCM's standard 96 bits).
const NonceSize = 12

// version is the first byte of every sealed value, so that a later format (a second key, for
// rotation) can be told apart from this one.
const version byte = 1

// Overhead is how many bytes sealing adds to a value: the version byte, the nonce and GCM's
// 16-byte tag.
const Overhead = 1 + NonceSize + 16

// ErrOpen is the error of a sealed value that does not open: it was sealed under another
// key or for another purpose or owner, or it was changed.
var ErrOpen = errors.New("the sealed value does not open with this key and associated data")

// checkLabel is the fixed string whose HMAC under the key is the key's check value.
const checkLabel = "egressd secrets key check v1"

// Keyring seals and opens values with one key. It is safe for concurrent use.
type Keyring struct {
	aead  cipher.AEAD
	check []byte
}

// New makes a keyring of a key of KeySize bytes. The keyring keeps no reference to key.
func New(key []byte) (*Keyring, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("the secrets key has %d bytes; it must have %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secrets key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secrets key: %w", err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(checkLabel))
	return &Keyring{aead: aead, check: mac.Sum(nil)}, nil
}

// NewKey returns KeySize random bytes.
func NewKey() ([]byte, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("make a secrets key: %w", err)
	}
	return key, nil
}

// Check is the key's check value: HMAC-SHA256 of a fixed string under the key. It tells keys
// apart without revealing them, and is what the store keeps to refuse a node with another key.
func (k *Keyring) Check() []byte { return bytes.Clone(k.check) }

// ID is a short name of the key for logs and errors: the start of its check value in hex.
// Two nodes with one key show one ID.
func (k *Keyring) ID() string { return CheckID(k.check) }

// CheckID is the ID of the key whose check value is check.
func CheckID(check []byte) string {
	if len(check) > 6 {
		check = check[:6]
	}
	return hex.EncodeToString(check)
}

// Matches reports whether check is this key's check value.
func (k *Keyring) Matches(check []byte) bool { return hmac.Equal(k.check, check) }

// Seal encrypts value with a new random nonce, bound to ad (see AD). The result is
// version, nonce, ciphertext and tag; it is Overhead bytes longer than value.
func (k *Keyring) Seal(value, ad []byte) ([]byte, error) {
	out := make([]byte, 1+NonceSize, Overhead+len(value))
	out[0] = version
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("seal: a random nonce: %w", err)
	}
	return k.aead.Seal(out, out[1:1+NonceSize], value, ad), nil
}

// Open decrypts what Seal made with the same ad. Anything else, a value sealed under another
// key or with other associated data or changed in any bit, is ErrOpen.
func (k *Keyring) Open(sealed, ad []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w (it has %d bytes, fewer than a sealed value has)", ErrOpen, len(sealed))
	}
	if sealed[0] != version {
		return nil, fmt.Errorf("%w (format %d; this egressd knows format %d)", ErrOpen, sealed[0], version)
	}
	value, err := k.aead.Open(nil, sealed[1:1+NonceSize], sealed[1+NonceSize:], ad)
	if err != nil {
		return nil, ErrOpen
	}
	return value, nil
}

// AD is the associated data of a sealed value: its purpose and the names of its owner, each
// preceded by its length, so that no two different lists of names give the same bytes
// ("a\x00b" + "c" is not "a" + "b\x00c"). A value sealed with one AD opens only with the same.
func AD(purpose string, owner ...string) []byte {
	var b []byte
	for _, s := range append([]string{purpose}, owner...) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// SecretAD binds a secret's sealed value to its tenant, its name and its placeholder. The
// placeholder is random per creation, so the value of a deleted secret cannot be put back
// into a new secret of the same name either.
func SecretAD(tenant, name, placeholder string) []byte {
	return AD("secret", tenant, name, placeholder)
}

// CAKeyAD binds the interception CA's sealed private key to its certificate (DER): a key
// cannot be paired with another certificate in the store.
func CAKeyAD(certDER []byte) []byte {
	sum := sha256.Sum256(certDER)
	return AD("ca-key", hex.EncodeToString(sum[:]))
}
