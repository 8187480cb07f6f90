package keyring

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/egressd/egressd/internal/controlplane/store"
)

// FileName is the key file egressd creates in its data directory when --secrets-key-file is
// not given.
const FileName = "secrets.key"

// maxFileSize bounds what LoadFile reads: a key file is 32 raw bytes or 64 hex digits and a
// line end.
const maxFileSize = 128

// LoadFile reads a key file. The file must not be readable or writable by group or others
// (mode 0600 or 0400), and must hold exactly KeySize bytes, raw or as 2*KeySize hex digits
// (with an optional line end), which is what `openssl rand -hex 32` writes.
func LoadFile(path string) (*Keyring, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secrets key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secrets key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("secrets key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("secrets key file %s has mode %04o: group and others can reach it; "+
			"the key unlocks every secret, so make it private (chmod 600 %s)", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	defer clear(data)
	if err != nil {
		return nil, fmt.Errorf("secrets key file %s: %w", path, err)
	}
	key, err := decodeKey(data)
	if err != nil {
		return nil, fmt.Errorf("secrets key file %s: %w", path, err)
	}
	defer clear(key)
	return New(key)
}

// decodeKey reads the file's contents: KeySize raw bytes, or hex with an optional line end.
func decodeKey(data []byte) ([]byte, error) {
	if len(data) == KeySize {
		return bytes.Clone(data), nil
	}
	text := bytes.TrimSuffix(bytes.TrimSuffix(data, []byte("\n")), []byte("\r"))
	if len(text) == 2*KeySize {
		key := make([]byte, KeySize)
		if _, err := hex.Decode(key, text); err == nil {
			return key, nil
		}
		return nil, fmt.Errorf("it has %d characters but they are not hex digits; it must hold %d random bytes, raw or as %d hex digits (openssl rand -hex %d)",
			len(text), KeySize, 2*KeySize, KeySize)
	}
	return nil, fmt.Errorf("it has %d bytes; it must hold %d random bytes, raw or as %d hex digits (openssl rand -hex %d)",
		len(data), KeySize, 2*KeySize, KeySize)
}

// CreateFile makes a new random key and writes it to path as hex, with mode 0600. It refuses
// to overwrite a file that exists.
func CreateFile(path string) (*Keyring, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	defer clear(key)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("secrets key file: %w", err)
	}
	// Written to a temporary name and linked into place, so that a crash leaves either no
	// key file or a whole one, never a short one that the next start would refuse.
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("secrets key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes the file 0600; say so anyway, whatever the umask.
	err = errors.Join(tmp.Chmod(0o600), writeAll(tmp, []byte(hex.EncodeToString(key)+"\n")), tmp.Sync(), tmp.Close())
	if err != nil {
		return nil, fmt.Errorf("secrets key file %s: %w", path, err)
	}
	// Link, unlike rename, fails when path exists: two starts never replace each other's key.
	if err := os.Link(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("secrets key file: %w", err)
	}
	syncDir(filepath.Dir(path))
	return New(key)
}

func writeAll(f *os.File, b []byte) error {
	_, err := f.Write(b)
	return err
}

// syncDir makes a new directory entry durable; a failure is not fatal (some file systems
// cannot sync a directory), since the key has been written and synced either way.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// CheckStore is where Setup keeps the key's check value: the store (store.Store has these).
type CheckStore interface {
	// KeyCheck is the check value stored, or an error matching store.ErrNotFound when none is.
	KeyCheck(ctx context.Context) ([]byte, error)
	// InitKeyCheck stores check unless a check value is stored already, and returns the one
	// that is stored now.
	InitKeyCheck(ctx context.Context, check []byte) ([]byte, error)
}

// Setup is how egressd gets its key at start: from keyFile when it is set, else from
// <dataDir>/secrets.key, which is created when it does not exist and the store holds no check
// value yet. It then makes sure that the store's data is sealed with this key (the store's
// check value, which the first node to start writes), and refuses another key with an error
// that says what to do. created reports that a new key file was written (to path).
func Setup(ctx context.Context, st CheckStore, keyFile, dataDir string) (k *Keyring, path string, created bool, err error) {
	path = keyFile
	if path == "" {
		path = filepath.Join(dataDir, FileName)
	}
	switch _, serr := os.Stat(path); {
	case keyFile == "" && errors.Is(serr, fs.ErrNotExist):
		stored, err := st.KeyCheck(ctx)
		if err == nil {
			return nil, path, false, fmt.Errorf("the store's secrets and CA key are sealed with a secrets key (ID %s), but %s does not exist: "+
				"restore that key file, or give it with --secrets-key-file; a new key could open none of them", CheckID(stored), path)
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, path, false, fmt.Errorf("secrets key: read the store's key check: %w", err)
		}
		if k, err = CreateFile(path); err != nil {
			return nil, path, false, err
		}
		created = true
	default:
		if k, err = LoadFile(path); err != nil {
			if keyFile != "" {
				err = fmt.Errorf("--secrets-key-file: %w", err)
			}
			return nil, path, false, err
		}
	}
	stored, err := st.InitKeyCheck(ctx, k.Check())
	if err != nil {
		return nil, path, created, fmt.Errorf("secrets key: store its check value: %w", err)
	}
	if !k.Matches(stored) {
		return nil, path, created, fmt.Errorf("the secrets key in %s (ID %s) is not the key this store's secrets are sealed with (ID %s): "+
			"every egressd on one store needs the same key file; copy the file of the node that made it (or give it with --secrets-key-file)",
			path, k.ID(), CheckID(stored))
	}
	return k, path, created, nil
}
