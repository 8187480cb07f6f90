package keyring

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/egressd/egressd/internal/controlplane/store"
)

func mustNew(t *testing.T) *Keyring {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	k := mustNew(t)
	ad := SecretAD("tenant-a", "openai", "egressd-secret-openai-abc")
	for _, value := range [][]byte{[]byte("sk-live-123"), {}, bytes.Repeat([]byte{0}, 4096)} {
		sealed, err := k.Seal(value, ad)
		if err != nil {
			t.Fatal(err)
		}
		if len(sealed) != len(value)+Overhead {
			t.Errorf("sealed %d bytes into %d, want %d", len(value), len(sealed), len(value)+Overhead)
		}
		if len(value) > 4 && bytes.Contains(sealed, value) {
			t.Errorf("the sealed value contains the plain value")
		}
		got, err := k.Open(sealed, ad)
		if err != nil || !bytes.Equal(got, value) {
			t.Errorf("Open = %q, %v; want %q", got, err, value)
		}
	}
}

// TestNoncesDiffer: sealing one value twice gives two ciphertexts (a random nonce each).
func TestNoncesDiffer(t *testing.T) {
	k := mustNew(t)
	ad := AD("secret", "t", "n")
	seen := map[string]bool{}
	for range 100 {
		sealed, err := k.Seal([]byte("same value"), ad)
		if err != nil {
			t.Fatal(err)
		}
		nonce := string(sealed[1 : 1+NonceSize])
		if seen[nonce] {
			t.Fatal("a nonce came twice")
		}
		seen[nonce] = true
	}
}

func TestOpenRefuses(t *testing.T) {
	k := mustNew(t)
	ad := SecretAD("tenant-a", "openai", "ph-1")
	sealed, err := k.Seal([]byte("sk-live-123"), ad)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 1
		return b
	}
	cases := map[string]struct {
		k      *Keyring
		sealed []byte
		ad     []byte
	}{
		"another tenant":              {k, sealed, SecretAD("tenant-b", "openai", "ph-1")},
		"another name":                {k, sealed, SecretAD("tenant-a", "anthropic", "ph-1")},
		"another placeholder":         {k, sealed, SecretAD("tenant-a", "openai", "ph-2")},
		"another purpose":             {k, sealed, AD("ca-key", "tenant-a", "openai", "ph-1")},
		"names that join alike":       {k, sealed, SecretAD("tenant-ao", "penai", "ph-1")},
		"another key":                 {mustNew(t), sealed, ad},
		"a flipped bit in the nonce":  {k, flip(1), ad},
		"a flipped bit in the text":   {k, flip(1 + NonceSize), ad},
		"a flipped bit in the tag":    {k, flip(len(sealed) - 1), ad},
		"another format":              {k, flip(0), ad},
		"cut short":                   {k, sealed[:Overhead-1], ad},
		"the tag cut off":             {k, sealed[:len(sealed)-16], ad},
		"nothing":                     {k, nil, ad},
		"a byte appended":             {k, append(bytes.Clone(sealed), 0), ad},
		"the AD of a CA key, not one": {k, sealed, CAKeyAD([]byte("cert"))},
	}
	for name, tc := range cases {
		got, err := tc.k.Open(tc.sealed, tc.ad)
		if !errors.Is(err, ErrOpen) || got != nil {
			t.Errorf("%s: Open = %q, %v; want ErrOpen", name, got, err)
		}
	}
}

func TestAD(t *testing.T) {
	if bytes.Equal(AD("p", "a\x00b", "c"), AD("p", "a", "b\x00c")) {
		t.Error("two owner lists give one AD")
	}
	if bytes.Equal(AD("p", "ab"), AD("p", "a", "b")) {
		t.Error("two owner lists give one AD")
	}
	if !bytes.Equal(SecretAD("t", "n", "p"), SecretAD("t", "n", "p")) {
		t.Error("AD is not deterministic")
	}
}

func TestCheckAndID(t *testing.T) {
	key := bytes.Repeat([]byte{7}, KeySize)
	a, _ := New(key)
	b, _ := New(bytes.Clone(key))
	c := mustNew(t)
	if !a.Matches(b.Check()) || a.ID() != b.ID() {
		t.Error("one key, two check values")
	}
	if a.Matches(c.Check()) || a.ID() == c.ID() {
		t.Error("two keys, one check value")
	}
	if bytes.Contains(a.Check(), key[:8]) {
		t.Error("the check value shows the key")
	}
	if len(a.ID()) != 12 {
		t.Errorf("ID %q, want 12 hex digits", a.ID())
	}
	if _, err := New(key[:31]); err == nil {
		t.Error("New took a 31-byte key")
	}
}

func writeKey(t *testing.T, data []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return p
}

func TestLoadFile(t *testing.T) {
	key := bytes.Repeat([]byte{0xab}, KeySize)
	want, _ := New(key)
	hexKey := []byte(hex.EncodeToString(key))
	for name, data := range map[string][]byte{
		"raw":            key,
		"hex":            hexKey,
		"hex, LF":        append(bytes.Clone(hexKey), '\n'),
		"hex, CRLF":      append(bytes.Clone(hexKey), '\r', '\n'),
		"upper-case hex": []byte(strings.ToUpper(string(hexKey))),
	} {
		for _, mode := range []os.FileMode{0o600, 0o400} {
			k, err := LoadFile(writeKey(t, data, mode))
			if err != nil || !k.Matches(want.Check()) {
				t.Errorf("%s, mode %o: %v", name, mode, err)
			}
		}
	}
}

