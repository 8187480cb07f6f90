package api

import (
	"errors"
	"net/http"
	"regexp"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store"
)

// tenantPattern keeps tenant names printable and short; they appear in logs and metrics.
var tenantPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// The key endpoints take ?wait like every write, although every node reads keys from the
// store on each request, so that a key write is in force everywhere once it is durable:
// wait=fleet has nothing more to wait for, and any other value is refused as elsewhere.

func (s *Server) createKey(w http.ResponseWriter, r *http.Request, _ store.APIKey) error {
	if _, err := parseWait(r); err != nil {
		return err
	}
	var req client.CreateAPIKeyRequest
	if err := readJSON(w, r, &req, false); err != nil {
		return err
	}
	if !tenantPattern.MatchString(req.Tenant) {
		return badRequest("tenant", "tenant must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	secret := keyPrefix + randomToken(32)
	k := store.APIKey{ID: randomID("key_"), Tenant: req.Tenant, Admin: req.Admin, Hash: HashSecret(secret), CreatedAt: time.Now().UTC()}
	if err := s.store.CreateAPIKey(r.Context(), k); err != nil {
		return err
	}
	out := keyOut(k)
	out.Key = secret
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, _ store.APIKey) error {
	keys, err := s.store.ListAPIKeys(r.Context())
	if err != nil {
		return err
	}
	out := client.APIKeyList{Keys: make([]client.APIKey, 0, len(keys))}
	for _, k := range keys {
		out.Keys = append(out.Keys, keyOut(k))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deleteKey(w http.ResponseWriter, r *http.Request, self store.APIKey) error {
	if _, err := parseWait(r); err != nil {
		return err
	}
	id := r.PathValue("id")
	if id == self.ID {
		return errorf(http.StatusConflict, client.CodeConflict, "", "refusing to delete the key this request is made with; use another admin key")
	}
	if err := s.store.DeleteAPIKey(r.Context(), id); errors.Is(err, store.ErrNotFound) {
		return notFound("API key", id)
	} else if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func keyOut(k store.APIKey) client.APIKey {
	return client.APIKey{ID: k.ID, Tenant: k.Tenant, Admin: k.Admin, CreatedAt: k.CreatedAt}
}
