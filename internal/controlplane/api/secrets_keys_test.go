package api_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"io/fs"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

// TestSecretValueNeverShown creates, rotates and deletes secrets (and sends bad requests that
// carry values), then looks for the values in every API answer of the run, egressd's log at
// debug level, the audit file, the events API and the store's files on disk: they are in
// none of them. Only the placeholder is ever shown.
func TestSecretValueNeverShown(t *testing.T) {
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	in := egressdtest.Start(t, "--audit-log", audit, "--log-level", "debug")
	c := newClient(t, in, in.AdminKey)
	values := []string{"sk-LEAKCHECK-first-9f8e7d6c", "sk-LEAKCHECK-rotated-1a2b3c4d", "sk-LEAKCHECK-other-5e6f7a8b"}
	var answers [][]byte
	do := func(method, path string, body any) response {
		t.Helper()
		r := c.do(method, path, body)
		answers = append(answers, r.raw)
		return r
	}

	do("POST", "/v1/secrets", map[string]any{"name": "leakcheck", "value": values[0], "domains": []string{"api.leak.test"}}).must(t, http.StatusCreated)
	do("GET", "/v1/secrets", nil).must(t, http.StatusOK)
	do("GET", "/v1/secrets/leakcheck", nil).must(t, http.StatusOK)
	do("PUT", "/v1/secrets/leakcheck", map[string]any{"value": values[1]}).must(t, http.StatusOK)
	do("PUT", "/v1/secrets/leakcheck?wait=fleet", map[string]any{"value": values[1], "domains": []string{"*.leak.test"}}).must(t, http.StatusOK)
	// Refusals whose bodies carry a value.
	do("POST", "/v1/secrets", map[string]any{"name": "leakcheck", "value": values[2], "domains": []string{"a.test"}}).mustError(t, http.StatusConflict, "conflict", "name")
	do("POST", "/v1/secrets", map[string]any{"name": "bad name", "value": values[2], "domains": []string{"a.test"}}).mustError(t, http.StatusBadRequest, "bad_request", "name")
	do("POST", "/v1/secrets", map[string]any{"name": "n", "value": values[2] + "\n", "domains": []string{"a.test"}}).mustError(t, http.StatusBadRequest, "bad_request", "value")
	do("POST", "/v1/secrets", map[string]any{"name": "n", "value": values[2], "domains": []string{"bad domain"}}).mustError(t, http.StatusBadRequest, "bad_request", "domains[0]")
	do("POST", "/v1/secrets", `{"name": "n", "valeu": "`+values[2]+`", "domains": ["a.test"]}`).mustError(t, http.StatusBadRequest, "bad_request", "valeu")
	do("POST", "/v1/secrets", `{"name": "n", "value": "`+values[2]+`", "domains": ["a.test"]`).mustError(t, http.StatusBadRequest, "bad_request", "")
	do("PUT", "/v1/secrets/missing", map[string]any{"value": values[2]}).mustError(t, http.StatusNotFound, "not_found", "")
	do("POST", "/v1/secrets", map[string]any{"name": "other", "value": values[2], "domains": []string{"b.test"}}).must(t, http.StatusCreated)
	do("DELETE", "/v1/secrets/leakcheck", nil).must(t, http.StatusNoContent)
	do("GET", "/v1/egress/events", nil).must(t, http.StatusOK)
	do("GET", "/v1/status", nil).must(t, http.StatusOK)
	metrics := newClient(t, in, "").raw("GET", "/metrics")
	answers = append(answers, metrics.raw)

	in.Stop() // the log and the audit file are complete, and the database checkpointed
	auditData, err := os.ReadFile(audit)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	places := map[string][]byte{"egressd's log": []byte(in.Log()), "the audit file": auditData}
	for i, a := range answers {
		places["API answer "+string(rune('A'+i))] = a
	}
	// Every file under it, the event ring's segments (events/) included.
	var files []string
	err = filepath.WalkDir(in.DataDir, func(f string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(in.DataDir, f)
		places["the data directory's "+rel] = data
		files = append(files, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no store files to look into")
	}
	for _, v := range values {
		for where, data := range places {
			if bytes.Contains(data, []byte(v)) {
				t.Errorf("a secret value is in %s", where)
			}
			// Nor its hex or base64 forms, in case something encodes it.
			if bytes.Contains(data, []byte(hex.EncodeToString([]byte(v)))) {
				t.Errorf("a secret value, in hex, is in %s", where)
			}
		}
	}
	if !bytes.Contains(answers[0], []byte("egressd-secret-leakcheck-")) {
		t.Errorf("the creation did not answer the placeholder: %s", answers[0])
	}
}

// TestSecretsKeyFile: without --secrets-key-file, egressd makes <data-dir>/secrets.key (0600)
// on first start and reads it on the next; a data directory whose store was sealed with one
// key refuses to start with another, or with its key file gone.
func TestSecretsKeyFile(t *testing.T) {
	in := egressdtest.Start(t, "--secrets-key-file=")
	keyPath := filepath.Join(in.DataDir, "secrets.key")
	fi, err := os.Stat(keyPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secrets.key: %v, mode %v; want a 0600 file", err, fi.Mode())
	}
	if !strings.Contains(in.Log(), "created the secrets key") {
		t.Errorf("the log does not say a key was made:\n%s", in.Log())
	}
	c := newClient(t, in, in.AdminKey)
	c.do("POST", "/v1/secrets", map[string]any{"name": "kept", "value": "v", "domains": []string{"a.test"}}).must(t, http.StatusCreated)
	ca := readCA(t, in)
	in.Restart()
	if again := readCA(t, in); !again.Equal(ca) {
		t.Error("the CA changed across a restart")
	}
	in.Stop()

	base := []string{"--api-listen", egressdtest.FreePort(t), "--proxy-listen", egressdtest.FreePort(t), "--data-dir", in.DataDir}
	other := filepath.Join(t.TempDir(), "other.key")
	os.WriteFile(other, []byte(strings.Repeat("ab", 32)+"\n"), 0o600)
	out, err := runEgressd(t, append(base, "--secrets-key-file", other)...)
	if err == nil || !strings.Contains(out, "is not the key this store's secrets are sealed with") {
		t.Errorf("another key: %v\n%s", err, out)
	}
	open := filepath.Join(t.TempDir(), "open.key")
	os.WriteFile(open, []byte(strings.Repeat("ab", 32)+"\n"), 0o644)
	os.Chmod(open, 0o644)
	out, err = runEgressd(t, append(base, "--secrets-key-file", open)...)
	if err == nil || !strings.Contains(out, "chmod 600") {
		t.Errorf("a readable key file: %v\n%s", err, out)
	}
	if err := os.Rename(keyPath, keyPath+".moved"); err != nil {
		t.Fatal(err)
	}
	out, err = runEgressd(t, append(base, "--secrets-key-file=")...)
	if err == nil || !strings.Contains(out, "does not exist") {
		t.Errorf("the key file gone: %v\n%s", err, out)
	}
	if _, err := os.Stat(keyPath); !os.IsNotExist(err) {
		t.Error("a new key file was made over a store sealed with another")
	}
}

// TestFleetSharesTheSecretsKey: nodes on one PostgreSQL store serve one CA and read each
// other's secrets when they share the key file; a node with another key is refused at start.
func TestFleetSharesTheSecretsKey(t *testing.T) {
	db := pgtest.NewDatabase(t)
	a := egressdtest.Start(t, "--store", db, "--node-id", "a")
	ca := newClient(t, a, a.AdminKey)
	ca.do("POST", "/v1/secrets", map[string]any{"name": "shared", "value": "v", "domains": []string{"a.test"}}).must(t, http.StatusCreated)

	b := egressdtest.Start(t, "--store", db, "--node-id", "b", "--role", "api")
	if got := newClient(t, b, a.AdminKey).do("GET", "/v1/secrets/shared", nil).must(t, http.StatusOK); got["name"] != "shared" {
		t.Errorf("node b: %v", got)
	}
	if !readCA(t, a).Equal(readCA(t, b)) {
		t.Error("two nodes of one store serve two CAs")
	}

	own := filepath.Join(t.TempDir(), "own.key")
	os.WriteFile(own, []byte(strings.Repeat("cd", 32)+"\n"), 0o600)
	out, err := runEgressd(t, "--store", db, "--node-id", "c", "--api-listen", egressdtest.FreePort(t),
		"--proxy-listen", egressdtest.FreePort(t), "--data-dir", t.TempDir(), "--secrets-key-file", own)
	if err == nil || !strings.Contains(out, "every egressd on one store needs the same key file") {
		t.Errorf("a node with its own key: %v\n%s", err, out)
	}
	out, err = runEgressd(t, "--store", db, "--node-id", "d", "--api-listen", egressdtest.FreePort(t),
		"--proxy-listen", egressdtest.FreePort(t), "--data-dir", t.TempDir())
	if err == nil || !strings.Contains(out, "secrets.key does not exist") {
		t.Errorf("a node without a key file: %v\n%s", err, out)
	}
}

// TestOperatorCA: --ca-cert-file and --ca-key-file serve the operator's CA; a key others may
// read, or one that is not the certificate's, is refused at start.
func TestOperatorCA(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "Example Corp egress CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)

	in := egressdtest.Start(t, "--ca-cert-file", certFile, "--ca-key-file", keyFile)
	if got := readCA(t, in); got.Subject.CommonName != "Example Corp egress CA" {
		t.Errorf("served %q", got.Subject.CommonName)
	}
	in.Stop()

	os.Chmod(keyFile, 0o640)
	out, err := runEgressd(t, "--api-listen", egressdtest.FreePort(t), "--proxy-listen", egressdtest.FreePort(t),
		"--data-dir", t.TempDir(), "--ca-cert-file", certFile, "--ca-key-file", keyFile)
	if err == nil || !strings.Contains(out, "--ca-key-file") || !strings.Contains(out, "chmod 600") {
		t.Errorf("a group-readable CA key: %v\n%s", err, out)
	}
	os.Chmod(keyFile, 0o600)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherDER, _ := x509.MarshalPKCS8PrivateKey(otherKey)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: otherDER}), 0o600)
	out, err = runEgressd(t, "--api-listen", egressdtest.FreePort(t), "--proxy-listen", egressdtest.FreePort(t),
		"--data-dir", t.TempDir(), "--ca-cert-file", certFile, "--ca-key-file", keyFile)
	if err == nil || !strings.Contains(out, "does not match") {
		t.Errorf("a key that is not the certificate's: %v\n%s", err, out)
	}
	out, err = runEgressd(t, "--api-listen", egressdtest.FreePort(t), "--proxy-listen", egressdtest.FreePort(t),
		"--data-dir", t.TempDir(), "--ca-cert-file", certFile)
	if err == nil || !strings.Contains(out, "go together") {
		t.Errorf("a certificate without its key: %v\n%s", err, out)
	}
	out, err = runEgressd(t, "--api-listen", egressdtest.FreePort(t), "--proxy-listen", egressdtest.FreePort(t),
		"--data-dir", t.TempDir(), "--upstream-ca-file", keyFile)
	if err == nil || !strings.Contains(out, "--upstream-ca-file") {
		t.Errorf("an upstream CA file of a key: %v\n%s", err, out)
	}
}