func TestLoadFileRefuses(t *testing.T) {
	key := bytes.Repeat([]byte{0xab}, KeySize)
	hexKey := hex.EncodeToString(key)
	cases := []struct {
		name string
		data []byte
		mode os.FileMode
		want string
	}{
		{"group readable", key, 0o640, "chmod 600"},
		{"world readable", key, 0o604, "mode 0604"},
		{"group writable", key, 0o620, "group and others"},
		{"31 bytes", key[:31], 0o600, "it has 31 bytes"},
		{"33 bytes", append(bytes.Clone(key), 1), 0o600, "it has 33 bytes"},
		{"empty", nil, 0o600, "it has 0 bytes"},
		{"short hex", []byte(hexKey[:62] + "\n"), 0o600, "hex digits"},
		{"not hex", []byte(strings.Repeat("zz", KeySize)), 0o600, "not hex digits"},
		{"huge", bytes.Repeat([]byte("a"), 4096), 0o600, "bytes; it must hold 32"},
	}
	for _, tc := range cases {
		_, err := LoadFile(writeKey(t, tc.data, tc.mode))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one saying %q", tc.name, err, tc.want)
		}
	}
	if _, err := LoadFile(filepath.Join(t.TempDir(), "missing")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := LoadFile(t.TempDir()); err == nil {
		t.Error("LoadFile took a directory")
	}
}

func TestCreateFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, FileName)
	k, err := CreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", fi.Mode(), err)
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v, want 0700", di.Mode())
	}
	again, err := LoadFile(path)
	if err != nil || !again.Matches(k.Check()) {
		t.Fatalf("LoadFile of the created file: %v", err)
	}
	if _, err := CreateFile(path); err == nil {
		t.Error("CreateFile replaced an existing key file")
	}
	if again, _ := LoadFile(path); !again.Matches(k.Check()) {
		t.Error("the refused CreateFile changed the key")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the data dir holds %d entries, want only the key file: %v", len(entries), entries)
	}
}

// memChecks is a CheckStore in memory.
type memChecks struct {
	mu    sync.Mutex
	check []byte
	err   error
}

var errNotFound = fmt.Errorf("key check: %w", store.ErrNotFound)

func (m *memChecks) KeyCheck(context.Context) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	if m.check == nil {
		return nil, errNotFound
	}
	return m.check, nil
}

func (m *memChecks) InitKeyCheck(_ context.Context, check []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	if m.check == nil {
		m.check = bytes.Clone(check)
	}
	return m.check, nil
}

func TestSetup(t *testing.T) {
	ctx := context.Background()
	st := &memChecks{}
	dir := t.TempDir()

	k, path, created, err := Setup(ctx, st, "", dir)
	if err != nil || !created || path != filepath.Join(dir, FileName) {
		t.Fatalf("first start: %v created %v path %s", err, created, path)
	}
	if !k.Matches(st.check) {
		t.Fatal("the store's check value is not the new key's")
	}
	// The next start reads the same file.
	k2, _, created, err := Setup(ctx, st, "", dir)
	if err != nil || created || !k2.Matches(k.Check()) {
		t.Fatalf("second start: %v, created %v", err, created)
	}

	// A node with its own key (another data dir) on the same store is refused.
	other := t.TempDir()
	_, _, _, err = Setup(ctx, st, "", other)
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("a new data dir on a store with a key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(other, FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Error("a key file was created although the store has a key")
	}
	stranger := mustNew(t)
	strangerFile := writeKey(t, []byte(hex.EncodeToString(bytes.Repeat([]byte{1}, KeySize))), 0o600)
	_, _, _, err = Setup(ctx, st, strangerFile, "")
	if err == nil || !strings.Contains(err.Error(), "is not the key this store's secrets are sealed with") ||
		!strings.Contains(err.Error(), k.ID()) {
		t.Fatalf("another key: %v", err)
	}
	_ = stranger

	// The operator's file, given by flag, on the store the data dir's key made.
	_, _, _, err = Setup(ctx, st, path, "")
	if err != nil {
		t.Errorf("the same key by --secrets-key-file: %v", err)
	}
	// A flag naming a missing file is an error, not a new key.
	_, _, _, err = Setup(ctx, &memChecks{}, filepath.Join(dir, "nope"), "")
	if err == nil || !strings.Contains(err.Error(), "--secrets-key-file") {
		t.Errorf("missing --secrets-key-file: %v", err)
	}
	// A store that fails is not taken for an empty one.
	broken := &memChecks{err: errors.New("connection refused")}
	_, _, _, err = Setup(ctx, broken, "", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("failing store: %v", err)
	}
}

// TestSetupRace: two nodes that start together on one store, each with a new key of its own,
// end with one of them running and the other refused.
func TestSetupRace(t *testing.T) {
	st := &memChecks{}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		dir := t.TempDir()
		wg.Go(func() { _, _, _, errs[i] = Setup(context.Background(), st, "", dir) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		}
	}
	if ok != 1 {
		t.Errorf("%d nodes started, want exactly 1: %v", ok, errs)
	}
}
