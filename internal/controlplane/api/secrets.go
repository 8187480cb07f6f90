package api

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/keyring"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/policy"
)

// Secrets (DESIGN §2.7): a tenant's values that the gateway puts on intercepted requests in
// place of their placeholders. The value is write-only: it is sealed (Sealer) before it
// reaches the store, and no answer, error or log line of this file ever holds it. Every
// message below is built from names, domains and counts only.

// Sealer seals a secret's value for the store: the keyring.
type Sealer interface {
	Seal(value, ad []byte) ([]byte, error)
}

// secretNamePattern is what a secret may be called: it becomes part of its placeholder,
// which sandboxes put in environment variables, URLs and header values, so it keeps to
// letters, digits, '_' and '-' (vm_id's alphabet without '.', so that a placeholder never
// looks like a host name or a dotted token).
var secretNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)

// Limits of secrets.
const (
	// MaxSecretValueBytes bounds a value: it goes into a header, and servers refuse header
	// sections much over 8 to 16 KiB.
	MaxSecretValueBytes = 16 << 10
	// MaxSecretDomains bounds a secret's domains.
	MaxSecretDomains = 100
	// MaxSecretsPerTenant bounds a tenant's secrets (every gateway holds them all in memory).
	MaxSecretsPerTenant = 1000
)

// placeholderPrefix starts every placeholder, so that one is easy to recognise in a request,
// a log or a scan.
const placeholderPrefix = "egressd-secret-"

// placeholderEncoding is lower-case base32 (RFC 4648 alphabet) without padding: 15 random
// bytes are 24 characters, 120 bits.
var placeholderEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newPlaceholder is egressd-secret-<name>-<24 random base32 characters>.
func newPlaceholder(name string) string {
	b := make([]byte, 15)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux; nothing safe to do if it does
	}
	return placeholderPrefix + name + "-" + placeholderEncoding.EncodeToString(b)
}

func checkSecretName(name string) error {
	if !secretNamePattern.MatchString(name) {
		return badRequest("name", "name must be 1 to 63 letters, digits, '_' or '-', starting with a letter or digit")
	}
	return nil
}

// checkSecretValue refuses a value that cannot go into an HTTP header value as it is. Its
// messages never quote the value.
func checkSecretValue(v client.SecretValue) error {
	s := string(v)
	switch {
	case s == "":
		return badRequest("value", "value is required and may not be empty")
	case len(s) > MaxSecretValueBytes:
		return badRequest("value", "value has %d bytes; the limit is %d", len(s), MaxSecretValueBytes)
	case !utf8.ValidString(s):
		return badRequest("value", "value is not valid UTF-8")
	case strings.TrimSpace(s) != s:
		return badRequest("value", "value starts or ends with white space, which HTTP drops from header values (a line end from a file?); remove it")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return badRequest("value", "value holds a control character at byte %d; a header value may not (it could end the header and start another)", i)
		}
	}
	return nil
}

