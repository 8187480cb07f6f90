package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// caEnvVars are the variables through which common clients find the roots they trust:
// OpenSSL and Go (SSL_CERT_FILE), Python requests and pip (REQUESTS_CA_BUNDLE), Node
// (NODE_EXTRA_CA_CERTS), curl (CURL_CA_BUNDLE) and git (GIT_SSL_CAINFO). egressctl exec points
// them all at one bundle: the system's roots plus egressd's interception CA (DESIGN §2.7).
var caEnvVars = []string{"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"}

// systemBundles are where systems keep their roots as one PEM file, Debian's first (the
// list Go's crypto/x509 reads on Linux).
var systemBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Gentoo, Alpine
	"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL 6
	"/etc/ssl/ca-bundle.pem",                            // openSUSE
	"/etc/pki/tls/cacert.pem",                           // OpenELEC
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
	"/etc/ssl/cert.pem",                                 // Alpine, macOS, the BSDs
}

// writeCABundle writes the first readable file of candidates (the system's roots) followed
// by caPEM to a new file, readable by all (it holds only public certificates, and the
// command may drop privileges), and returns its path and which system bundle it used ("" for
// none: the bundle then holds egressd's CA alone). The caller removes the file.
func writeCABundle(caPEM []byte, candidates []string) (path, system string, err error) {
	var b bytes.Buffer
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if data, err := os.ReadFile(c); err == nil && bytes.Contains(data, []byte("-----BEGIN CERTIFICATE-----")) {
			b.Write(data)
			if !bytes.HasSuffix(data, []byte("\n")) {
				b.WriteByte('\n')
			}
			system = c
			break
		}
	}
	b.WriteString("# egressd's interception CA (GET /v1/ca.pem)\n")
	b.Write(caPEM)
	f, err := os.CreateTemp("", "egressctl-ca-*.pem")
	if err != nil {
		return "", "", fmt.Errorf("the CA bundle: %w", err)
	}
	_, werr := f.Write(b.Bytes())
	if err := errors.Join(werr, f.Chmod(0o644), f.Close()); err != nil {
		os.Remove(f.Name())
		return "", "", fmt.Errorf("the CA bundle: %w", err)
	}
	return f.Name(), system, nil
}

// withCAEnv is environ with every variable of caEnvVars set to bundle, whatever it was.
func withCAEnv(environ []string, bundle string) []string {
	out := make([]string, 0, len(environ)+len(caEnvVars))
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(caEnvVars, name) {
			out = append(out, kv)
		}
	}
	for _, v := range caEnvVars {
		out = append(out, v+"="+bundle)
	}
	return out
}
