package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store"
)

func (s *Server) createSession(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	mode, err := parseWait(r)
	if err != nil {
		return err
	}
	var req client.CreateSessionRequest
	if err := readJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.VMID == "" {
		return badRequest("vm_id", "vm_id is required: the VM this session runs on (POST /v1/vms creates one)")
	}
	token := randomToken(24)
	se, err := s.store.CreateSession(r.Context(), store.Session{
		Tenant: k.Tenant, ID: randomID("ses_"), VMID: req.VMID, TokenHash: HashSecret(token),
	})
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, client.CodeNotFound, "vm_id", "VM %q not found", req.VMID)
	} else if err != nil {
		return err
	}
	out := sessionOut(se)
	if out.Enforcement, err = s.enforced(r.Context(), mode, se.Revision); err != nil {
		return s.createdButNotEnforced(r.Context(), "session", err, func(ctx context.Context) error {
			return s.store.DeleteSession(ctx, k.Tenant, se.ID)
		})
	}
	out.ProxyURL = s.proxyURL(se.ID, token)
	out.SOCKSURL = s.socksURL(se.ID, token)
	w.Header().Set("Location", "/v1/sessions/"+url.PathEscape(se.ID))
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// proxyURL is the explicit proxy's address with the session's credentials in it, the form
// that HTTP_PROXY and HTTPS_PROXY take.
func (s *Server) proxyURL(sessionID, token string) string {
	if s.proxyAddr == "" {
		return ""
	}
	return (&url.URL{Scheme: "http", User: url.UserPassword(sessionID, token), Host: s.proxyAddr}).String()
}

// socksURL is the SOCKS5 listener's address with the session's credentials in it
// (socks5h: the gateway resolves names), or "" when the listener is off.
func (s *Server) socksURL(sessionID, token string) string {
	if s.socksAddr == "" {
		return ""
	}
	return (&url.URL{Scheme: "socks5h", User: url.UserPassword(sessionID, token), Host: s.socksAddr}).String()
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	id := r.PathValue("session_id")
	se, err := s.store.GetSession(r.Context(), k.Tenant, id)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("session", id)
	} else if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sessionOut(se))
	return nil
}

func (s *Server) listSessions(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	vmID := r.URL.Query().Get("vm_id")
	if vmID != "" {
		if _, err := s.store.GetVM(r.Context(), k.Tenant, vmID); errors.Is(err, store.ErrNotFound) {
			return notFound("VM", vmID)
		} else if err != nil {
			return err
		}
	}
	list, err := s.store.ListSessions(r.Context(), k.Tenant, vmID)
	if err != nil {
		return err
	}
	out := client.SessionList{Sessions: make([]client.Session, 0, len(list))}
	for _, se := range list {
		out.Sessions = append(out.Sessions, sessionOut(se))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deleteSession(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	mode, err := parseWait(r)
	if err != nil {
		return err
	}
	id := r.PathValue("session_id")
	if err := s.store.DeleteSession(r.Context(), k.Tenant, id); errors.Is(err, store.ErrNotFound) {
		return notFound("session", id)
	} else if err != nil {
		return err
	}
	return s.answerDeleted(w, r, mode)
}

func sessionOut(se store.Session) client.Session {
	return client.Session{SessionID: se.ID, VMID: se.VMID, CreatedAt: se.CreatedAt}
}
