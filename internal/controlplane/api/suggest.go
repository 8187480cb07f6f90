package api

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"net/url"
	"slices"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/suggest"
	"github.com/egressd/egressd/internal/dataplane/events"
)

// suggestion answers GET /v1/egress/session/{id}/suggestion and /v1/egress/vm/{id}/suggestion
// (DESIGN §2.9): the smallest change to that layer's policy that would have allowed the
// denials and would-be denials it caused, from the events buffer. The one parameter is since
// (an RFC 3339 time or a seq, as for the events endpoint). The session or VM must be the
// caller's tenant's (404 otherwise), and only that tenant's records are read.
func (s *Server) suggestion(scope store.Scope) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
		if s.events.src == nil {
			return errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "", "events are not enabled, so there is nothing to suggest from")
		}
		f, err := parseSuggestionQuery(r)
		if err != nil {
			return err
		}
		ctx := r.Context()
		id := r.PathValue("id")
		f.Tenant = k.Tenant
		in := suggest.Input{Scope: string(scope), ID: id}
		var vmID string
		if scope == store.ScopeSession {
			f.SessionID = id
			if vmID, in.OtherLayerSet, err = s.sessionVMPolicySet(ctx, k.Tenant, id); err != nil {
				return err
			}
		} else {
			f.VMID = id
			if _, err := s.store.GetVM(ctx, k.Tenant, id); errors.Is(err, store.ErrNotFound) {
				return notFound("VM", id)
			} else if err != nil {
				return err
			}
		}
		rec, err := s.store.GetPolicy(ctx, k.Tenant, scope, id)
		switch {
		case err == nil:
			p := rec.Policy.WithDefaults()
			in.Policy, in.Revision = &p, rec.Revision
		case errors.Is(err, store.ErrNoPolicy):
		default:
			return policyLookupError(err, scope, id)
		}
		in.Records, in.Truncated = s.denials(f)
		in.VMID = vmID
		if vmID != "" {
			// Transparent mode records the VM only: its records without a session are this
			// session's too, as far as its policy denies them.
			vf := f
			vf.SessionID, vf.VMID = "", vmID
			all, truncated := s.denials(vf)
			for _, r := range all {
				if r.SessionID == "" {
					in.Shared = append(in.Shared, r)
				}
			}
			in.Truncated = in.Truncated || truncated
		}
		out, err := suggest.Suggest(s.env, in)
		if err != nil {
			return errorf(http.StatusConflict, client.CodeConflict, "", "%v", err)
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

// sessionVMPolicySet finds the tenant's session: its VM, and whether that has a policy.
func (s *Server) sessionVMPolicySet(ctx context.Context, tenant, id string) (string, bool, error) {
	se, err := s.store.GetSession(ctx, tenant, id)
	if errors.Is(err, store.ErrNotFound) {
		return "", false, notFound("session", id)
	} else if err != nil {
		return "", false, err
	}
	_, err = s.store.GetPolicy(ctx, tenant, store.ScopeVM, se.VMID)
	switch {
	case err == nil:
		return se.VMID, true, nil
	case errors.Is(err, store.ErrNoPolicy), errors.Is(err, store.ErrNotFound):
		return se.VMID, false, nil
	}
	return "", false, err
}

// denials reads the denials and the would-be denials (recorded as allowed) that f matches,
// each up to client.MaxSuggestionRecords, oldest first. A would-be denial is an allowed
// record, so the two are read apart: allowed traffic must not crowd the denials out.
func (s *Server) denials(f events.Filter) ([]events.Record, bool) {
	f.Limit = client.MaxSuggestionRecords
	f.Decision = events.Deny
	denied := s.events.src.Query(f)
	f.Decision = events.Allow
	allowed := s.events.src.Query(f)
	truncated := len(denied) >= f.Limit || len(allowed) >= f.Limit
	out := denied
	for _, r := range allowed {
		if r.WouldDeny {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b events.Record) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	return out, truncated
}

// parseSuggestionQuery reads since, the one parameter; any other is a 400 that names it.
func parseSuggestionQuery(r *http.Request) (events.Filter, error) {
	var f events.Filter
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return f, badRequest("", "malformed query string: %v", err)
	}
	for _, name := range slices.Sorted(maps.Keys(vals)) {
		if name != "since" {
			return f, badRequest(name, "unknown parameter %q; the one parameter is since", name)
		}
		if n := len(vals[name]); n > 1 {
			return f, badRequest(name, "%s is given %d times; give it once", name, n)
		}
	}
	if v := vals.Get("since"); v != "" {
		if f.Since, f.AfterSeq, err = parseSince(v); err != nil {
			return f, err
		}
	}
	return f, nil
}
