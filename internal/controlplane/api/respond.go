package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/strictjson"
	"github.com/egressd/egressd/policy"
)

// MaxBodyBytes is the largest request body accepted (DESIGN §2.3).
const MaxBodyBytes = 1 << 20

// apiError is an error with its HTTP status and wire code: handlers return it, and
// writeError turns it (or anything else, as a 500) into the one error shape.
type apiError struct {
	status  int
	code    string
	message string
	field   string
}

func (e *apiError) Error() string { return e.message }

func errorf(status int, code, field, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, field: field, message: fmt.Sprintf(format, args...)}
}

func badRequest(field, format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, client.CodeBadRequest, field, format, args...)
}

func notFound(kind, id string) *apiError {
	return errorf(http.StatusNotFound, client.CodeNotFound, "", "%s %q not found", kind, id)
}

// policyError maps a policy validation error, naming the field under prefix (for a policy
// nested in another body, such as "egress_policy").
func policyError(err error, prefix string) *apiError {
	var fe *policy.FieldError
	if errors.As(err, &fe) {
		field := fe.Field
		if prefix != "" {
			field = strings.TrimSuffix(prefix+"."+field, ".")
		}
		return errorf(http.StatusBadRequest, client.CodeInvalidPolicy, field, "%s", fe.Message)
	}
	return errorf(http.StatusBadRequest, client.CodeInvalidPolicy, prefix, "%v", err)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	var ne *notEnforced
	if errors.As(err, &ne) {
		ae = ne.apiError()
	} else if !errors.As(err, &ae) {
		switch {
		case errors.Is(err, store.ErrNotFound):
			ae = errorf(http.StatusNotFound, client.CodeNotFound, "", "not found")
		case errors.Is(err, store.ErrConflict):
			ae = errorf(http.StatusConflict, client.CodeConflict, "", "already exists")
		default:
			s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			ae = errorf(http.StatusInternalServerError, client.CodeInternal, "", "internal error; see egressd's log")
		}
	}
	if ae.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="egressd"`)
	}
	writeJSON(w, ae.status, client.ErrorBody{Error: client.ErrorDetail{Code: ae.code, Message: ae.message, Field: ae.field}})
}

// readBody reads a JSON request body of at most MaxBodyBytes. A missing Content-Type is taken
// as JSON (curl --data-binary sends none with -H omitted only rarely); any other type is 415,
// so that curl's default form encoding gets a clear answer rather than a parse error.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return nil, errorf(http.StatusUnsupportedMediaType, client.CodeUnsupportedMedia, "",
				"Content-Type %q is not JSON; send Content-Type: application/json", ct)
		}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, errorf(http.StatusRequestEntityTooLarge, client.CodeTooLarge, "",
				"request body is over %d bytes", MaxBodyBytes)
		}
		return nil, badRequest("", "reading the body: %v", err)
	}
	return data, nil
}

// readJSON reads the request's body (the size limit and Content-Type checks of readBody)
// and decodes it strictly into v: the preamble of every handler that takes a JSON object.
func readJSON(w http.ResponseWriter, r *http.Request, v any, emptyOK bool) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	return decodeStrict(body, v, emptyOK)
}

// decodeStrict decodes a body that must be one JSON object into v, with the one strict
// decoder (DESIGN §2.1: exact field names, none twice, nothing after the object, no null);
// its errors are 400s that name the field. An empty body decodes as {} when emptyOK.
func decodeStrict(data []byte, v any, emptyOK bool) error {
	if emptyOK && len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	var se *strictjson.Error
	if err := strictjson.Decode(data, v); errors.As(err, &se) {
		return badRequest(se.Field, "%s", se.Message)
	} else if err != nil {
		return err
	}
	return nil
}

// asPolicyError gives the errors of decodeStrict about a policy (the whole body when prefix
// is "", else the field prefix and what is inside it) the code of an invalid policy.
func asPolicyError(err error, prefix string) error {
	var ae *apiError
	if errors.As(err, &ae) && ae.code == client.CodeBadRequest &&
		(prefix == "" || ae.field == prefix || strings.HasPrefix(ae.field, prefix+".")) {
		ae.code = client.CodeInvalidPolicy
	}
	return err
}

// decodePolicy reads a policy body strictly and normalises it; the warnings say what it
// does that its author may not expect on this gateway.
func (s *Server) decodePolicy(data []byte) (policy.Policy, []string, error) {
	var p policy.Policy
	if err := decodeStrict(data, &p, false); err != nil {
		return p, nil, asPolicyError(err, "")
	}
	p, warnings, err := s.env.Normalize(p)
	if err != nil {
		return p, nil, policyError(err, "")
	}
	return p, warnings, nil
}
