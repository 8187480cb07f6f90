package api

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/policy"
)

// Grants (DESIGN §2.8): entries added to a session's or VM's layer until they expire. A
// write is answered once enforced, as a policy write is; expiry is enforced by the gateway's
// view on its own clock, with no write.

// maxGrantNote bounds a grant's note: a line for people, not a document.
const maxGrantNote = 1024

func (s *Server) createGrant(scope store.Scope) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
		mode, err := parseWait(r)
		if err != nil {
			return err
		}
		var req client.GrantRequest
		if err := readJSON(w, r, &req, false); err != nil {
			return err
		}
		if req.TTLSeconds < 1 || req.TTLSeconds > int(store.MaxGrantTTL/time.Second) {
			return badRequest("ttl_seconds", "ttl_seconds is %d: give how long the grant lasts, from 1 to %d seconds (24 hours)",
				req.TTLSeconds, int(store.MaxGrantTTL/time.Second))
		}
		if len(req.Note) > maxGrantNote {
			return badRequest("note", "the note has %d bytes; the limit is %d", len(req.Note), maxGrantNote)
		}
		if strings.ContainsFunc(req.Note, unicode.IsControl) {
			return badRequest("note", "the note has a control character: write one line of text")
		}
		g, err := policy.NormalizeGrant(policy.Grant{Domains: req.Domains, TCP: req.TCP, CIDRs: req.CIDRs})
		if err != nil {
			var fe *policy.FieldError
			if errors.As(err, &fe) {
				return badRequest(fe.Field, "%s", fe.Message)
			}
			return badRequest("", "%v", err)
		}
		id := r.PathValue("id")
		warnings, err := s.grantWarnings(r, k.Tenant, scope, id, g)
		if err != nil {
			return err
		}
		stored, err := s.store.CreateGrant(r.Context(), store.Grant{
			Tenant: k.Tenant, ID: newGrantID(), Scope: scope, ObjectID: id,
			Domains: g.Domains, TCP: g.TCP, CIDRs: g.CIDRs, Note: req.Note,
		}, time.Duration(req.TTLSeconds)*time.Second)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return notFound(string(scope), id)
		case errors.Is(err, store.ErrTooMany):
			return errorf(http.StatusConflict, client.CodeConflict, "", "%s %q has %d active grants, the most it may have: revoke one or let it expire",
				scope, id, store.MaxGrantsPerObject)
		case err != nil:
			return err
		}
		out := grantOut(stored)
		out.Warnings = warnings
		if out.Enforcement, err = s.enforced(r.Context(), mode, stored.Revision); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

// grantWarnings says when a grant adds less than its author may expect: on a layer with no
// policy, or domains on a layer whose web flags are off or whose allowed_domains is empty
// (any host already). An object that is not there is left to CreateGrant to report.
func (s *Server) grantWarnings(r *http.Request, tenant string, scope store.Scope, id string, g policy.Grant) ([]string, error) {
	rec, err := s.store.GetPolicy(r.Context(), tenant, scope, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case errors.Is(err, store.ErrNoPolicy):
		return []string{fmt.Sprintf("%s %q has no egress policy, so its layer restricts nothing: this grant adds to the "+
			"operator's default policy only while no layer of the sandbox has a policy. If another layer's policy denies "+
			"the connection, grant on that layer (a grant never loosens another layer)", scope, id)}, nil
	case err != nil:
		return nil, err
	}
	p := rec.Policy
	var ws []string
	if len(g.Domains) > 0 {
		switch {
		case !p.AllowHTTP && !p.AllowHTTPS:
			ws = append(ws, "the layer's allow_https and allow_http are off: the domains are answered by DNS but not "+
				"reachable on ports 80 and 443 (a grant never turns a flag on); use tcp entries for other ports")
		case len(p.AllowedDomains) == 0:
			ws = append(ws, "the layer's allowed_domains is empty, which allows any host on its web ports already: the domains add nothing")
		}
	}
	return ws, nil
}

func (s *Server) listGrants(scope store.Scope) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
		id := r.PathValue("id")
		list, err := s.store.ListGrants(r.Context(), k.Tenant, scope, id, time.Now())
		if errors.Is(err, store.ErrNotFound) {
			return notFound(string(scope), id)
		} else if err != nil {
			return err
		}
		out := client.GrantList{Grants: make([]client.Grant, 0, len(list))}
		for _, g := range list {
			out.Grants = append(out.Grants, *grantOut(g))
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

func (s *Server) deleteGrant(scope store.Scope) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
		mode, err := parseWait(r)
		if err != nil {
			return err
		}
		id, gid := r.PathValue("id"), r.PathValue("grant_id")
		if err := s.store.DeleteGrant(r.Context(), k.Tenant, scope, id, gid); errors.Is(err, store.ErrNotFound) {
			return errorf(http.StatusNotFound, client.CodeNotFound, "", "%s %q has no grant %q", scope, id, gid)
		} else if err != nil {
			return err
		}
		return s.answerDeleted(w, r, mode)
	}
}

func grantOut(g store.Grant) *client.Grant {
	return &client.Grant{
		ID: g.ID, Scope: string(g.Scope), ScopeID: g.ObjectID,
		Domains: g.Domains, TCP: g.TCP, CIDRs: g.CIDRs, Note: g.Note,
		CreatedAt: g.CreatedAt, ExpiresAt: g.ExpiresAt,
	}
}

// newGrantID is "gr_" and 20 random base32 characters (100 bits): unique store-wide in
// practice, and not guessable, though a guess would only find another tenant's 404.
func newGrantID() string {
	b := make([]byte, 13)
	rand.Read(b) // never fails (crypto/rand)
	return "gr_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))[:20]
}
