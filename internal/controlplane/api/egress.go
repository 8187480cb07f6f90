package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/policy"
)

func (s *Server) putPolicy(scope store.Scope) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
		mode, err := parseWait(r)
		if err != nil {
			return err
		}
		body, err := readBody(w, r)
		if err != nil {
			return err
		}
		p, warnings, err := s.decodePolicy(body)
		if err != nil {
			return err
		}
		id := r.PathValue("id")
		rec, err := s.store.PutPolicy(r.Context(), store.PolicyRecord{Tenant: k.Tenant, Scope: scope, ID: id, Policy: p})
		if errors.Is(err, store.ErrNotFound) {
			return notFound(string(scope), id)
		} else if err != nil {
			return err
		}
		out := policyOut(rec, warnings)
		if out.Enforcement, err = s.enforced(r.Context(), mode, rec.Revision); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

func (s *Server) getPolicy(scope store.Scope) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
		id := r.PathValue("id")
		rec, err := s.store.GetPolicy(r.Context(), k.Tenant, scope, id)
		if err != nil {
			return policyLookupError(err, scope, id)
		}
		// Warnings are recomputed so that a reader sees them too, not only the writer.
		_, warnings, _ := s.env.Normalize(rec.Policy)
		writeJSON(w, http.StatusOK, policyOut(rec, warnings))
		return nil
	}
}

func (s *Server) deletePolicy(scope store.Scope) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
		mode, err := parseWait(r)
		if err != nil {
			return err
		}
		id := r.PathValue("id")
		if err := s.store.DeletePolicy(r.Context(), k.Tenant, scope, id); err != nil {
			return policyLookupError(err, scope, id)
		}
		return s.answerDeleted(w, r, mode)
	}
}

func policyLookupError(err error, scope store.Scope, id string) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound(string(scope), id)
	case errors.Is(err, store.ErrNoPolicy):
		return errorf(http.StatusNotFound, client.CodeNotSet, "", "%s %q has no egress policy set", scope, id)
	}
	return err
}

func policyOut(rec store.PolicyRecord, warnings []string) *client.Policy {
	return &client.Policy{
		// A policy stored before a field existed (allowed_tcp, http_rules) lacks it: it is
		// answered with the field's default, an empty list, never null.
		Policy:    rec.Policy.WithDefaults(),
		Scope:     string(rec.Scope),
		ID:        rec.ID,
		Revision:  rec.Revision,
		UpdatedAt: rec.UpdatedAt,
		Warnings:  warnings,
	}
}

// layers loads the policies that are set for a session: its own and its VM's (none: the
// operator's default applies). The session must be the tenant's.
func (s *Server) layers(ctx context.Context, tenant, sessionID string) (store.Session, []policy.NamedPolicy, error) {
	se, err := s.store.GetSession(ctx, tenant, sessionID)
	if errors.Is(err, store.ErrNotFound) {
		return se, nil, notFound("session", sessionID)
	} else if err != nil {
		return se, nil, err
	}
	layers, err := store.LoadLayers(ctx, s.store, tenant, store.SessionLayers(se)...)
	return se, layers, err
}

func (s *Server) effective(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	se, layers, err := s.layers(r.Context(), k.Tenant, r.PathValue("id"))
	if err != nil {
		return err
	}
	for i := range layers {
		// A policy stored before a list field existed has it nil: explained as empty, not null.
		layers[i].Policy = layers[i].Policy.WithDefaults()
	}
	writeJSON(w, http.StatusOK, client.Effective{SessionID: se.ID, VMID: se.VMID, Explanation: s.env.Explain(layers...)})
	return nil
}

func (s *Server) packageManagers(w http.ResponseWriter, r *http.Request, _ store.APIKey) error {
	writeJSON(w, http.StatusOK, client.PackageManagers{Managers: s.env.Preset().Managers})
	return nil
}
