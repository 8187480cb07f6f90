package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store"
)

// keyPrefix marks egressd's API keys, so that a leaked one is easy to recognise in a scan.
const keyPrefix = "egk_"

// HashSecret is how API keys and proxy tokens are stored: SHA-256 of the secret. The secrets
// are 256 random bits, so a fast hash is enough; there is nothing to brute-force.
func HashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// randomToken returns n random bytes as unpadded base64url.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux; nothing safe to do if it does
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// randomID returns a short random identifier with a prefix ("vm_", "ses_", "key_").
func randomID(prefix string) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return prefix + hex.EncodeToString(b)
}

// apiKeyFrom reads the key from X-API-Key or Authorization: Bearer.
func apiKeyFrom(r *http.Request) string {
	if k := r.Header.Get("X-API-Key"); k != "" {
		return strings.TrimSpace(k)
	}
	if scheme, k, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(k)
	}
	return ""
}

func (s *Server) authenticate(admin bool, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secret := apiKeyFrom(r)
		if secret == "" {
			s.writeError(w, r, errorf(http.StatusUnauthorized, client.CodeUnauthorized, "", "no API key; send it as X-API-Key or Authorization: Bearer"))
			return
		}
		key, err := s.store.APIKeyByHash(r.Context(), HashSecret(secret))
		if errors.Is(err, store.ErrNotFound) {
			s.writeError(w, r, errorf(http.StatusUnauthorized, client.CodeUnauthorized, "", "the API key is not valid"))
			return
		}
		if err != nil {
			s.writeError(w, r, errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "", "the store is not reachable: %v", err))
			return
		}
		if !s.limits.allow(key.ID) {
			w.Header().Set("Retry-After", "1")
			s.writeError(w, r, errorf(http.StatusTooManyRequests, client.CodeRateLimited, "", "too many requests for this API key; slow down and retry"))
			return
		}
		if admin && !key.Admin {
			s.writeError(w, r, errorf(http.StatusForbidden, client.CodeForbidden, "", "this endpoint needs an admin API key"))
			return
		}
		if err := h(w, r, key); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// limiter is a token bucket per API key.
type limiter struct {
	perSecond float64
	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
}

func newLimiter(perSecond float64) *limiter {
	return &limiter{perSecond: perSecond, buckets: make(map[string]*rate.Limiter)}
}

func (l *limiter) allow(keyID string) bool {
	if l.perSecond <= 0 {
		return true
	}
	l.mu.Lock()
	b, ok := l.buckets[keyID]
	if !ok {
		b = rate.NewLimiter(rate.Limit(l.perSecond), int(2*l.perSecond)+1)
		l.buckets[keyID] = b
	}
	l.mu.Unlock()
	return b.Allow()
}

// BootstrapAdminKey makes sure an operator can reach the API on a fresh install: when the
// store has no key at all it creates an admin key for tenant "default" and writes it to
// <dataDir>/admin.key with mode 0600. It returns the file's path when it wrote one.
func BootstrapAdminKey(ctx context.Context, st store.Store, dataDir string) (string, error) {
	keys, err := st.ListAPIKeys(ctx)
	if err != nil {
		return "", fmt.Errorf("bootstrap admin key: %w", err)
	}
	if len(keys) > 0 {
		return "", nil
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("bootstrap admin key: %w", err)
	}
	secret := keyPrefix + randomToken(32)
	path := filepath.Join(dataDir, "admin.key")
	// Write the file first: a key in the store that nobody can read would lock the operator out.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("bootstrap admin key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("bootstrap admin key: %w", err)
	}
	k := store.APIKey{ID: randomID("key_"), Tenant: "default", Admin: true, Hash: HashSecret(secret), CreatedAt: time.Now().UTC()}
	if err := st.CreateAPIKey(ctx, k); err != nil {
		return "", fmt.Errorf("bootstrap admin key: %w", err)
	}
	return path, nil
}
