package client

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Error is an answer of the API other than 2xx. Status is the HTTP status; Code, Message and
// Field come from the API's error body (ErrorDetail). Code is one of the Code constants, and
// is empty when the answer did not come from egressd itself (a reverse proxy's error page, say):
// Message then holds the start of that body, or the status text.
//
// Inspect it with errors.As, or with the helpers IsNotFound, IsPolicyNotSet, IsUnauthorized,
// IsForbidden, IsConflict and ErrorCode.
type Error struct {
	Status  int
	Code    string
	Message string
	Field   string
}

// Error reads as one line a person can act on, blamed field first and status last:
//
//	allowed_cidrs[1]: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8? (400 invalid_policy)
func (e *Error) Error() string {
	var b strings.Builder
	msg := e.Message
	if msg == "" {
		msg = strings.ToLower(http.StatusText(e.Status))
	}
	// Some messages name their field already ("allowed_domains must be a JSON slice"); do not
	// say it twice.
	if e.Field != "" && !strings.HasPrefix(msg, e.Field+" ") && !strings.HasPrefix(msg, e.Field+":") {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(msg)
	b.WriteString(" (")
	b.WriteString(strconv.Itoa(e.Status))
	if e.Code != "" {
		b.WriteString(" ")
		b.WriteString(e.Code)
	}
	b.WriteString(")")
	return b.String()
}

// readError builds the *Error for a non-2xx answer. It accepts the API's error shape and, for
// answers that are not egressd's own, the shapes a health endpoint or a reverse proxy uses,
// falling back to a short excerpt of a text body.
func readError(resp *http.Response) *Error {
	e := &Error{Status: resp.StatusCode}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))

	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// The default Client does not follow redirects; egressd never sends one, so this is
		// something in front of it, or a base URL that needs https.
		e.Message = "unexpected redirect"
		if loc := resp.Header.Get("Location"); loc != "" {
			e.Message += " to " + loc + "; check the base URL"
		}
		return e
	}

	if isJSON(resp.Header.Get("Content-Type")) {
		var body struct {
			Error  json.RawMessage `json:"error"`
			Status string          `json:"status"` // /readyz: {"status": "unavailable", "reason": ...}
			Reason string          `json:"reason"`
		}
		if json.Unmarshal(data, &body) == nil {
			var detail ErrorDetail
			var text string
			switch {
			case json.Unmarshal(body.Error, &detail) == nil && (detail.Code != "" || detail.Message != ""):
				e.Code, e.Message, e.Field = detail.Code, detail.Message, detail.Field
				return e
			case json.Unmarshal(body.Error, &text) == nil && text != "":
				e.Message = text
				return e
			case body.Reason != "":
				e.Message = body.Reason
				return e
			case body.Status != "":
				e.Message = body.Status
				return e
			}
		}
	}
	e.Message = excerpt(data)
	return e
}

// excerpt returns the first line of a text body, trimmed to a length that fits an error
// message, or "" when the body is empty or not text.
func excerpt(data []byte) string {
	const max = 200
	if !utf8.Valid(data) {
		return ""
	}
	s := strings.TrimSpace(string(data))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) && r != '\t' }) >= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max]) + "…"
	}
	return s
}

// asError returns err's *Error, if it has one.
func asError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// ErrorCode returns the API error code of err (one of the Code constants), or "" when err is
// not an API error or the answer carried no code.
func ErrorCode(err error) string {
	if e, ok := asError(err); ok {
		return e.Code
	}
	return ""
}

// IsNotFound reports whether err is a 404: the VM, session, key or policy does not exist, or
// belongs to another tenant (the API does not tell the two apart). It includes a policy that is
// not set; IsPolicyNotSet tells that case apart.
func IsNotFound(err error) bool {
	e, ok := asError(err)
	return ok && e.Status == http.StatusNotFound
}

// IsPolicyNotSet reports whether err says that the session or VM exists but has no policy of
// the asked scope (GET on /v1/egress/...).
func IsPolicyNotSet(err error) bool { return ErrorCode(err) == CodeNotSet }

// IsUnauthorized reports whether err is a 401: no API key, or one egressd does not know.
func IsUnauthorized(err error) bool {
	e, ok := asError(err)
	return ok && e.Status == http.StatusUnauthorized
}

// IsForbidden reports whether err is a 403: an admin-only endpoint called with a tenant key.
func IsForbidden(err error) bool {
	e, ok := asError(err)
	return ok && e.Status == http.StatusForbidden
}

// IsConflict reports whether err is a 409: the ID asked for is taken.
func IsConflict(err error) bool {
	e, ok := asError(err)
	return ok && e.Status == http.StatusConflict
}