// normalizeSecretDomains checks and normalises domains as allowed_domains entries are,
// wildcards included, and sorts them without duplicates.
func normalizeSecretDomains(domains []string) ([]string, error) {
	if len(domains) == 0 {
		return nil, badRequest("domains", "domains is required: give at least one host the value may go to, such as \"api.example.com\" or \"*.example.com\"")
	}
	if len(domains) > MaxSecretDomains {
		return nil, badRequest("domains", "domains has %d entries; the limit is %d", len(domains), MaxSecretDomains)
	}
	out := make([]string, len(domains))
	for i, d := range domains {
		n, err := policy.NormalizePattern(d)
		if err != nil {
			return nil, badRequest(fmt.Sprintf("domains[%d]", i), "%v", err)
		}
		out[i] = n
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func (s *Server) sealSecret(tenant, name, placeholder string, v client.SecretValue) ([]byte, error) {
	if s.sealer == nil {
		return nil, errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "", "this egressd has no secrets key; secrets cannot be stored")
	}
	sealed, err := s.sealer.Seal([]byte(v), keyring.SecretAD(tenant, name, placeholder))
	if err != nil {
		return nil, fmt.Errorf("seal secret %q: %w", name, err)
	}
	return sealed, nil
}

func (s *Server) createSecret(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	mode, err := parseWait(r)
	if err != nil {
		return err
	}
	var req client.CreateSecretRequest
	if err := readJSON(w, r, &req, false); err != nil {
		return err
	}
	if err := checkSecretName(req.Name); err != nil {
		return err
	}
	if err := checkSecretValue(req.Value); err != nil {
		return err
	}
	domains, err := normalizeSecretDomains(req.Domains)
	if err != nil {
		return err
	}
	// A soft limit: two creations at once may both pass it. It bounds memory, not security.
	if list, err := s.store.ListSecrets(r.Context(), k.Tenant); err != nil {
		return err
	} else if len(list) >= MaxSecretsPerTenant {
		return errorf(http.StatusConflict, client.CodeConflict, "", "the tenant has %d secrets, the most it may have; delete one first", len(list))
	}
	placeholder := newPlaceholder(req.Name)
	sealed, err := s.sealSecret(k.Tenant, req.Name, placeholder, req.Value)
	if err != nil {
		return err
	}
	se, err := s.store.CreateSecret(r.Context(), store.Secret{
		Tenant: k.Tenant, Name: req.Name, Domains: domains, Placeholder: placeholder, Sealed: sealed,
	})
	if errors.Is(err, store.ErrConflict) {
		return errorf(http.StatusConflict, client.CodeConflict, "name", "secret %q exists already; PUT /v1/secrets/%s rotates its value", req.Name, req.Name)
	} else if err != nil {
		return err
	}
	out := secretOut(se)
	if out.Enforcement, err = s.enforced(r.Context(), mode, se.Revision); err != nil {
		return s.createdButNotEnforced(r.Context(), "secret", err, func(ctx context.Context) error {
			return s.store.DeleteSecret(ctx, k.Tenant, se.Name)
		})
	}
	w.Header().Set("Location", "/v1/secrets/"+url.PathEscape(se.Name))
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	list, err := s.store.ListSecrets(r.Context(), k.Tenant)
	if err != nil {
		return err
	}
	out := client.SecretList{Secrets: make([]client.Secret, 0, len(list))}
	for _, se := range list {
		out.Secrets = append(out.Secrets, *secretOut(se))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getSecret(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	name := r.PathValue("name")
	se, err := s.store.GetSecret(r.Context(), k.Tenant, name)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("secret", name)
	} else if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, secretOut(se))
	return nil
}

// updateSecret rotates a secret's value, replaces its domains, or both. The placeholder
// stays: sandboxes that hold it need no change.
func (s *Server) updateSecret(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	mode, err := parseWait(r)
	if err != nil {
		return err
	}
	var req client.UpdateSecretRequest
	if err := readJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.Value == nil && req.Domains == nil {
		return badRequest("", "give value (to rotate it), domains (to replace them) or both; the placeholder stays")
	}
	if req.Value != nil {
		if err := checkSecretValue(*req.Value); err != nil {
			return err
		}
	}
	var domains []string
	if req.Domains != nil {
		if domains, err = normalizeSecretDomains(req.Domains); err != nil {
			return err
		}
	}
	name := r.PathValue("name")
	se, err := s.store.UpdateSecret(r.Context(), k.Tenant, name, func(se store.Secret) (store.Secret, error) {
		if domains != nil {
			se.Domains = domains
		}
		if req.Value != nil {
			var err error
			if se.Sealed, err = s.sealSecret(se.Tenant, se.Name, se.Placeholder, *req.Value); err != nil {
				return se, err
			}
		}
		return se, nil
	})
	var ae *apiError
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound("secret", name)
	case errors.As(err, &ae):
		return ae
	case err != nil:
		return err
	}
	out := secretOut(se)
	if out.Enforcement, err = s.enforced(r.Context(), mode, se.Revision); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deleteSecret(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	mode, err := parseWait(r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := s.store.DeleteSecret(r.Context(), k.Tenant, name); errors.Is(err, store.ErrNotFound) {
		return notFound("secret", name)
	} else if err != nil {
		return err
	}
	return s.answerDeleted(w, r, mode)
}

func secretOut(se store.Secret) *client.Secret {
	domains := se.Domains
	if domains == nil {
		domains = []string{}
	}
	return &client.Secret{Name: se.Name, Domains: domains, Placeholder: se.Placeholder, CreatedAt: se.CreatedAt, UpdatedAt: se.UpdatedAt}
}

// CA is the interception CA as the API serves it: *certs.Authority.
type CA interface {
	CertPEM() []byte
}

// caPEM serves the interception CA's certificate: public, like every CA certificate, so it
// needs no key (DESIGN §3).
func (s *Server) caPEM(w http.ResponseWriter, r *http.Request) {
	if s.ca == nil {
		s.writeError(w, r, errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "", "this egressd has no interception CA"))
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("Content-Disposition", `inline; filename="egressd-ca.pem"`)
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(s.ca.CertPEM())
}
